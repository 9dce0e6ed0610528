"""Everything a target's build needs, resolved up front, with a content hash per stage.

Hashes cover inputs only, so they are known before any work starts; each stage's hash folds in the
hash of the stage before it, and a stage whose hash has not changed reuses its earlier result.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from . import closure, dockerfile, series
from .hashing import digest, file_sha256
from .settings import Settings
from .targets import Backend, Builder, Matrix, Target

# Bumped when the pipeline changes how a stage turns its inputs into outputs.
STAGE_VERSIONS = {"source": 1, "patches": 1, "builder": 1, "build": 1, "package": 2}

# Templates of the files a package carries in share/ollama (env file, systemd unit, ...).
RUNTIME_TEMPLATES = Path(__file__).resolve().parent / "templates" / "runtime"

# Paths inside the build container.
SRC = "/src"


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
    patches: tuple[series.Patch, ...]
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


def base_image_name(settings: Settings, suite: str) -> str:
    return f"{settings.image_prefix}/debian:{suite}"


def make(matrix: Matrix, target: Target, settings: Settings,
         patch_series: Sequence[series.Patch] | None = None) -> Plan:
    """Resolve one target. The series is read from settings.patches_dir unless given."""
    builder = matrix.builders[target.builder]
    backends = tuple(matrix.backends[b] for b in target.backends)
    if patch_series is None:
        patch_series = series.load(settings.patches_dir, matrix.targets)
    patches = tuple(series.for_target(patch_series, target.name, series.upstream_version(target.source.tag)))
    base_image = builder.base_image or base_image_name(settings, builder.suite)
    rendered = dockerfile.render(settings.templates_dir, builder, base_image=base_image)
    upstream_version = target.source.tag.removeprefix("v")
    version = target.source.version_format.format(version=upstream_version, target=target.name)
    steps = tuple(build_steps(target, backends, builder, version))

    hashes: dict[str, str] = {}
    # The source stage is keyed by the commit, not the URL: a mirror gives the same tree.
    hashes["source"] = digest(["source", STAGE_VERSIONS["source"], target.source.commit])
    hashes["patches"] = digest(["patches", STAGE_VERSIONS["patches"], hashes["source"],
                                [(p.name, p.sha256) for p in patches]])
    hashes["builder"] = digest(["builder", STAGE_VERSIONS["builder"], rendered])
    # SOURCE_DATE_EPOCH reaches the build (and the archive's mtimes through it): it is an input too.
    hashes["build"] = digest(["build", STAGE_VERSIONS["build"], hashes["patches"], hashes["builder"],
                              steps, os.environ.get("SOURCE_DATE_EPOCH", "")])
    # Everything the manifest records about the target is part of the package's hash.
    policy = closure.POLICY_DIR / f"{builder.policy}.toml"
    hashes["package"] = digest(["package", STAGE_VERSIONS["package"], hashes["build"], target.package,
                                target.runtime, target.name, target.description, target.source, version,
                                builder.policy, file_sha256(policy) if builder.policy else "",
                                [(t.name, file_sha256(t)) for t in sorted(RUNTIME_TEMPLATES.glob("*.j2"))]])
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


def build_steps(target: Target, backends: tuple[Backend, ...], builder: Builder, version: str) -> list[Step]:
    """Ollama's own build interface: per backend configure / build / install, then `go build`.

    Each backend configures a fresh build/ folder, as upstream's Dockerfile does with one stage per
    backend; ccache keeps the repeated configure cheap.
    """
    steps: list[Step] = []
    # Every configure sees the target's GPU archs: Ollama's CMakeLists enables a GPU language whenever
    # its compiler is found, even for the CPU preset, and CUDA then defaults to "native" archs, which
    # fails without a GPU.
    gpu = {b.arch_variable: ";".join(target.gpu_archs) for b in backends if b.arch_variable}
    for backend in backends:
        defines = {"OLLAMA_RUNNER_DIR": backend.runner_dir}
        defines.update({var: "ccache" for var in backend.launchers})
        defines.update(gpu)
        defines.update(backend.cache_variables)
        if backend.gpu_code:
            defines.update(builder.gpu_cmake_variables)
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
