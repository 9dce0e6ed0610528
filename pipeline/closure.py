"""The library closure of a package: what bin/ollama and its backends load at run time, and from where.

Ollama loads its backends with dlopen (they are not linked into bin/ollama), so every shared object
under lib/ollama is a root of its own, and so is bin/ollama. From each root the walk follows DT_NEEDED
(read with pyelftools, never ldd) and puts every library it meets in one of these places:

* **driver**: the policy's `never_bundle` (libcuda.so.1 comes with the NVIDIA driver). Not bundled, not
  walked, not an error when absent from the builder image. One found in the package is an error.
* **package**: already in a folder the loader searches for that object at run time. Ollama starts its
  runners with LD_LIBRARY_PATH set to lib/ollama and lib/ollama/<runner> (no RPATH on Linux), so a
  backend in lib/ollama/rocm finds lib/ollama/rocm/* and lib/ollama/*.
* **system**: the policy's `provided` (glibc, the gcc runtime). Their own needs are the system's
  business and are not walked.
* **bundled**: anything else, resolved inside the builder image's file system (a folder holding it,
  the "sysroot"; never the host's /usr/lib) and copied into the needing root's folder,
  lib/ollama/<runner>/. A bundled library is walked in turn: all it needs must be resolved too.
* **missing**: not found in the builder image: an error naming the library and who needs it.

Every shipped object's symbol-version needs against the system libraries (GLIBC_2.38 from
libc.so.6, GLIBCXX_3.4.32 from libstdc++.so.6, ...) are compared with the policy's floor: a package
that needs more than the oldest supported system has is refused, naming the object and the version.

A policy is data, pipeline/policy/<name>.toml, read into a frozen `Policy` with the same typed loader
and messages as targets.toml.

Typical use (the package stage, after `cmake --install`, with the builder image exported to a folder):

    policy = closure.load_policy("debian-trixie")
    result = closure.compute(build_dir / "dist", sysroot, policy)   # raises ClosureError on problems
    closure.install(result, build_dir / "dist")                     # copies result.bundles in
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import os
import posixpath
import re
import shutil
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection, DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection

from . import targets as _schema
from .errors import ConfigError, PackageError

POLICY_DIR = Path(__file__).resolve().parent / "policy"

# Where glibc's loader looks last (after RPATH, LD_LIBRARY_PATH, RUNPATH and ld.so.cache), in the
# order of a Debian/Ubuntu x86-64 system: the multiarch folders, then the traditional ones.
DEFAULT_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib")

# Values of the loader's dynamic string tokens on Debian x86-64 ($ORIGIN is per object).
_TOKENS = {"LIB": "lib/x86_64-linux-gnu", "PLATFORM": "x86_64"}
_MAX_LINKS = 40  # the kernel's ELOOP limit
_SONAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]*\.so(\.[0-9A-Za-z_]+)*")
_PREFIX = re.compile(r"[A-Z][A-Z0-9]*")
_NUMERIC = re.compile(r"[0-9]+(\.[0-9]+)*")


class ClosureError(PackageError):
    """The package's libraries cannot all be resolved, or would not load on the policy's floor."""

    def __init__(self, message: str, closure: Closure | None = None):
        super().__init__(message)
        self.closure = closure


# --- policy -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """What the oldest runtime system a package supports provides, and what must never be shipped."""

    name: str
    description: str
    # The highest version each system library family defines at the floor, by version prefix
    # (GLIBC = "2.36" allows GLIBC_2.36 and older). Versions needed from `provided` libraries are
    # checked against it; GLIBC is required.
    max_versions: Mapping[str, str]
    # Sonames the runtime system provides: relied on, never bundled, their needs not walked.
    provided: tuple[str, ...]
    # Sonames that must not be shipped even when found (driver libraries: libcuda.so.1).
    never_bundle: tuple[str, ...] = ()
    # The Debian suite of the floor system: packages are verified in a clean container of it.
    suite: str = ""

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for key in ("provided", "never_bundle"):
            for soname in getattr(self, key):
                if not _SONAME.fullmatch(soname):
                    raise ValueError(f"key {key!r}: {soname!r} is not a soname (exact names such as "
                                     "libc.so.6; no paths, no patterns)")
                if soname in seen:
                    where = "twice" if seen[soname] == key else f"in both {seen[soname]!r} and {key!r}"
                    raise ValueError(f"key {key!r}: {soname!r} is listed {where}")
                seen[soname] = key
        if "GLIBC" not in self.max_versions:
            raise ValueError("key 'max_versions' must set GLIBC (the glibc version of the floor)")
        for prefix, version in self.max_versions.items():
            if not _PREFIX.fullmatch(prefix):
                raise ValueError(f"key 'max_versions': {prefix!r} is not a version prefix such as GLIBC")
            if not _NUMERIC.fullmatch(version):
                raise ValueError(f"key 'max_versions': {prefix} = {version!r} is not a version such as "
                                 "\"2.36\"")

    @property
    def glibc(self) -> str:
        return self.max_versions["GLIBC"]

    def allows(self, version_name: str) -> bool:
        """Whether a symbol version (GLIBC_2.34, GLIBCXX_3.4.30) exists on the floor's system.

        Prefixes the policy does not cap are allowed; a non-numeric version of a capped prefix
        (GLIBC_PRIVATE) is not.
        """
        prefix, _, version = version_name.rpartition("_")
        if prefix not in self.max_versions:
            return True
        if not _NUMERIC.fullmatch(version):
            return False
        return _vkey(version) <= _vkey(self.max_versions[prefix])


def available_policies() -> list[str]:
    return sorted(p.stem for p in POLICY_DIR.glob("*.toml"))


def load_policy(name_or_path: str | Path) -> Policy:
    """A policy by name (pipeline/policy/<name>.toml) or by path to a .toml file."""
    text_arg = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text_arg or text_arg.endswith(".toml"):
        path = Path(name_or_path)
    else:
        path = POLICY_DIR / f"{text_arg}.toml"
        if not path.is_file():
            known = available_policies()
            close = difflib.get_close_matches(text_arg, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown library policy {text_arg!r}{hint}; known: {', '.join(known)}")
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"library policy not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_policy(doc, path)


def parse_policy(doc: Mapping[str, Any], path: Path) -> Policy:
    where = f"{path}: [policy]"
    if "name" in doc:
        raise ConfigError(f"{where} key 'name' is not allowed: a policy is named by its file")
    table = {**doc, "name": Path(path).stem}
    return _schema._build(Policy, table, where)


def _vkey(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


# --- ELF --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ElfInfo:
    """What the dynamic loader reads from one ELF file."""

    path: Path
    elf_class: int  # 32 or 64
    machine: str  # EM_X86_64, EM_AMDGPU, ...
    type: str  # ET_DYN (shared objects and PIE executables), ET_EXEC, ...
    soname: str | None
    needed: tuple[str, ...]
    rpath: tuple[str, ...]
    runpath: tuple[str, ...]
    # (library, version) pairs of .gnu.version_r: ("libc.so.6", "GLIBC_2.34").
    version_needs: tuple[tuple[str, str], ...]

    def max_version(self, prefix: str, libraries: Iterable[str] | None = None) -> str | None:
        """The highest PREFIX_x.y this object needs (from `libraries` only, when given), or None."""
        allowed = None if libraries is None else set(libraries)
        best: tuple[tuple[int, ...], str] | None = None
        for library, name in self.version_needs:
            p, _, version = name.rpartition("_")
            if p != prefix or not _NUMERIC.fullmatch(version):
                continue
            if allowed is not None and library not in allowed:
                continue
            if best is None or _vkey(version) > best[0]:
                best = (_vkey(version), name)
        return best[1] if best else None


def read_elf(path: Path) -> ElfInfo | None:
    """The dynamic section and version needs of an ELF file; None when the file is not ELF."""
    path = Path(path)
    with open(path, "rb") as f:
        if f.read(4) != b"\x7fELF":
            return None
        f.seek(0)
        try:
            elf = ELFFile(f)
            needed: list[str] = []
            soname = None
            rpath: list[str] = []
            runpath: list[str] = []
            for tag in _dynamic_tags(elf):
                kind = tag.entry.d_tag
                if kind == "DT_NEEDED":
                    needed.append(tag.needed)
                elif kind == "DT_SONAME":
                    soname = tag.soname
                elif kind == "DT_RPATH":
                    rpath.extend(p for p in tag.rpath.split(":") if p)
                elif kind == "DT_RUNPATH":
                    runpath.extend(p for p in tag.runpath.split(":") if p)
            versions: list[tuple[str, str]] = []
            for section in elf.iter_sections():
                if isinstance(section, GNUVerNeedSection):
                    for verneed, auxes in section.iter_versions():
                        versions.extend((verneed.name, aux.name) for aux in auxes)
            return ElfInfo(path=path, elf_class=elf.elfclass, machine=elf.header["e_machine"],
                           type=elf.header["e_type"], soname=soname, needed=tuple(needed),
                           rpath=tuple(rpath), runpath=tuple(runpath), version_needs=tuple(versions))
        except (ELFError, ValueError, KeyError, OSError) as exc:
            raise ClosureError(f"{path}: not a readable ELF file ({exc})") from None


def _dynamic_tags(elf: ELFFile):
    for section in elf.iter_sections():
        if isinstance(section, DynamicSection):
            return list(section.iter_tags())
    # Objects without section headers still have the PT_DYNAMIC segment the loader uses.
    for segment in elf.iter_segments():
        if isinstance(segment, DynamicSegment):
            return list(segment.iter_tags())
    return []


# --- resolving inside the builder image -------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Found:
    soname: str
    path: PurePosixPath  # where the loader finds it, inside the sysroot: /usr/lib/x86_64-linux-gnu/libz.so.1
    file: Path  # the file on this machine, links resolved inside the sysroot
    info: ElfInfo


class Resolver:
    """Finds libraries the way glibc's loader would inside a sysroot (an exported builder image).

    Search order for a need of object X: X's DT_RPATH (only when it has no DT_RUNPATH),
    `library_path` (as LD_LIBRARY_PATH), X's DT_RUNPATH, the folders of the sysroot's
    /etc/ld.so.conf, then DEFAULT_DIRS. $ORIGIN is X's folder inside the sysroot. Symbolic links are
    followed inside the sysroot (an absolute target is taken from the sysroot's root); a link that
    climbs out of it is an error. Candidates of another ELF class or machine are skipped, as the
    loader does.
    """

    def __init__(self, sysroot: Path, *, library_path: Sequence[str] = (),
                 default_dirs: Sequence[str] = DEFAULT_DIRS, ld_so_conf: bool = True):
        self.sysroot = Path(sysroot).resolve()
        if not self.sysroot.is_dir():
            raise ClosureError(f"sysroot {sysroot} is not a folder")
        self.library_path = tuple(library_path)
        self.default_dirs = tuple(default_dirs)
        self.conf_dirs = tuple(self._read_ld_so_conf()) if ld_so_conf else ()
        self._elf: dict[Path, ElfInfo | None] = {}

    # Paths inside the sysroot are absolute POSIX paths as the builder sees them.
    def locate(self, path: str | PurePosixPath) -> Path | None:
        """The file at `path` inside the sysroot, links followed inside it; None when absent."""
        path = PurePosixPath(path)
        if not path.is_absolute():
            raise ValueError(f"{path}: paths inside the sysroot are absolute")
        todo = list(path.parts[1:])
        done: list[str] = []
        links = 0
        last_link: tuple[str, str] | None = None
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not done:
                    via = f": {last_link[0]} points to {last_link[1]}" if last_link else ""
                    raise ClosureError(f"{path} leaves the sysroot {self.sysroot}{via}; a library "
                                       "must be resolved inside the builder image")
                done.pop()
                continue
            host = self.sysroot.joinpath(*done, part)
            if host.is_symlink():
                links += 1
                if links > _MAX_LINKS:
                    raise ClosureError(f"{path}: too many levels of symbolic links in sysroot {self.sysroot}")
                target = os.readlink(host)
                last_link = ("/" + "/".join([*done, part]), target)
                if target.startswith("/"):
                    done = []
                todo = [p for p in PurePosixPath(target).parts if p != "/"] + todo
                continue
            if not host.exists():
                return None
            done.append(part)
        return self.sysroot.joinpath(*done)

    def elf(self, file: Path) -> ElfInfo | None:
        if file not in self._elf:
            self._elf[file] = read_elf(file) if file.is_file() else None
        return self._elf[file]

    def search_path(self, needer: ElfInfo, origin: PurePosixPath | None) -> list[PurePosixPath]:
        """Folders searched for the needs of `needer` whose folder in the sysroot is `origin`."""
        dirs: list[str] = []
        if needer.rpath and not needer.runpath:
            dirs += _expand(needer.rpath, origin)
        dirs += self.library_path
        dirs += _expand(needer.runpath, origin)
        dirs += self.conf_dirs
        dirs += self.default_dirs
        out: list[PurePosixPath] = []
        for d in dirs:
            p = PurePosixPath(d)
            if p.is_absolute() and p not in out:  # relative entries depend on the cwd: ignored
                out.append(p)
        return out

    def find(self, soname: str, needer: ElfInfo, origin: PurePosixPath | None = None) -> Found | None:
        """Where the loader would find `soname` for `needer` in the sysroot; None when nowhere."""
        if "/" in soname:
            candidates = [PurePosixPath(soname)] if soname.startswith("/") else []
        else:
            candidates = [d / soname for d in self.search_path(needer, origin)]
        for candidate in candidates:
            file = self.locate(candidate)
            if file is None or not file.is_file():
                continue
            info = self.elf(file)
            if info and info.elf_class == needer.elf_class and info.machine == needer.machine \
                    and info.type == "ET_DYN":
                return Found(soname, candidate, file, info)
        return None

    def _read_ld_so_conf(self) -> list[str]:
        dirs: list[str] = []
        self._conf_file(PurePosixPath("/etc/ld.so.conf"), dirs, depth=0)
        return dirs

    def _conf_file(self, path: PurePosixPath, dirs: list[str], depth: int) -> None:
        file = self.locate(path)
        if depth > 8 or file is None or not file.is_file():
            return
        for raw in file.read_text(errors="replace").splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            words = line.split()
            if words[0] == "include":
                for pattern in words[1:]:
                    pat = PurePosixPath(pattern)
                    if not pat.is_absolute():
                        pat = path.parent / pat
                    # The folder is resolved inside the sysroot like any path; its entries matched.
                    folder = self.locate(pat.parent)
                    if folder is None or not folder.is_dir():
                        continue
                    for name in sorted(os.listdir(folder)):
                        if fnmatch.fnmatchcase(name, pat.name):
                            self._conf_file(pat.parent / name, dirs, depth + 1)
            elif words[0] != "hwcap":
                dirs.extend(d for d in re.split(r"[\s:,=]+", line) if d.startswith("/"))


def _expand(entries: Iterable[str], origin: PurePosixPath | None) -> list[str]:
    """RPATH/RUNPATH entries with $ORIGIN, $LIB and $PLATFORM replaced; $ORIGIN ones dropped without origin."""
    values = {**_TOKENS, "ORIGIN": str(origin)}

    def token(m: re.Match[str]) -> str:
        return values.get(m.group(1) or m.group(2), m.group(0))

    return [re.sub(r"\$(?:\{(\w+)\}|(\w+))", token, entry) for entry in entries
            if origin is not None or not re.search(r"\$(\{ORIGIN\}|ORIGIN)", entry)]


# --- roots ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Root:
    """An object of the package the walk starts from (bin/ollama, a backend, any .so it ships)."""

    path: str  # inside the package: "lib/ollama/rocm/libggml-hip.so"
    # Package folders the loader searches for this object's needs at run time (LD_LIBRARY_PATH).
    search: tuple[str, ...] = ()
    # Package folder its bundled libraries go to (one of `search`); None: none can be bundled for it.
    bundle_into: str | None = None

    def __post_init__(self) -> None:
        if self.bundle_into is not None and self.bundle_into not in self.search:
            raise ValueError(f"{self.path}: bundle_into {self.bundle_into!r} is not searched at run time "
                             f"(search: {', '.join(self.search) or 'nothing'})")


def ollama_roots(package: Path, *, binary: str = "bin/ollama", libdir: str = "lib/ollama") -> list[Root]:
    """The roots of an Ollama package: bin/ollama, and every shared object under lib/ollama.

    bin/ollama is started by the user, without LD_LIBRARY_PATH and without RPATH: all it needs must
    be provided by the system. Its runner processes get lib/ollama and lib/ollama/<runner>, so a
    backend in lib/ollama/<runner>/ gets its libraries bundled beside it, and one in lib/ollama (the
    CPU variants, libggml-base.so) into lib/ollama. Only ELF shared objects for bin/ollama's machine
    count: the GPU code objects of rocblas/library are ELF files too, for EM_AMDGPU.
    """
    package = Path(package)
    roots: list[Root] = []
    machine = "EM_X86_64"
    exe = package / binary
    if exe.is_file():
        info = read_elf(exe)
        if info is None:
            raise ClosureError(f"{binary} in {package} is not an ELF file")
        machine = info.machine
        roots.append(Root(path=binary))
    base = package / libdir
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(filenames):
            file = Path(dirpath) / name
            if file.is_symlink() or not file.is_file():
                continue  # a link's target is a file of its own, walked there
            info = read_elf(file)
            if info is None or info.type != "ET_DYN" or info.machine != machine:
                continue
            rel = file.relative_to(package)
            under = rel.relative_to(libdir).parts
            if len(under) > 1:
                runner = f"{libdir}/{under[0]}"
                roots.append(Root(path=rel.as_posix(), search=(runner, libdir), bundle_into=runner))
            else:
                roots.append(Root(path=rel.as_posix(), search=(libdir,), bundle_into=libdir))
    return roots


# --- the walk ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Bundle:
    soname: str
    dest: str  # inside the package: "lib/ollama/rocm/libdrm.so.2"
    found_at: str  # where the builder image has it: "/usr/lib/x86_64-linux-gnu/libdrm.so.2"
    source: Path  # the file copied, links resolved inside the sysroot
    needed_by: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class VersionUse:
    version: str  # "GLIBC_2.34"
    object: str  # the package path of the object that needs it
    library: str  # the library it needs it from: "libc.so.6"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Closure:
    policy: Policy
    # Every ELF object the package ships once bundles are installed, by package path.
    objects: tuple[str, ...]
    bundles: tuple[Bundle, ...]
    # soname -> the objects needing it, for each way a need was met (or not).
    in_package: Mapping[str, tuple[str, ...]]
    system: Mapping[str, tuple[str, ...]]
    driver: Mapping[str, tuple[str, ...]]
    missing: Mapping[str, tuple[str, ...]]
    # The highest version needed from system libraries per prefix (GLIBC, GLIBCXX, ...).
    max_versions: Mapping[str, VersionUse]
    too_new: tuple[VersionUse, ...]
    problems: tuple[str, ...]

    def check(self) -> None:
        if self.problems:
            n = len(self.problems)
            raise ClosureError(f"library closure under policy {self.policy.name!r}: {n} problem"
                               f"{'s' if n > 1 else ''}:\n" + "\n".join(f"  - {p}" for p in self.problems),
                               self)

    def summary(self) -> list[str]:
        """Log lines: what is bundled from where, what the system and the driver must provide."""
        lines = [f"{b.dest} <- {b.found_at} (needed by {', '.join(b.needed_by)})" for b in self.bundles]
        for what, table in (("system", self.system), ("driver", self.driver)):
            if table:
                lines.append(f"from the {what}: {', '.join(sorted(table))}")
        for prefix, use in sorted(self.max_versions.items()):
            lines.append(f"highest {prefix}: {use.version} (from {use.library}, needed by {use.object}; "
                         f"policy {self.policy.name} allows {self.policy.max_versions.get(prefix, 'any')})")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record for the manifest."""
        return {
            "policy": self.policy.name,
            "bundled": [{"soname": b.soname, "path": b.dest, "from": b.found_at,
                         "needed_by": list(b.needed_by)} for b in self.bundles],
            "system": {k: list(v) for k, v in sorted(self.system.items())},
            "driver": {k: list(v) for k, v in sorted(self.driver.items())},
            "max_versions": {k: {"version": v.version, "object": v.object, "library": v.library}
                             for k, v in sorted(self.max_versions.items())},
        }


@dataclasses.dataclass(slots=True)
class _Item:
    name: str  # package path
    info: ElfInfo
    search: tuple[str, ...]
    bundle_into: str | None
    origin: PurePosixPath | None  # its folder inside the sysroot (bundled objects only)


def walk(package: Path, roots: Sequence[Root], resolver: Resolver, policy: Policy, *,
         check: bool = True) -> Closure:
    """The closure of `roots` (objects inside `package`); raises ClosureError on problems when `check`."""
    package = Path(package)
    problems: list[str] = []
    objects: dict[str, ElfInfo] = {}
    walked: set[Path] = set()  # real files already walked
    planned: dict[tuple[str, str], dict[str, Any]] = {}  # (folder, soname) -> bundle fields
    tables: dict[str, dict[str, list[str]]] = {k: {} for k in ("in_package", "system", "driver", "missing")}
    searched: dict[str, list[PurePosixPath]] = {}
    never = set(policy.never_bundle)

    def note(table: str, soname: str, who: str) -> None:
        needers = tables[table].setdefault(soname, [])
        if who not in needers:
            needers.append(who)

    # Shallow folders first, so that a library both lib/ollama and lib/ollama/rocm need lands once,
    # in lib/ollama, where both find it.
    ordered = sorted(roots, key=lambda r: (r.bundle_into is not None, (r.bundle_into or "").count("/"), r.path))
    queue: list[_Item] = []
    for root in ordered:
        file = package / root.path
        if not file.is_file():
            raise ClosureError(f"root {root.path} is not a file in {package}")
        real = file.resolve()
        if real in walked:
            continue
        info = read_elf(file)
        if info is None:
            raise ClosureError(f"root {root.path} in {package} is not an ELF file")
        walked.add(real)
        queue.append(_Item(root.path, info, root.search, root.bundle_into, None))
        while queue:  # depth-first: one root's closure is complete before the next root starts
            item = queue.pop()
            objects[item.name] = item.info
            pkg_dirs = list(item.search)
            if item.origin is None:  # an object of the package: $ORIGIN is its package folder
                pkg_dirs += [d for d in _origin_dirs(item) if d not in pkg_dirs]
            bundle_into = item.bundle_into or next((d for d in pkg_dirs if d not in item.search), None)
            for soname in item.info.needed:
                if soname in never:
                    note("driver", soname, item.name)
                    continue
                hit = _in_package(package, pkg_dirs, soname, item.name, problems)
                if hit is not None:
                    rel, folder = hit
                    note("in_package", soname, item.name)
                    real = (package / rel).resolve()
                    if real not in walked and real.is_relative_to(package.resolve()):
                        walked.add(real)
                        dep = read_elf(real)
                        if dep is not None:
                            # It lives in `folder`: it sees that folder and those searched after it.
                            search = item.search[item.search.index(folder):] if folder in item.search \
                                else (folder,)
                            queue.append(_Item(rel, dep, search, folder, None))
                    continue
                key = next(((d, soname) for d in pkg_dirs if (d, soname) in planned), None)
                if key is not None:
                    if item.name not in planned[key]["needed_by"]:
                        planned[key]["needed_by"].append(item.name)
                    continue
                if soname in policy.provided:
                    note("system", soname, item.name)
                    continue
                found = resolver.find(soname, item.info, item.origin)
                if found is None:
                    note("missing", soname, item.name)
                    searched.setdefault(soname, resolver.search_path(item.info, item.origin))
                    continue
                if bundle_into is None:
                    problems.append(
                        f"{item.name} needs {soname} (in the builder image at {found.path}), which the "
                        f"{policy.name} runtime does not provide; {item.name} is started without "
                        "LD_LIBRARY_PATH and has no RUNPATH into the package, so a bundled copy would not "
                        "be found: link it statically, or add it to the policy if every system has it")
                    continue
                dest = f"{bundle_into}/{soname}"
                planned[(bundle_into, soname)] = {
                    "soname": soname, "dest": dest, "found_at": str(found.path), "source": found.file,
                    "needed_by": [item.name]}
                search = item.search if bundle_into in item.search else (bundle_into,)
                queue.append(_Item(dest, found.info, search, bundle_into, found.path.parent))

    for soname, needers in tables["missing"].items():
        dirs = ", ".join(str(d) for d in searched[soname])
        problems.append(f"{soname} not found in the builder image (searched {dirs}); needed by "
                        f"{', '.join(needers)}")

    # Driver libraries must not be in the package: a copy there would shadow the host driver's.
    folders = {d for r in roots for d in r.search}
    for name, info in objects.items():
        if PurePosixPath(name).name in never or info.soname in never:
            problems.append(f"{name} is in the package, but policy {policy.name} never bundles "
                            f"{info.soname or PurePosixPath(name).name}: it comes with the driver")
    for folder in sorted(folders):
        for soname in sorted(never):
            rel = f"{folder}/{soname}"
            if os.path.lexists(package / rel) and rel not in objects:
                problems.append(f"{rel} is in the package, but policy {policy.name} never bundles "
                                f"{soname}: it comes with the driver")

    max_versions, too_new = _versions(objects, policy)
    for use in too_new:
        prefix = use.version.rpartition("_")[0]
        problems.append(f"{use.object} needs {use.version} from {use.library}, newer than policy "
                        f"{policy.name} allows ({prefix}_{policy.max_versions[prefix]}): build it on an "
                        "older base, or choose a policy with a newer floor")

    closure = Closure(
        policy=policy,
        objects=tuple(sorted(objects)),
        bundles=tuple(Bundle(soname=b["soname"], dest=b["dest"], found_at=b["found_at"], source=b["source"],
                             needed_by=tuple(b["needed_by"])) for _, b in sorted(planned.items())),
        **{k: {s: tuple(v) for s, v in sorted(t.items())} for k, t in tables.items()},
        max_versions=max_versions,
        too_new=tuple(too_new),
        problems=tuple(problems),
    )
    if check:
        closure.check()
    return closure


def _origin_dirs(item: _Item) -> list[str]:
    """Package folders named by an object's RUNPATH (or RPATH) through $ORIGIN."""
    here = PurePosixPath(item.name).parent
    out = []
    for entry in _expand([e for e in (item.info.runpath or item.info.rpath) if "ORIGIN" in e], here):
        rel = posixpath.normpath(entry)
        if rel != ".." and not rel.startswith(("../", "/")):
            out.append(rel)
    return out


def _in_package(package: Path, dirs: Iterable[str], soname: str, who: str,
                problems: list[str]) -> tuple[str, str] | None:
    for d in dirs:
        rel = f"{d}/{soname}"
        path = package / rel
        if path.exists():
            return rel, d
        if os.path.lexists(path):
            problems.append(f"{rel} (needed by {who}) is a link to {os.readlink(path)}, which does not exist")
    return None


def _versions(objects: Mapping[str, ElfInfo], policy: Policy) -> tuple[dict[str, VersionUse], list[VersionUse]]:
    best: dict[str, tuple[tuple[int, ...], VersionUse]] = {}
    worst: dict[tuple[str, str, str], VersionUse] = {}
    provided = set(policy.provided)
    for name, info in sorted(objects.items()):
        for library, version in info.version_needs:
            if library not in provided:
                continue  # versions of bundled libraries are satisfied by the copy shipped with them
            prefix, _, number = version.rpartition("_")
            if prefix not in policy.max_versions:
                continue
            use = VersionUse(version, name, library)
            if not policy.allows(version):
                worst[(name, library, prefix)] = max(worst.get((name, library, prefix), use), use,
                                                     key=lambda u: _vkey_or_top(u.version))
            if _NUMERIC.fullmatch(number) and (prefix not in best or _vkey(number) > best[prefix][0]):
                best[prefix] = (_vkey(number), use)
    return {p: u for p, (_, u) in sorted(best.items())}, [worst[k] for k in sorted(worst)]


def _vkey_or_top(version_name: str) -> tuple[int, ...]:
    number = version_name.rpartition("_")[2]
    return _vkey(number) if _NUMERIC.fullmatch(number) else (1 << 30,)


# --- convenience --------------------------------------------------------------------------------


def compute(package: Path, sysroot: Path, policy: Policy | str, *, library_path: Sequence[str] = (),
            check: bool = True) -> Closure:
    """The closure of an Ollama package (bin/ollama + lib/ollama) resolved inside `sysroot`."""
    if isinstance(policy, str):
        policy = load_policy(policy)
    resolver = Resolver(sysroot, library_path=library_path)
    return walk(package, ollama_roots(package), resolver, policy, check=check)


def install(closure: Closure, package: Path) -> list[Path]:
    """Copy the closure's bundles into the package; returns the files written."""
    package = Path(package)
    written = []
    for bundle in closure.bundles:
        dest = package / bundle.dest
        if os.path.lexists(dest):
            raise ClosureError(f"{bundle.dest} already exists in {package}; not replacing it with "
                               f"{bundle.found_at}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundle.source, dest)
        dest.chmod(0o644)
        written.append(dest)
    return written
