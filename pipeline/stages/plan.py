"""A target resolved up front: everything its stages need, known before any work starts.

    targets.toml ─▶ Target ─▶ Plan (builder, backends, patches, build steps, version, hashes)

The plan is the one input every stage shares. Its `hashes` come from the stage table
(pipeline.stages.STAGES): each stage's hash covers its own inputs and the hashes of the stages it takes
results from, so a stage whose hash has not changed reuses its earlier result. `Context` is what a
stage's run gets besides the results it needs: the plan, the settings, the log and a handle to say
"cached".
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping, Sequence

from pipeline.config import series
from pipeline.config.settings import Settings
from pipeline.config.targets import Backend, Builder, LlamaCpp, Matrix, Target, go_toolchain
from pipeline.errors import ConfigError
from pipeline import formats
from pipeline.infra import baseimage
from pipeline.infra.log import Log, StageResult
from pipeline.records import record


@record(positional=True)
class Step:
    """One command of the build, run in the builder container."""

    label: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


@record
class Plan:
    target: Target
    builder_name: str
    builder: Builder
    backends: tuple[Backend, ...]
    source_url: str
    upstream_version: str
    version: str
    patches: tuple[series.Patch, ...]
    # The Debian base image a Debian-flavor builder starts from, or the vendor image.
    base_image: str
    steps: tuple[Step, ...]
    # SOURCE_DATE_EPOCH when the user set one; else the upstream commit's time (known after source).
    source_date_epoch: int | None
    image_prefix: str
    # The target's own upstream tag in targets.toml: a build at another pinned tag (--ref) goes to its
    # own output folder, so versions never overwrite each other.
    default_tag: str = ""
    # The archs the runtimes of every target of this builder ask for (Matrix.serves).
    builder_serves: tuple[str, ...] = ()
    # Where the llama.cpp of versions that fetch it comes from, and its pins.
    llama_cpp: LlamaCpp = dataclasses.field(default_factory=LlamaCpp)
    hashes: Mapping[str, str] = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def tag(self) -> str:
        return self.target.source.tag

    @property
    def out(self) -> str:
        return out_folder(self.name, self.tag, self.default_tag)

    @property
    def archive_name(self) -> str:
        return formats.archive_name(self.upstream_version, self.name, self.target.package.format)


def out_folder(target: str, tag: str, default_tag: str) -> str:
    """The output folder's name under dist/: the target's, or TARGET@TAG at another upstream tag."""
    if not default_tag or tag == default_tag:
        return target
    return f"{target}@{tag}"


@record
class Context:
    """What a stage's run gets besides the results of the stages it needs."""

    name: str
    plan: Plan
    settings: Settings
    log: Log
    # The stage's line in the log (cached / done); None while a stage discards its outputs (--lean).
    stage: StageResult | None

    @property
    def hash(self) -> str:
        """This stage's hash."""
        return self.plan.hashes[self.name]


def resolve(matrix: Matrix, target: Target, settings: Settings,
            patch_series: Sequence[series.Patch] | None = None) -> Plan:
    """The plan of one target, without hashes (pipeline.stages.plan_for adds them).

    The series is read from settings.patches_dir unless given."""
    builder = matrix.builders[target.builder]
    backends = tuple(matrix.backends[b] for b in target.backends)
    if patch_series is None:
        patch_series = series.load(settings.patches_dir, matrix.targets)
    patches = tuple(series.for_target(patch_series, target.name, series.upstream_version(target.source.tag)))
    upstream_version = target.source.tag.removeprefix("v")
    version = target.source.version_format.format(version=upstream_version, target=target.name)
    return Plan(
        target=target,
        builder_name=target.builder,
        builder=builder,
        backends=backends,
        source_url=settings.source or target.source.url,
        upstream_version=upstream_version,
        version=version,
        patches=patches,
        base_image=builder.base_image or baseimage.name(settings.image_prefix, builder.suite),
        steps=tuple(build_steps(target, backends, builder, version)),
        source_date_epoch=settings.source_date_epoch,
        image_prefix=settings.image_prefix,
        default_tag=matrix.targets[target.name].source.tag if target.name in matrix.targets else "",
        llama_cpp=matrix.llama_cpp,
        builder_serves=matrix.serves(target.builder),
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
        if backend.exclude:
            names = [arg for pattern in backend.exclude for arg in ("-o", "-name", pattern)][1:]
            steps.append(Step(f"drop host libraries of {tag}", ("find", "dist", "(", *names, ")", "-print",
                                                                 "-delete")))
    ldflags = [*target.go.ldflags, f"-X={target.source.version_variable}={version}"]
    go_env = tuple(sorted({**target.go.env, **go_path(target, builder)}.items()))
    steps.append(Step("download Go modules", ("go", "mod", "download"), go_env))
    steps.append(Step("go build", ("go", "build", *target.go.flags, f"-ldflags={' '.join(ldflags)}",
                                   "-o", "dist/bin/ollama", "."), go_env))
    return steps



# The PATH every builder image ends with (docker/_runtime.Dockerfile.j2), after the builder's own path.
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def go_path(target: Target, builder: Builder) -> dict[str, str]:
    """PATH for the go steps when the target's upstream version needs a newer Go than the builder's
    default (go.toolchains): that toolchain's bin folder first, then the image's PATH. Empty otherwise,
    so that the image's PATH, and its default Go, stay."""
    needed = target.go.required(target.source.tag)
    if needed is None:
        return {}
    try:
        bindir = go_toolchain(builder, needed)
    except ConfigError as exc:
        raise ConfigError(f"target {target.name} at {target.source.tag} (builder {target.builder}): {exc}") from None
    return {"PATH": ":".join((bindir, *builder.path, *SYSTEM_PATH))}
