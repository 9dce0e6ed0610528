"""Upstream's build layouts: how a version of Ollama's tree is built, as the build steps of a target.

A layout covers a range of upstream versions and turns a target into the commands that build it in
the builder container (`Step`s, part of the build stage's hash). The layout of a version is the first
of LAYOUTS whose range admits it, so a layout for newer versions is one class put before the ones it
replaces there (as spack picks a builder per version range):

* ``in-tree`` (up to v0.24): ggml vendored under ml/backend/ggml/ggml; per backend a cmake configure /
  build / install from Ollama's presets (CMakePresets.json), then `go build`.
* ``llama-server`` (v0.30 on): the tree holds no ggml. llama/server is a CMake project of its own that
  builds llama.cpp's server and ggml from a llama.cpp tree (FetchContent) with Ollama's compat patch
  applied (llama/compat), presets in llama/server/CMakePresets.json: `cpu` first (llama-server, the ggml
  base and every CPU variant into lib/ollama/), then one GPU preset per GPU backend (its ggml backend
  only, into lib/ollama/<runner dir>/), install component `llama-server`; then `go build`, which compiles
  no ggml. The llama.cpp tree is the one the source stage supplied (tree/llama.cpp, pinned), copied into
  build/ before each configure and passed as FETCHCONTENT_SOURCE_DIR_LLAMA_CPP: CMake then fetches
  nothing and applies the compat patch to the copy (OLLAMA_LLAMA_CPP_SOURCE would skip it, and models
  published for Ollama such as gpt-oss would not load).
"""

from __future__ import annotations

from collections.abc import Mapping

from packaging.specifiers import SpecifierSet
from packaging.version import Version

from pipeline.config.targets import Backend, Builder, ReleaseBuild, Target, go_toolchain, tag_version
from pipeline.errors import ConfigError
from pipeline.formats import PackageLayout
from pipeline.infra.toolchain import SRC
from pipeline.records import record
from pipeline.upstream import llamacpp

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
    """One command of the build, run in the builder container (`host`: in the host builder's)."""

    label: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    host: bool = False


class Layout:
    """A way Ollama's tree builds, for the upstream versions `versions` admits (empty: every one)."""

    name = ""
    versions = ""

    def admits(self, version: Version) -> bool:
        return SpecifierSet(self.versions).contains(version, prereleases=True)

    def steps(self, target: Target, backends: tuple[Backend, ...], builder: Builder, version: str,
              release: ReleaseBuild | None = None, host: Builder | None = None) -> list[Step]:
        """The build's commands; `release`: what upstream's release build sets at this version
        (Matrix.release_build_at). With `host` (the builder's host builder), the commands of everything
        that is not a GPU backend (the CPU backends, `go build`) are marked to run there."""
        raise NotImplementedError


class InTree(Layout):
    """ggml in Ollama's tree: per backend configure / build / install, then `go build`.

    Each backend configures a fresh build/ folder, as upstream's Dockerfile does with one stage per
    backend; ccache keeps the repeated configure cheap. With a host builder, the GPU backends (those
    with a runner folder of their own) come first and run in the GPU builder; the CPU backends and `go
    build` then run in the host builder, on the host's Go.
    """

    name = "in-tree"
    versions = "<0.30"
    # ggml's core source: from v0.30 the tree keeps a stub of the folder, not this file.
    MARKER = "ml/backend/ggml/ggml/src/ggml.c"

    def steps(self, target: Target, backends: tuple[Backend, ...], builder: Builder, version: str,
              release: ReleaseBuild | None = None, host: Builder | None = None) -> list[Step]:
        release = release or ReleaseBuild()
        configure_env = tuple(sorted({**CONFIGURE_ENV, **release.cmake_env}.items()))
        steps: list[Step] = []
        # Every configure sees the target's GPU archs: Ollama's CMakeLists enables a GPU language whenever
        # its compiler is found, even for the CPU preset, and CUDA then defaults to "native" archs, which
        # fails without a GPU.
        gpu = {b.arch_variable: ";".join(target.gpu_archs) for b in backends if b.arch_variable}
        if host is not None:
            backends = (*(b for b in backends if b.runner_dir), *(b for b in backends if not b.runner_dir))
        for backend in backends:
            on_host = host is not None and not backend.runner_dir
            defines = {"OLLAMA_RUNNER_DIR": backend.runner_dir}
            defines.update(dict.fromkeys(backend.launchers, "ccache"))
            if not on_host:  # the host builder has no GPU compiler: its configure is the cpu target's
                defines.update(gpu)
            defines.update(backend.cache_variables)
            if backend.gpu_code:
                defines.update(builder.gpu_cmake_variables)
            defines.update(target.cmake_variables)
            tag = backend.preset
            steps.append(Step(f"clean {BUILD}/ for {tag}", ("find", BUILD, "-mindepth", "1", "-delete"),
                              host=on_host))
            steps.append(Step(f"configure {tag}", ("cmake", "--preset", backend.preset,
                                                    *(f"-D{k}={v}" for k, v in defines.items())),
                              configure_env, host=on_host))
            steps.append(Step(f"compile {tag}", ("cmake", "--build", "--preset", backend.preset),
                              host=on_host))
            steps.append(Step(f"install {tag}", ("cmake", "--install", BUILD, "--component",
                                                  backend.component, "--strip"), host=on_host))
            steps += exclude_steps(backend, tag, on_host)
        steps += go_steps(target, host or builder, version, release, on_host=host is not None)
        return steps


class LlamaServer(Layout):
    """llama/server from a supplied llama.cpp tree (v0.30 on): preset `cpu`, then each GPU backend's
    preset (Backend.server_preset), with the target's archs passed explicitly (the presets' own lists
    leave gfx906 out, and the `*_user_arch` presets carry none), then `go build`.

    Each backend configures into its own build/llama-server-<dir> (`-B`, whatever binaryDir the preset
    names) from a fresh copy of the llama.cpp tree, and installs into dist/ (`--prefix`), so a preset's
    folders never decide where the output lands. With a host builder, as in-tree: the GPU presets first
    in the GPU builder, then `cpu` and `go build` in the host builder.
    """

    name = "llama-server"
    versions = ">=0.30"
    PROJECT = "llama/server"
    COMPONENT = "llama-server"
    # The writable copy of the supplied llama.cpp the compat patch is applied to, inside build/.
    SOURCE_COPY = f"{BUILD}/llama.cpp"

    def steps(self, target: Target, backends: tuple[Backend, ...], builder: Builder, version: str,
              release: ReleaseBuild | None = None, host: Builder | None = None) -> list[Step]:
        release = release or ReleaseBuild()
        configure_env = tuple(sorted({**CONFIGURE_ENV, **release.cmake_env}.items()))
        steps: list[Step] = []
        missing = [b.preset for b in backends if not b.server_preset or not b.server_targets]
        if missing:
            raise ConfigError(f"target {target.name} at {target.source.tag}: the backend of preset "
                              f"{missing[0]!r} has no server_preset and server_targets (the llama/server "
                              "preset it builds with from v0.30, and the CMake targets it builds) in "
                              "[backends]")
        gpu = {b.arch_variable: ";".join(target.gpu_archs) for b in backends if b.arch_variable}
        if host is not None:
            backends = (*(b for b in backends if b.runner_dir), *(b for b in backends if not b.runner_dir))
        for backend in backends:
            on_host = host is not None and not backend.runner_dir
            folder = f"{BUILD}/llama-server-{backend.runner_dir or 'cpu'}"
            defines = {"OLLAMA_RUNNER_DIR": backend.runner_dir,
                       "FETCHCONTENT_SOURCE_DIR_LLAMA_CPP": f"{SRC}/{self.SOURCE_COPY}",
                       "FETCHCONTENT_FULLY_DISCONNECTED": "ON"}
            defines.update(dict.fromkeys(backend.launchers, "ccache"))
            if backend.gpu_code:
                defines.update(gpu)
                defines.update(builder.gpu_cmake_variables)
                # llama/server sets CMAKE_HIP_FLAGS to AMD clang's -parallel-jobs=4 whenever it is empty
                # (ollama_set_cache_default): a toolchain that clears it (Debian's clang) gets the Release
                # optimisation level instead, which every clang takes.
                if defines.get("CMAKE_HIP_FLAGS") == "":
                    defines["CMAKE_HIP_FLAGS"] = "-O3"
            defines.update(backend.cache_variables)
            defines.update(target.cmake_variables)
            tag = backend.server_preset
            steps.append(Step(f"clean {BUILD}/ for {tag}", ("find", BUILD, "-mindepth", "1", "-delete"),
                              host=on_host))
            steps.append(Step(f"copy {llamacpp.DIR} for {tag}", ("cp", "-a", llamacpp.DIR, self.SOURCE_COPY),
                              host=on_host))
            steps.append(Step(f"configure {tag}", ("cmake", "-S", self.PROJECT, "-B", folder, "--preset", tag,
                                                    *(f"-D{k}={v}" for k, v in defines.items())),
                              configure_env, host=on_host))
            steps.append(Step(f"compile {tag}", ("cmake", "--build", folder, "--target",
                                                  *backend.server_targets), host=on_host))
            steps.append(Step(f"install {tag}", ("cmake", "--install", folder, "--component", self.COMPONENT,
                                                  "--prefix", OUTPUT, "--strip"), host=on_host))
            steps += exclude_steps(backend, tag, on_host)
        steps += go_steps(target, host or builder, version, release, on_host=host is not None)
        return steps


def exclude_steps(backend: Backend, tag: str, on_host: bool) -> list[Step]:
    """Removing from the install output what the host provides (backend.exclude: the Vulkan loader)."""
    if not backend.exclude:
        return []
    names = [arg for pattern in backend.exclude for arg in ("-o", "-name", pattern)][1:]
    return [Step(f"drop host libraries of {tag}", ("find", OUTPUT, "(", *names, ")", "-print", "-delete"),
                 host=on_host)]


def go_steps(target: Target, builder: Builder, version: str, release: ReleaseBuild,
             on_host: bool = False) -> list[Step]:
    """`go mod download` and `go build` of bin/ollama, stamped with the version and built as upstream's
    release builds it (`release`), with the Go the version needs in `builder` (go_path); `on_host`: the
    steps run in the host builder."""
    ldflags = [*target.go.ldflags, f"-X={target.source.version_variable}={version}", *release.go_ldflags]
    go_env = tuple(sorted({**target.go.env, **release.go_env, **go_path(target, builder)}.items()))
    return [Step("download Go modules", ("go", "mod", "download"), go_env, host=on_host),
            Step("go build", ("go", "build", *target.go.flags, f"-ldflags={' '.join(ldflags)}",
                              "-o", f"{OUTPUT}/{PackageLayout.BIN}", "."), go_env, host=on_host)]


# Newest first: a version takes the first layout that admits it.
LAYOUTS: tuple[Layout, ...] = (LlamaServer(), InTree())


def for_tag(tag: str, ranges: Mapping[str, str] | None = None) -> Layout:
    """The layout an upstream tag builds with: the first of LAYOUTS whose range admits it. `ranges`
    ([upstream.layouts] of targets.toml: layout name -> versions) replaces the layouts' own ranges; a
    layout it leaves out builds no version (a miniature project with made-up version numbers, say)."""
    ranges = dict(ranges or {})
    known = {x.name for x in LAYOUTS}
    if unknown := sorted(set(ranges) - known):
        raise ConfigError(f"[upstream.layouts] names no build layout {unknown[0]!r}; layouts: "
                          f"{', '.join(sorted(known))}")
    version = tag_version(tag)
    for layout in LAYOUTS:
        spec = ranges.get(layout.name) if ranges else layout.versions
        if spec is not None and SpecifierSet(spec).contains(version, prereleases=True):
            return layout
    covered = ", ".join(f"{x.name} {ranges.get(x.name, '-') if ranges else x.versions or 'any'}"
                        for x in LAYOUTS)
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
