"""targets.toml, read once into frozen typed objects.

The file has these kinds of table:

* ``[defaults]``: target settings every target inherits; a target's own tables are merged over them
  key by key (tables merge, everything else replaces).
* ``[builders.NAME]``: builder images (a template from docker/ and what it installs).
* ``[backends.NAME]``: the cmake presets of Ollama's build (CPU, ROCm 6, CUDA 11, ...).
* ``[targets.NAME]``: the matrix.
* ``[downloads.NAME]``: files builder images fetch (URL and sha256), each pinned once; a builder's
  ``downloads`` names them.
* ``[groups]``: named lists of targets, which patch headers name (``Targets: memory``) so that a new
  target joins a patch by joining a group here.
* ``[upstream]``: the upstream versions the project has pinned (``[upstream.pins]``, tag -> commit).
  Any target can be built at any pinned tag (``--ref TAG``); the tag must still point at its commit
  when the source is fetched, so a re-pointed tag is refused there. ``[upstream.llama_cpp]``: where
  the llama.cpp that upstream fetches from v0.30 comes from, and its pinned tags.

The schema is the dataclasses below: one place knows the keys, their types and their defaults. Unknown
keys are refused with a close match; every message names the file, the table and the key.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
import string
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from pipeline import formats
from pipeline.config import loader, names, series, values
from pipeline.config import policy as policies
from pipeline.config.values import checked
from pipeline.errors import ConfigError, SelectionError
from pipeline.records import record

SHA1_HEX = frozenset("0123456789abcdef")


@record
class Source:
    url: str = checked(values.URL)
    tag: str = checked(values.TAG)
    commit: str = checked(values.COMMIT)
    # Go variable stamped with -ldflags -X so that `ollama --version` names the build.
    version_variable: str = checked(values.GO_VARIABLE, default="github.com/ollama/ollama/version.Version")
    # What it is stamped with: {version} is the tag without its leading "v", {target} the target name.
    version_format: str = checked(values.VERSION_FORMAT, default="{version}+{target}")


@record
class AptSuite:
    """An extra Debian suite a builder may take some packages from (ROCm from unstable, say).

    The suite sits at apt priority 100, so nothing comes from it unless pinned: only the packages
    matching `pin` are raised to 500, where the newer version wins. (`apt-get -t SUITE` would raise
    every dependency too and drag in that suite's glibc.)
    """

    suite: str = checked(values.DEBIAN_SUITE)
    pin: tuple[str, ...] = checked(values.APT_PIN, default=())
    components: tuple[str, ...] = checked(values.DEBIAN_COMPONENT, default=("main",))
    # Unstable's Release file is short-lived; snapshots of it need this off.
    check_valid_until: bool = True


@record
class Download:
    """A file a builder image fetches: checksum fixed here, location overridable (PIPELINE_URL_<NAME>)."""

    name: str = checked(values.Kind("download name", "lower-case letters, digits and _", "cmake",
                                    values._word(r"[a-z0-9_]+", "a download name")))
    url: str = checked(values.DOWNLOAD_URL)
    sha256: str = checked(values.SHA256)
    dest: str = checked(values.ABS_DIR, default="/usr/local")
    strip_components: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.strip_components <= 16:
            raise ValueError(f"download {self.name!r}: strip_components must be 0 to 16, got "
                             f"{self.strip_components}")

    @property
    def build_arg(self) -> str:
        return f"{self.name.upper()}_URL"


@record
class Builder:
    template: str = checked(values.TEMPLATE)
    description: str = checked(values.TEXT, default="")
    # Vendor flavor: a registry image (tag, or name@sha256:digest) to build on. Empty: the Debian
    # flavor, whose base is made from `suite` with debootstrap when it cannot be had otherwise.
    base_image: str = checked(values.IMAGE_REF, default="")
    suite: str = checked(values.DEBIAN_SUITE, default="trixie")
    components: tuple[str, ...] = checked(values.DEBIAN_COMPONENT, default=("main",))
    packages: tuple[str, ...] = checked(values.DEBIAN_PACKAGE, default=())
    extra_suites: tuple[AptSuite, ...] = ()
    # Prepended to PATH in the image (Debian installs versioned Go under /usr/lib/go-1.XX/bin).
    path: tuple[str, ...] = checked(values.ABS_DIR, default=())
    env: Mapping[str, str] = checked(values.ENV_VALUE, keys=values.ENV_KEY, default_factory=dict)
    downloads: tuple[Download, ...] = ()
    # The Go toolchains the image carries beside the one first on PATH: Go version -> its bin folder.
    # A target whose upstream version needs a newer Go (GoBuild.toolchains) gets the oldest one that
    # is new enough put first on PATH for its go steps.
    go_toolchains: Mapping[str, str] = checked(values.ABS_DIR, keys=values.GO_VERSION, default_factory=dict)
    # Cache variables this toolchain needs for every GPU backend's configure (compiler paths, say).
    gpu_cmake_variables: Mapping[str, str] = checked(values.CMAKE_VALUE, keys=values.CMAKE_NAME,
                                                     default_factory=dict)
    # Library policy (pipeline/config/policies/<name>.toml): what the oldest system the packages run on
    # provides. Everything else the package needs is bundled from the image. Empty: bundle nothing.
    policy: str = checked(values.Kind("policy", "a policy of pipeline/config/policies (" +
                                      ", ".join(policies.available_policies()) + ")", "debian-bullseye",
                                      lambda v: None if not v or v in policies.available_policies()
                                      else "there is no such library policy"), default="")
    # The builder that compiles everything of this builder's targets that is not GPU code (the CPU
    # backends, bin/ollama), on an older system for a lower floor; this builder compiles the GPU
    # backends. Empty: this builder compiles everything.
    host: str = checked(values.NAME, default="")
    # Stand-ins for driver libraries the image has (soname -> path in the image), used only to load a
    # backend with every symbol bound in verify, never shipped: the CUDA toolkit's libcuda.so stub.
    driver_stubs: Mapping[str, str] = checked(values.ABS_FILE, keys=values.FILE_NAME, default_factory=dict)

    @property
    def flavor(self) -> str:
        return "vendor" if self.base_image else "debian"

    def default_go(self) -> str:
        """The version of the declared Go toolchain first on the image's PATH ("" when none is declared)."""
        for folder in self.path:
            for version, bindir in self.go_toolchains.items():
                if bindir == folder:
                    return version
        return ""


@record
class Backend:
    preset: str = checked(values.PRESET)
    component: str = checked(values.COMPONENT)
    # The backend's folder under lib/ollama (OLLAMA_RUNNER_DIR): it stays inside lib/ollama.
    runner_dir: str = checked(values.REL_DIR, default="")
    # Cache variable that receives the target's gpu_archs (joined with ';'); empty for CPU.
    arch_variable: str = checked(values.Kind("CMake variable", values.CMAKE_NAME.rule, "X",
                                             lambda v: values.CMAKE_NAME.check(v) if v else None), default="")
    # Compiler launcher variables pointed at ccache.
    launchers: tuple[str, ...] = checked(values.CMAKE_NAME,
                                         default=("CMAKE_C_COMPILER_LAUNCHER", "CMAKE_CXX_COMPILER_LAUNCHER"))
    # GPU code format of `library` ("hip" or "cuda"), checked after the build against gpu_archs.
    gpu_code: str = checked(values.choice("", "hip", "cuda"), default="")
    library: str = checked(values.FILE_NAME, default="")
    # File name patterns removed from the install output after `cmake --install` (a library the host
    # provides that upstream's install copies, such as the Vulkan loader libvulkan.so*).
    exclude: tuple[str, ...] = checked(values.FILE_PATTERN, default=())
    # The llama/server preset (llama/server/CMakePresets.json) this backend builds with from v0.30, where
    # the tree holds no ggml (upstream.layouts.LlamaServer): "cpu", "rocm_v7_2_user_arch", ...
    server_preset: str = checked(values.Kind("CMake preset", values.PRESET.rule, "cpu",
                                             lambda v: values.PRESET.check(v) if v else None), default="")
    # The CMake targets that preset's build preset names (upstream builds only these): llama-server and
    # llama-quantize for cpu, the ggml backend (ggml-hip, ggml-cuda, ggml-vulkan) for a GPU preset.
    server_targets: tuple[str, ...] = checked(values.COMPONENT, default=())

    def __post_init__(self) -> None:
        if self.gpu_code not in ("", "hip", "cuda"):
            raise ValueError(f"gpu_code must be 'hip', 'cuda' or empty, got {self.gpu_code!r}")
        if bool(self.gpu_code) != bool(self.library) or bool(self.gpu_code) != bool(self.arch_variable):
            raise ValueError("arch_variable, gpu_code and library go together: set all three or none")
    cache_variables: Mapping[str, str] = checked(values.CMAKE_VALUE, keys=values.CMAKE_NAME,
                                                 default_factory=dict)


@record
class GoBuild:
    flags: tuple[str, ...] = checked(values.GO_FLAG, default=("-trimpath", "-buildmode=pie"))
    # Joined with spaces into one -ldflags=: each is one word.
    ldflags: tuple[str, ...] = checked(values.GO_FLAG, default=("-w", "-s"))
    env: Mapping[str, str] = checked(values.ENV_VALUE, keys=values.ENV_KEY,
                                     default_factory=lambda: {"CGO_ENABLED": "1"})
    # Upstream versions (a PEP 440 specifier such as ">=0.23.1") -> the oldest Go their go.mod's `go`
    # directive accepts (such as "1.26.0"). Builds run with GOTOOLCHAIN=local, so a version matched
    # here is built with the oldest of the builder's go_toolchains at least that new; a version that
    # matches nothing is built with the builder's default Go.
    toolchains: Mapping[str, str] = checked(values.GO_VERSION, keys=values.SPECIFIER, default_factory=dict)

    def required(self, tag: str) -> Version | None:
        """The oldest Go upstream `tag` builds with, by the rules above; None: the builder's default."""
        needs = [go_version(go) for spec, go in self.toolchains.items()
                 if SpecifierSet(spec).contains(tag_version(tag), prereleases=True)]
        return max(needs, default=None)


@record
class Package:
    format: str = checked(values.choice(*formats.FORMATS), default="tar.gz")
    # 0: the format's own default (gzip 9, zstd 12).
    compression_level: int = 0
    # Remove the GPU code of archs outside runtime.archs from bundled ROCm libraries (librocblas).
    strip_gpu_code: bool = True
    # Lower the package's libraries to the floor of the builder's policy where the policy has a
    # floor pass ([floor_pass], pipeline.closure.floor). false: ship them as built, held to the policy
    # the floor pass names as `without`.
    floor_pass: bool = True

    def __post_init__(self) -> None:
        if self.format not in formats.FORMATS:
            raise ValueError(f"format must be one of {', '.join(formats.FORMATS)}, got {self.format!r}")
        low, high, _ = formats.FORMATS[self.format]
        if self.compression_level and not low <= self.compression_level <= high:
            raise ValueError(f"compression_level for {self.format} must be {low} to {high} (or 0 for "
                             f"the default), got {self.compression_level}")

    @property
    def level(self) -> int:
        return self.compression_level or formats.FORMATS[self.format][2]




@record
class Runtime:
    env: Mapping[str, str] = checked(values.ENV_VALUE, keys=values.ENV_KEY, default_factory=dict)
    # More environment for some upstream versions: a version specifier -> variables merged over `env`
    # where it admits the target's version (Vulkan is behind OLLAMA_VULKAN=1 from v0.12.11 to v0.24).
    # Their names are checked in __post_init__ (the loader checks one level of keys).
    env_versions: Mapping[str, Mapping[str, str]] = checked(values.ENV_VALUE, keys=values.SPECIFIER,
                                                            default_factory=dict)
    # The GPU archs the runtime will ask the backend and rocBLAS for (a 780M under
    # HSA_OVERRIDE_GFX_VERSION=11.0.0 asks for gfx1100). Tensile files of other archs are pruned.
    archs: tuple[str, ...] = checked(values.ARCH, default=())
    # runtime.archs must be among gpu_archs, unless this says the runtime asks for code built elsewhere.
    archs_beyond_gpu_archs: bool = False

    def __post_init__(self) -> None:
        for spec, extra in self.env_versions.items():
            for key in extra:
                if problem := values.ENV_KEY.check(key):
                    raise ValueError(f"key 'env_versions': {spec!r}: key {key!r} is not allowed ({problem}); "
                                     f"use {values.ENV_KEY.rule}")


@record
class Target:
    name: str = checked(values.NAME)
    description: str = checked(values.TEXT)
    source: Source
    builder: str = checked(values.NAME)
    backends: tuple[str, ...] = checked(values.NAME)
    gpu_archs: tuple[str, ...] = checked(values.ARCH, default=())
    # Extra cmake cache variables for every configure of this target.
    cmake_variables: Mapping[str, str] = checked(values.CMAKE_VALUE, keys=values.CMAKE_NAME,
                                                 default_factory=dict)
    go: GoBuild = dataclasses.field(default_factory=GoBuild)
    package: Package = dataclasses.field(default_factory=Package)
    runtime: Runtime = dataclasses.field(default_factory=Runtime)
    # The upstream versions this target can be built at (a PEP 440 specifier such as ">=0.12.6": the
    # Vulkan backend entered upstream in v0.12.6). Empty: every version.
    versions: str = checked(values.Kind("versions", values.SPECIFIER.rule, ">=0.12.6",
                                        lambda v: values.specifier_problem(v) if v else None), default="")
    # The upstream tags the target is released at (each a pinned tag its versions admit), with why: the
    # release says it beside the asset. Its own source.tag is among them (the one `:<target>` images and
    # plain `nox -s build -- TARGET` take). Empty: its own tag only.
    releases: Mapping[str, str] = checked(values.TEXT, keys=values.TAG, default_factory=dict)

    def admits(self, tag: str) -> bool:
        return not self.versions or SpecifierSet(self.versions).contains(tag_version(tag), prereleases=True)

    @property
    def runtime_env(self) -> dict[str, str]:
        """The runtime environment at this target's upstream version: runtime.env, then the env_versions
        tables whose specifier admits the version, in file order."""
        env = dict(self.runtime.env)
        for spec, extra in self.runtime.env_versions.items():
            if SpecifierSet(spec).contains(tag_version(self.source.tag), prereleases=True):
                env.update(extra)
        return env

    def release_tags(self) -> tuple[str, ...]:
        """The upstream tags the target is released at: its own first."""
        return tuple(dict.fromkeys([self.source.tag, *self.releases]))

    @property
    def release_note(self) -> str:
        """Why the target is released at its upstream version (releases), "" when not said."""
        return self.releases.get(self.source.tag, "")


@record
class LlamaCpp:
    """llama.cpp as upstream fetches it from v0.30 (the tag in the tree's LLAMA_CPP_VERSION). The source
    stage supplies it instead, from LLAMA_CPP_SOURCE (a local clone or mirror) or this URL, at the
    pinned commit: the build never fetches at configure time."""

    url: str = checked(values.URL, default="")
    # llama.cpp tag (b9452) -> full commit id; a tag not here, or moved, is refused.
    pins: Mapping[str, str] = checked(values.COMMIT, keys=values.REF, default_factory=dict)


@record
class ReleaseBuild:
    """What upstream's own Linux release build sets beyond the plain build steps, for the upstream
    versions `versions` admits (its .github/workflows/release.yaml and Dockerfile): the go build's
    extra -ldflags and environment, and the environment of every backend's cmake configure."""

    versions: str = checked(values.Kind("versions", values.SPECIFIER.rule, ">=0.12.5",
                                        lambda v: values.specifier_problem(v) if v else None), default="")
    go_ldflags: tuple[str, ...] = checked(values.GO_FLAG, default=())
    go_env: Mapping[str, str] = checked(values.ENV_VALUE, keys=values.ENV_KEY, default_factory=dict)
    cmake_env: Mapping[str, str] = checked(values.ENV_VALUE, keys=values.ENV_KEY, default_factory=dict)

    def admits(self, tag: str) -> bool:
        return not self.versions or SpecifierSet(self.versions).contains(tag_version(tag), prereleases=True)

    def __add__(self, other: ReleaseBuild) -> ReleaseBuild:
        """Two rules as one: ldflags joined, environments merged (the later rule wins a key)."""
        return ReleaseBuild(versions="", go_ldflags=(*self.go_ldflags, *other.go_ldflags),
                            go_env=types.MappingProxyType({**self.go_env, **other.go_env}),
                            cmake_env=types.MappingProxyType({**self.cmake_env, **other.cmake_env}))


@record
class Upstream:
    # tag -> full commit id of every upstream version the project has pinned.
    pins: Mapping[str, str] = checked(values.COMMIT, keys=values.TAG, default_factory=dict)
    llama_cpp: LlamaCpp = dataclasses.field(default_factory=LlamaCpp)
    # Upstream's release build, rule by rule ([[upstream.release_build]]): every rule whose versions
    # admit a target's tag applies, in file order.
    release_build: tuple[ReleaseBuild, ...] = ()
    # Build layout name -> the upstream versions it builds (upstream.layouts: in-tree, llama-server).
    # Empty: the layouts' own ranges (in-tree <0.30, llama-server >=0.30).
    layouts: Mapping[str, str] = checked(values.SPECIFIER, keys=values.NAME, default_factory=dict)


def tag_version(tag: str) -> Version:
    """The version of an upstream tag (v0.24.0 -> 0.24.0; v0.30.0-rc1 -> 0.30.0rc1)."""
    try:
        return Version(tag.removeprefix("v"))
    except InvalidVersion:
        raise ConfigError(f"upstream tag {tag!r} is not a version (expected vX.Y.Z)") from None


def go_version(text: str) -> Version:
    """A Go version as go.mod and the toolchains name it (1.26.0, 1.24.7; go1.26.11 too)."""
    try:
        return Version(text.removeprefix("go"))
    except InvalidVersion:
        raise ConfigError(f"Go version {text!r} is not a version (expected such as 1.26.0)") from None


def planned_go(target: Target, builder: Builder, tag: str) -> str:
    """The Go version the go steps of `target` at `tag` run with ("" when the builder declares none)."""
    needed = target.go.required(tag)
    if needed is None:
        return builder.default_go()
    return next((v for v, path in sorted(builder.go_toolchains.items(), key=lambda kv: go_version(kv[0]))
                 if go_version(v) >= needed), "")


def go_toolchain(builder: Builder, needed: Version) -> str:
    """The bin folder of the builder's oldest Go toolchain at least as new as `needed`."""
    fits = sorted((go_version(v), path) for v, path in builder.go_toolchains.items()
                  if go_version(v) >= needed)
    if not fits:
        have = ", ".join(builder.go_toolchains) or "none declared"
        raise ConfigError(f"this upstream version needs Go >= {needed} and the builder carries no such Go "
                          f"toolchain (go_toolchains: {have}); add one as a download and to go_toolchains")
    return fits[0][1]


@record
class Matrix:
    path: Path
    targets: Mapping[str, Target]
    builders: Mapping[str, Builder]
    backends: Mapping[str, Backend]
    # tag -> commit: the upstream versions `--ref` may name.
    pins: Mapping[str, str] = dataclasses.field(default_factory=dict)
    llama_cpp: LlamaCpp = dataclasses.field(default_factory=LlamaCpp)
    # [groups]: group name -> its targets, in file order.
    groups: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    release_build: tuple[ReleaseBuild, ...] = ()
    # [upstream.layouts]: build layout name -> the upstream versions it builds (empty: the code's ranges).
    layouts: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def release_build_at(self, tag: str) -> ReleaseBuild:
        """What upstream's release build sets at `tag`: the [[upstream.release_build]] rules that admit
        it, joined in file order."""
        joined = ReleaseBuild()
        for rule in self.release_build:
            if rule.admits(tag):
                joined = joined + rule
        return joined

    def patches(self, directory: Path) -> list[series.Patch]:
        """The patch series of `directory`, its Targets checked against the matrix and groups expanded."""
        return series.load(directory, self.targets, self.groups)

    def serves(self, builder: str) -> tuple[str, ...]:
        """The GPU archs the runtimes of a builder's targets ask for (runtime.archs), sorted: a builder
        keeps only these archs' rocBLAS Tensile files."""
        mine = [t for t in self.targets.values() if t.builder == builder]
        return tuple(sorted({a for t in mine for a in t.runtime.archs}))

    def pin(self, tag: str) -> str:
        """The pinned commit of an upstream tag; an unpinned tag is refused with how to pin it."""
        if problem := names.ref_problem(tag):
            raise SelectionError(f"{tag!r} is not a valid git tag ({problem}); use a tag such as v0.12.5")
        if tag not in self.pins:
            pinned = ", ".join(self.pins) or "none"
            raise SelectionError(
                f"upstream tag {tag} is not pinned (pinned: {pinned}); pin it by adding "
                f"\"{tag}\" = \"<commit>\" under [upstream.pins] in {self.path.name}, with the commit "
                f"from `git rev-parse {tag}^{{commit}}` in a clone you trust")
        return self.pins[tag]

    def at(self, target: Target, tag: str) -> Target:
        """`target` built from the pinned upstream tag instead of its own."""
        if tag == target.source.tag:
            return target
        commit = self.pin(tag)
        if not target.admits(tag):
            raise SelectionError(f"target {target.name} builds upstream {target.versions}; {tag} is outside "
                                 "(pick another --ref, or leave the target out)")
        return dataclasses.replace(target, source=dataclasses.replace(target.source, tag=tag, commit=commit))

    def select_at(self, selectors: Iterable[str], ref: str | None) -> list[Target]:
        """Like select, each target at upstream `ref` (None: its own tag). Targets picked by --all or a
        glob that cannot be built at `ref` are left out; one named outright is an error. A selector
        TARGET@TAG names one target at one pinned tag (how the release workflow asks for each of a
        target's release tags); it cannot be mixed with another `ref`."""
        selectors = list(selectors)
        tagged = [sel for sel in selectors if "@" in sel]
        plain = [sel for sel in selectors if "@" not in sel]
        pairs = []
        for sel in tagged:
            name, _, tag = sel.partition("@")
            if name not in self.targets:
                raise SelectionError(f"unknown target {name!r} in {sel!r}{loader.hint(name, self.targets)}; "
                                     f"known targets: {', '.join(self.targets)}")
            if ref is not None and tag != ref:
                raise SelectionError(f"{sel} names upstream {tag}, but --ref (or PIPELINE_REF) asks for "
                                     f"{ref}: give one of them")
            pairs.append(self.at(self.targets[name], tag))
        if pairs and not plain:
            return _unique(pairs)
        chosen = self.select(plain)
        if ref is None:
            return _unique(chosen + pairs)
        self.pin(ref)
        explicit = {sel for sel in plain if sel in self.targets}
        kept = [t for t in chosen if t.name in explicit or t.admits(ref) or ref == t.source.tag]
        if not kept:
            raise SelectionError(f"no selected target builds upstream {ref} (see `versions` in "
                                 f"{self.path.name})")
        return _unique([self.at(t, ref) for t in kept] + pairs)

    def selector(self, target: Target) -> str:
        """How the command line names `target` at its tag: TARGET at its own tag, else TARGET@TAG."""
        own = self.targets[target.name].source.tag
        return target.name if target.source.tag == own else f"{target.name}@{target.source.tag}"

    def releases(self, chosen: Iterable[Target]) -> list[Target]:
        """Each of `chosen` at every tag it is released at (Target.releases), own tag first."""
        return [self.at(self.targets[t.name], tag) for t in chosen
                for tag in self.targets[t.name].release_tags()]

    def select(self, selectors: Iterable[str]) -> list[Target]:
        """Targets matching names or globs ('gfx*'), in file order; 'all' or '--all' picks every one."""
        selectors = list(selectors)
        if any(sel in ("all", "--all") for sel in selectors) and len(selectors) > 1:
            others = [sel for sel in selectors if sel not in ("all", "--all")]
            raise SelectionError(f"--all picks every target: drop it or the names ({', '.join(others)})")
        if not selectors:
            raise SelectionError(f"no target given; known targets: {', '.join(self.targets)} (or --all)")
        chosen: dict[str, Target] = {}
        for sel in selectors:
            if sel in ("all", "--all"):
                return list(self.targets.values())
            hits = [name for name in self.targets if fnmatch.fnmatchcase(name, sel)]
            if not hits:
                hint = loader.hint(sel, self.targets)
                raise SelectionError(
                    f"unknown target {sel!r}{hint}; known targets: {', '.join(self.targets)}"
                )
            for name in hits:
                chosen[name] = self.targets[name]
        return [t for name, t in self.targets.items() if name in chosen]


def _unique(chosen: Iterable[Target]) -> list[Target]:
    """Targets without repeats of the same target at the same tag, in order."""
    return list({(t.name, t.source.tag): t for t in chosen}.values())


TOP_LEVEL = ("defaults", "downloads", "builders", "backends", "targets", "groups", "upstream")


def load(path: Path) -> Matrix:
    """Read and validate targets.toml."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            f"target matrix not found: looked for {path.resolve()} "
            "(run from the project folder, or pass --targets-file / set PIPELINE_TARGETS)"
        )
    return parse(loader.read(path, "target matrix"), path)


def parse(doc: Mapping[str, Any], path: Path) -> Matrix:
    loader.reject_unknown(doc, TOP_LEVEL, f"{path}", "top-level table")
    defaults = doc.get("defaults", {})
    for name in ("downloads", "builders", "backends", "targets", "groups", "defaults", "upstream"):
        if not isinstance(doc.get(name, {}), dict):
            raise ConfigError(f"{path}: [{name}] must be a table")

    # Checked on its own first, so that a mistake in [defaults] is reported where it was made.
    loader.build(Target, defaults, f"{path}: [defaults]", partial=True, exclude=("name",))
    for kind in ("downloads", "builders", "backends", "targets", "groups"):
        for name in doc.get(kind, {}):
            names.check_name(name, kind[:-1], f"{path}: [{kind}.{name}]")
    for name in doc.get("builders", {}):
        # Its image is <prefix>/builder-<name>: a name Docker takes.
        if problem := values.image_component_problem(f"builder-{name}"):
            raise ConfigError(f"{path}: [builders.{name}] builder name {name!r} is not allowed: the image "
                              f"builder-{name} would not be a Docker name ({problem})")
    upstream = loader.build(Upstream, doc.get("upstream", {}), f"{path}: [upstream]")
    pins = _check_pins(upstream.pins, f"{path}: [upstream.pins]")
    llama_cpp = dataclasses.replace(upstream.llama_cpp, pins=_check_pins(
        upstream.llama_cpp.pins, f"{path}: [upstream.llama_cpp.pins]", versions=False))
    if llama_cpp.url:
        names.check_url(llama_cpp.url, f"{path}: [upstream.llama_cpp] url")
    for i, rule in enumerate(upstream.release_build):
        _check_release_build(rule, f"{path}: [[upstream.release_build]] #{i + 1}")
    for layout, spec in upstream.layouts.items():
        try:
            SpecifierSet(spec)
        except InvalidSpecifier:
            raise ConfigError(f"{path}: [upstream.layouts] {layout} = {spec!r} is not a version specifier "
                              "(e.g. \">=0.30\")") from None
    downloads = {key: _download(key, table, f"{path}: [downloads.{key}]")
                 for key, table in doc.get("downloads", {}).items()}
    builders = {name: _builder(table, downloads, f"{path}: [builders.{name}]")
                for name, table in doc.get("builders", {}).items()}
    for name, b in builders.items():
        _check_go_toolchains(b, f"{path}: [builders.{name}]")
        _check_host(name, b, builders, f"{path}: [builders.{name}]")
    backends = {
        name: loader.build(Backend, table, f"{path}: [backends.{name}]")
        for name, table in doc.get("backends", {}).items()
    }
    targets: dict[str, Target] = {}
    for name, table in doc.get("targets", {}).items():
        where = f"{path}: [targets.{name}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        if "name" in table:
            raise ConfigError(f"{where} key 'name' is not allowed: a target is named by its table")
        merged = _merge(defaults, table)
        merged["name"] = name
        target = loader.build(Target, merged, where)
        _check_target(target, builders, backends, where)
        pinned = pins.get(target.source.tag)
        if pinned is not None and pinned != target.source.commit.lower():
            raise ConfigError(f"{where} source.commit {target.source.commit} differs from the pin of "
                              f"{target.source.tag} in [upstream.pins] ({pinned}); one of them is wrong")
        _check_releases(target, pins, where)
        targets[name] = target
    if not targets:
        raise ConfigError(f"{path}: no [targets.NAME] table; the matrix is empty")
    groups = {name: _group(name, members, targets, f"{path}: [groups] {name}")
              for name, members in doc.get("groups", {}).items()}
    return Matrix(path=path, targets=targets, builders=builders, backends=backends, pins=pins,
                  llama_cpp=llama_cpp, groups=types.MappingProxyType(groups),
                  release_build=upstream.release_build, layouts=upstream.layouts)


def _download(key: str, table: Any, where: str) -> Download:
    """A [downloads.KEY] table; the download is named KEY in its image unless it says `name`."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    return loader.build(Download, {"name": key.replace("-", "_"), **table}, where)


def _builder(table: Any, downloads: Mapping[str, Download], where: str) -> Builder:
    """A [builders.NAME] table, its `downloads` naming [downloads] tables."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    named = _names(table.get("downloads", []), downloads, f"{where} downloads", "a [downloads] table",
                   'downloads = ["cmake", "go"], each pinned once under [downloads.NAME]')
    chosen = tuple(downloads[n] for n in named)
    if len({d.name for d in chosen}) != len(chosen):
        raise ConfigError(f"{where} downloads two files of the same name: "
                          f"{', '.join(d.name for d in chosen)}")
    return loader.build(Builder, {k: v for k, v in table.items() if k != "downloads"}, where,
                        given={"downloads": chosen})


def _names(value: Any, known: Mapping[str, Any], where: str, what: str, example: str) -> tuple[str, ...]:
    """A list of names, each one of `known` (`what`: what they name), none twice."""
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise ConfigError(f"{where} must be a list of names, each of {what} ({example})")
    for n in value:
        if n not in known:
            raise ConfigError(f"{where} names {n!r}, which is not {what}{loader.hint(n, known)}; "
                              f"known: {', '.join(known) or 'none'}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where} names one twice: {', '.join(value)}")
    return tuple(value)


def _group(name: str, members: Any, targets: Mapping[str, Target], where: str) -> tuple[str, ...]:
    members = _names(members, targets, where, "a target", 'memory = ["sm_37", "gfx906"]')
    if not members:
        raise ConfigError(f"{where} names no target; list the targets of the group")
    if name in targets:
        raise ConfigError(f"{where}: a group may not have a target's name; rename the group")
    return tuple(members)


def _check_host(name: str, b: Builder, builders: Mapping[str, Builder], where: str) -> None:
    for soname, stub in b.driver_stubs.items():
        if not stub.startswith("/") or not soname.startswith("lib"):
            raise ConfigError(f"{where} driver_stubs {soname!r}: a soname and an absolute path in the image, "
                              'such as "libcuda.so.1" = "/usr/lib/x86_64-linux-gnu/stubs/libcuda.so"')
    if not b.host:
        return
    if b.host not in builders:
        raise ConfigError(f"{where} host {b.host!r} is not a builder{loader.hint(b.host, builders)}; "
                          f"defined: {', '.join(builders)}")
    if b.host == name or builders[b.host].host:
        raise ConfigError(f"{where} host {b.host!r} must be another builder that compiles everything itself "
                          "(no host of its own)")


def _check_go_toolchains(b: Builder, where: str) -> None:
    for version, path in b.go_toolchains.items():
        try:
            go_version(version)
        except ConfigError as exc:
            raise ConfigError(f"{where} go_toolchains: {exc}") from None
        if not path.startswith("/"):
            raise ConfigError(f"{where} go_toolchains {version!r}: {path!r} must be an absolute bin folder")


ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


def _check_release_build(rule: ReleaseBuild, where: str) -> None:
    """A release-build rule: a version specifier, -X=pkg.var=value ldflags, NAME=value environments."""
    try:
        SpecifierSet(rule.versions)
    except InvalidSpecifier:
        raise ConfigError(f"{where} versions {rule.versions!r} is not a version specifier "
                          "(e.g. \">=0.12.5\")") from None
    for flag in rule.go_ldflags:
        if not flag.startswith("-") or any(c.isspace() for c in flag):
            raise ConfigError(f"{where} go_ldflags {flag!r}: one linker flag without spaces, such as "
                              "\"-X=github.com/ollama/ollama/server.mode=release\"")
    for key, env in (("go_env", rule.go_env), ("cmake_env", rule.cmake_env)):
        for name, value in env.items():
            if not ENV_NAME.fullmatch(name):
                raise ConfigError(f"{where} {key} {name!r} is not an environment variable name "
                                  "(capitals, digits and _)")
            if "\n" in value or "\0" in value:
                raise ConfigError(f"{where} {key} {name}: the value holds a newline or NUL; give one line")


def _check_pins(pins: Mapping[str, str], where: str, *, versions: bool = True) -> dict[str, str]:
    out = {}
    for tag, commit in pins.items():
        names.check_ref(tag, f"{where} tag")
        if versions:
            tag_version(tag)
        if len(commit) != 40 or not set(commit.lower()) <= SHA1_HEX:
            raise ConfigError(f"{where} {tag} must be a full 40-digit commit id, got {commit!r}")
        out[tag] = commit.lower()
    return out


def _check_releases(t: Target, pins: Mapping[str, str], where: str) -> None:
    """Every release tag is pinned (or the target's own), admitted by its versions, and the own tag is
    among them; env_versions keys are version specifiers."""
    for spec in t.runtime.env_versions:
        try:
            SpecifierSet(spec)
        except InvalidSpecifier:
            raise ConfigError(f"{where} runtime.env_versions key {spec!r} is not a version specifier "
                              "(e.g. \">=0.12.11,<0.30\")") from None
    if not t.releases:
        return
    for tag, note in t.releases.items():
        names.check_ref(tag, f"{where} releases")
        if tag != t.source.tag and tag not in pins:
            raise ConfigError(f"{where} releases {tag}: not pinned; add it to [upstream.pins] (or drop it)")
        if not t.admits(tag):
            raise ConfigError(f"{where} releases {tag}: outside the target's versions ({t.versions})")
        if not note.strip():
            raise ConfigError(f"{where} releases {tag}: say why the target is released at it (a short note)")
    if t.source.tag not in t.releases:
        raise ConfigError(f"{where} releases lacks the target's own tag {t.source.tag}: add it with its "
                          "note, or move source.tag to one of them")


def _check_target(t: Target, builders: Mapping[str, Builder], backends: Mapping[str, Backend], where: str):
    if t.builder not in builders:
        raise ConfigError(f"{where} builder {t.builder!r} is not defined{loader.hint(t.builder, builders)}; "
                          f"defined: {', '.join(builders) or 'none'}")
    for b in t.backends:
        if b not in backends:
            raise ConfigError(f"{where} backend {b!r} is not defined{loader.hint(b, backends)}; "
                              f"defined: {', '.join(backends) or 'none'}")
    gpu = [b for b in t.backends if backends[b].arch_variable]
    if gpu and not t.gpu_archs:
        raise ConfigError(f"{where} backend {gpu[0]!r} compiles GPU code: set gpu_archs")
    if t.gpu_archs and not gpu:
        raise ConfigError(f"{where} gpu_archs is set but no backend takes GPU archs")
    commit = t.source.commit.lower()
    if len(commit) != 40 or not set(commit) <= SHA1_HEX:
        raise ConfigError(f"{where} source.commit must be a full 40-digit commit id, got {t.source.commit!r}")
    names.check_ref(t.source.tag, f"{where} source.tag")
    if t.versions:
        try:
            SpecifierSet(t.versions)
        except InvalidSpecifier:
            raise ConfigError(f"{where} versions {t.versions!r} is not a version specifier "
                              "(e.g. \">=0.12.6\")") from None
        if not t.admits(t.source.tag):
            raise ConfigError(f"{where} source.tag {t.source.tag} is outside the target's versions "
                              f"({t.versions}); pin a tag it builds")
    for spec, go in t.go.toolchains.items():
        try:
            SpecifierSet(spec)
        except InvalidSpecifier:
            raise ConfigError(f"{where} go.toolchains key {spec!r} is not a version specifier "
                              "(e.g. \">=0.23.1\")") from None
        try:
            go_version(go)
        except ConfigError as exc:
            raise ConfigError(f"{where} go.toolchains {spec!r}: {exc}") from None
    names.check_url(t.source.url, f"{where} source.url")
    _check_version_format(t.source.version_format, where)
    if not VERSION_VARIABLE.match(t.source.version_variable):
        raise ConfigError(f"{where} source.version_variable {t.source.version_variable!r} is not a Go "
                          "package path and variable (such as github.com/ollama/ollama/version.Version)")
    codes = {backends[b].gpu_code for b in t.backends if backends[b].gpu_code}
    for arch in t.gpu_archs:
        for code in sorted(codes):
            if problem := names.arch_problem(code, arch):
                raise ConfigError(f"{where} gpu_archs {arch!r}: {problem}")
    if len(set(t.gpu_archs)) != len(t.gpu_archs):
        raise ConfigError(f"{where} gpu_archs lists an arch twice: {', '.join(t.gpu_archs)}")
    for arch in t.runtime.archs:
        # Beyond gpu_archs or not, a runtime arch is one the target's GPU compilers know.
        if not codes:
            raise ConfigError(f"{where} runtime.archs is set but no backend takes GPU archs")
        for code in sorted(codes):
            if problem := names.arch_problem(code, arch):
                raise ConfigError(f"{where} runtime.archs {arch!r}: {problem}")
    if len(set(t.runtime.archs)) != len(t.runtime.archs):
        raise ConfigError(f"{where} runtime.archs lists an arch twice: {', '.join(t.runtime.archs)}")
    if t.runtime.archs and not t.runtime.archs_beyond_gpu_archs:
        built = set(t.gpu_archs) | {names.cuda_number(a) for a in t.gpu_archs}
        for arch in t.runtime.archs:
            if arch not in built and names.cuda_number(arch) not in built:
                raise ConfigError(f"{where} runtime.archs {arch!r} is not among gpu_archs "
                                  f"({', '.join(t.gpu_archs) or 'none'}); add it there, or set "
                                  "runtime.archs_beyond_gpu_archs = true if the runtime gets it elsewhere")


VERSION_VARIABLE = re.compile(r"^[A-Za-z0-9_.~/-]+\.[A-Za-z_][A-Za-z0-9_]*$")
# What a stamped version may hold: it goes into -ldflags -X and into file names.
_VERSION_CHARS = frozenset(string.ascii_letters + string.digits + ".+-_~")


def _check_version_format(fmt: str, where: str) -> None:
    """Only {version} and {target}: no attribute or index access, conversions or format specs."""
    what = f"{where} source.version_format {fmt!r}"
    try:
        parts = list(string.Formatter().parse(fmt))
    except ValueError as exc:
        raise ConfigError(f"{what} is not a format string ({exc}); use e.g. "
                          "\"{version}+{target}\"") from None
    for _literal, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in ("version", "target") or spec or conversion:
            given = f"{field}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}"
            raise ConfigError(f"{what}: only {{version}} and {{target}} may be used, got {{{given}}}")
    if "{version}" not in fmt:
        raise ConfigError(f"{what} must contain {{version}}")
    sample = fmt.format(version="0.0.0", target="t")
    if not set(sample) <= _VERSION_CHARS:
        raise ConfigError(f"{what}: letters, digits and . + - _ ~ only outside the fields")


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def build_jobs(selected: Iterable[Target]) -> dict[str, list[str]]:
    """Targets as the release workflow builds them: one job per builder, whose image is built once for
    all its targets (in file order)."""
    out: dict[str, list[str]] = {}
    for target in selected:
        out.setdefault(target.builder, []).append(target.name)
    return out
