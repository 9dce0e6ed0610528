"""Everything a target's build needs, resolved up front, with a content hash per stage.

Hashes cover inputs only, so they are known before any work starts; each stage's hash folds in the
hash of the stage before it, and a stage whose hash has not changed reuses its earlier result.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from . import dockerfile
from .errors import ConfigError
from .settings import Settings
from .targets import Backend, Builder, Matrix, Target

# Bumped when the pipeline changes how a stage turns its inputs into outputs.
STAGE_VERSIONS = {"source": 1, "patches": 1, "builder": 1, "build": 1, "package": 1}

# Paths inside the build container.
SRC = "/src"


@dataclasses.dataclass(frozen=True, slots=True)
class PatchFile:
    name: str
    path: Path
    sha256: str


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One command of the build, run in the builder container."""

    label: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    target: Target
    builder_name: str
    builder: Builder
    backends: tuple[Backend, ...]
    source_url: str
    upstream_version: str
    version: str
    patches: tuple[PatchFile, ...]
    dockerfile: str
    base_image: str
    image_tag: str
    steps: tuple[Step, ...]
    hashes: dict[str, str]

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def archive_name(self) -> str:
        return f"ollama-{self.upstream_version}-{self.name}.{self.target.package.format}"


def digest(value: Any) -> str:
    """sha256 of a canonical JSON form."""
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(blob.encode()).hexdigest()


def _jsonable(value: Any):
    if dataclasses.is_dataclass(value):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "items"):
        return dict(value.items())
    raise TypeError(f"cannot hash {type(value).__name__}")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def base_image_name(settings: Settings, suite: str) -> str:
    return f"{settings.image_prefix}/debian:{suite}"


def make(matrix: Matrix, target: Target, settings: Settings) -> Plan:
    builder = matrix.builders[target.builder]
    backends = tuple(matrix.backends[b] for b in target.backends)
    patches = tuple(_patch_file(settings.patches_dir, name, target) for name in target.patches)
    base_image = base_image_name(settings, builder.suite)
    rendered = dockerfile.render(settings.templates_dir, builder, base_image=base_image)
    upstream_version = target.source.tag.removeprefix("v")
    version = target.source.version_format.format(version=upstream_version, target=target.name)
    steps = tuple(build_steps(target, backends, version))

    hashes: dict[str, str] = {}
    # The source stage is keyed by the commit, not the URL: a mirror gives the same tree.
    hashes["source"] = digest(["source", STAGE_VERSIONS["source"], target.source.commit])
    hashes["patches"] = digest(["patches", STAGE_VERSIONS["patches"], hashes["source"],
                                [(p.name, p.sha256) for p in patches]])
    hashes["builder"] = digest(["builder", STAGE_VERSIONS["builder"], rendered])
    hashes["build"] = digest(["build", STAGE_VERSIONS["build"], hashes["patches"], hashes["builder"],
                              steps])
    # Everything the manifest records about the target is part of the package's hash.
    hashes["package"] = digest(["package", STAGE_VERSIONS["package"], hashes["build"], target.package,
                                target.runtime, target.name, target.description, target.source, version])
    return Plan(
        target=target,
        builder_name=target.builder,
        builder=builder,
        backends=backends,
        source_url=settings.source or target.source.url,
        upstream_version=upstream_version,
        version=version,
        patches=patches,
        dockerfile=rendered,
        base_image=base_image,
        image_tag=f"{settings.image_prefix}/builder-{target.builder}:{hashes['builder'][:16]}",
        steps=steps,
        hashes=hashes,
    )


def build_steps(target: Target, backends: tuple[Backend, ...], version: str) -> list[Step]:
    """Ollama's own build interface: per backend configure / build / install, then `go build`.

    Each backend configures a fresh build/ folder, as upstream's Dockerfile does with one stage per
    backend; ccache keeps the repeated configure cheap.
    """
    steps: list[Step] = []
    for backend in backends:
        defines = {"OLLAMA_RUNNER_DIR": backend.runner_dir}
        defines.update({var: "ccache" for var in backend.launchers})
        if backend.arch_variable:
            defines[backend.arch_variable] = ";".join(target.gpu_archs)
        defines.update(backend.cache_variables)
        defines.update(target.cmake_variables)
        tag = backend.preset
        steps.append(Step(f"clean build/ for {tag}", ("find", "build", "-mindepth", "1", "-delete")))
        steps.append(Step(f"configure {tag}", ("cmake", "--preset", backend.preset,
                                                *(f"-D{k}={v}" for k, v in defines.items()))))
        steps.append(Step(f"compile {tag}", ("cmake", "--build", "--preset", backend.preset)))
        steps.append(Step(f"install {tag}", ("cmake", "--install", "build", "--component",
                                              backend.component, "--strip")))
    ldflags = [*target.go.ldflags, f"-X={target.source.version_variable}={version}"]
    go_env = tuple(sorted(target.go.env.items()))
    steps.append(Step("download Go modules", ("go", "mod", "download"), go_env))
    steps.append(Step("go build", ("go", "build", *target.go.flags, f"-ldflags={' '.join(ldflags)}",
                                   "-o", "dist/bin/ollama", "."), go_env))
    return steps


def _patch_file(patches_dir: Path, name: str, target: Target) -> PatchFile:
    path = patches_dir / name
    if not path.is_file():
        raise ConfigError(f"target {target.name}: patch {name!r} not found in {patches_dir}")
    return PatchFile(name=name, path=path, sha256=file_sha256(path))
