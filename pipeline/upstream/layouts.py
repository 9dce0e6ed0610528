"""Upstream's build layouts: how a version of Ollama's tree is built, as the build steps of a target.

A layout covers a range of upstream versions and turns a target into the commands that build it in
the builder container (`Step`s, part of the build stage's hash). The layout of a version is the first
of LAYOUTS whose range admits it, so a layout for newer versions is one class put before the ones it
replaces there (as spack picks a builder per version range):

* ``in-tree`` (every version up to now): ggml vendored under ml/backend/ggml/ggml; per backend a cmake
  configure / build / install from Ollama's presets, then `go build`.

From v0.30 the tree fetches llama.cpp at configure time and has other presets (`Default`, `MLX
Metal`): that layout is not written yet, so targets.toml caps the versions a target builds at `<0.30`.
"""

from __future__ import annotations

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from pipeline.config.targets import Backend, Builder, ReleaseBuild, Target, go_toolchain, tag_version
from pipeline.errors import ConfigError
from pipeline.formats import PackageLayout
from pipeline.records import record

# The folders of Ollama's tree the build writes: CMake's build folder and the install output
# (bin/ollama, lib/ollama/...), mounted writable over the read-only tree.
BUILD = "build"
OUTPUT = "dist"
# The PATH every builder image ends with (docker/_runtime.Dockerfile.j2), after the builder's own path.
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# Every backend is configured for Ninja, whose [N/M] step counter the progress display reads. Upstream's
# release Dockerfile does the same from v0.18.0 (ENV CMAKE_GENERATOR=Ninja); before, it used CMake's
# default Makefiles, which compile with the same flags.
CONFIGURE_ENV = {"CMAKE_GENERATOR": "Ninja"}


@record(positional=True)
class Step:
    """One command of the build, run in the builder container."""

    label: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


class Layout:
    """A way Ollama's tree builds, for the upstream versions `versions` admits (empty: every one)."""

    name = ""
    versions = ""

    def admits(self, version: Version) -> bool:
        return SpecifierSet(self.versions).contains(version, prereleases=True)

    def steps(self, target: Target, backends: tuple[Backend, ...], builder: Builder, version: str,
              release: ReleaseBuild | None = None) -> list[Step]:
        """The build's commands; `release`: what upstream's release build sets at this version
        (Matrix.release_build_at)."""
        raise NotImplementedError


class InTree(Layout):
    """ggml in Ollama's tree: per backend configure / build / install, then `go build`.

    Each backend configures a fresh build/ folder, as upstream's Dockerfile does with one stage per
    backend; ccache keeps the repeated configure cheap.
    """

    name = "in-tree"
    # ggml's core source: from v0.30 the tree keeps a stub of the folder, not this file.
    MARKER = "ml/backend/ggml/ggml/src/ggml.c"

    def steps(self, target: Target, backends: tuple[Backend, ...], builder: Builder, version: str,
              release: ReleaseBuild | None = None) -> list[Step]:
        release = release or ReleaseBuild()
        configure_env = tuple(sorted({**CONFIGURE_ENV, **release.cmake_env}.items()))
        steps: list[Step] = []
        # Every configure sees the target's GPU archs: Ollama's CMakeLists enables a GPU language whenever
        # its compiler is found, even for the CPU preset, and CUDA then defaults to "native" archs, which
        # fails without a GPU.
        gpu = {b.arch_variable: ";".join(target.gpu_archs) for b in backends if b.arch_variable}
        for backend in backends:
            defines = {"OLLAMA_RUNNER_DIR": backend.runner_dir}
            defines.update(dict.fromkeys(backend.launchers, "ccache"))
            defines.update(gpu)
            defines.update(backend.cache_variables)
            if backend.gpu_code:
                defines.update(builder.gpu_cmake_variables)
            defines.update(target.cmake_variables)
            tag = backend.preset
            steps.append(Step(f"clean {BUILD}/ for {tag}", ("find", BUILD, "-mindepth", "1", "-delete")))
            steps.append(Step(f"configure {tag}", ("cmake", "--preset", backend.preset,
                                                    *(f"-D{k}={v}" for k, v in defines.items())),
                              configure_env))
            steps.append(Step(f"compile {tag}", ("cmake", "--build", "--preset", backend.preset)))
            steps.append(Step(f"install {tag}", ("cmake", "--install", BUILD, "--component",
                                                  backend.component, "--strip")))
            if backend.exclude:
                names = [arg for pattern in backend.exclude for arg in ("-o", "-name", pattern)][1:]
                steps.append(Step(f"drop host libraries of {tag}", ("find", OUTPUT, "(", *names, ")",
                                                                     "-print", "-delete")))
        ldflags = [*target.go.ldflags, f"-X={target.source.version_variable}={version}", *release.go_ldflags]
        go_env = tuple(sorted({**target.go.env, **release.go_env, **go_path(target, builder)}.items()))
        steps.append(Step("download Go modules", ("go", "mod", "download"), go_env))
        steps.append(Step("go build", ("go", "build", *target.go.flags, f"-ldflags={' '.join(ldflags)}",
                                       "-o", f"{OUTPUT}/{PackageLayout.BIN}", "."), go_env))
        return steps


# Newest first: a version takes the first layout that admits it.
LAYOUTS: tuple[Layout, ...] = (InTree(),)


def for_tag(tag: str) -> Layout:
    """The layout an upstream tag builds with."""
    version = tag_version(tag)
    for layout in LAYOUTS:
        if layout.admits(version):
            return layout
    covered = ", ".join(f"{x.name} {x.versions or 'any'}" for x in LAYOUTS)
    raise ConfigError(f"no build layout covers upstream {tag} (layouts: {covered})")


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
        raise ConfigError(f"target {target.name} at {target.source.tag} (builder {target.builder}): "
                          f"{exc}") from None
    return {"PATH": ":".join((bindir, *builder.path, *SYSTEM_PATH))}
