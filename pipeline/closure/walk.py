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

A policy is data, pipeline/config/policies/<name>.toml, read into a frozen `Policy` with the same typed loader
and messages as targets.toml. The package stage resolves a build's closure inside its builder image
(pipeline.closure.sysroot) and adds the bundles to the archive's entries.
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.closure.elf import ElfInfo, read_elf
from pipeline.closure.loads import Inventory
from pipeline.closure.resolver import Resolver, expand
from pipeline.config.policy import NUMERIC, Policy, load_policy, vkey
from pipeline.errors import ClosureError
from pipeline.formats import PackageLayout
from pipeline.records import record

# --- roots ------------------------------------------------------------------------------------


@record
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


def ollama_roots(package: Path, *, binary: str = PackageLayout.BIN,
                 libdir: str = PackageLayout.LIBDIR) -> list[Root]:
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


@record
class Bundle:
    soname: str
    dest: str  # inside the package: "lib/ollama/rocm/libdrm.so.2"
    found_at: str  # where the builder image has it: "/usr/lib/x86_64-linux-gnu/libdrm.so.2"
    source: Path  # the file copied, links resolved inside the sysroot
    needed_by: tuple[str, ...]


@record(positional=True)
class VersionUse:
    version: str  # "GLIBC_2.34"
    object: str  # the package path of the object that needs it
    library: str  # the library it needs it from: "libc.so.6"


@record
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
    # soname -> the runtimes that open it with dlopen (runtime-loads.toml, use "required"): bundled or
    # in the package like a DT_NEEDED library.
    opened: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    # object -> what it may open at run time that the package leaves out ("soname: what", use optional).
    optional: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    # Needs of objects on a system library that a carried copy in the package meets (policy.carry).
    carried: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    # Needs on a carried copy that the copy does not define.
    uncovered: tuple[VersionUse, ...] = ()
    # What the version check reads: each object's ELF and the package folders its loader searches.
    infos: Mapping[str, ElfInfo] = dataclasses.field(default_factory=dict)
    search: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def version_problems(self) -> list[str]:
        out = [f"{use.object} needs {use.version} from {use.library}, which the copy of it the package "
               "carries does not define" for use in self.uncovered]
        for use in self.too_new:
            prefix = use.version.rpartition("_")[0]
            cap = f"{prefix}_{self.policy.max_versions.get(prefix)}"
            out.append(f"{use.object} needs {use.version} from {use.library}, newer than policy "
                       f"{self.policy.name} allows ({cap}): build it on an older base, or choose a policy "
                       "with a newer floor")
        return out

    def check(self, *, versions: bool = True) -> None:
        """Raise ClosureError naming every problem (without `versions`: leave the symbol versions to a
        later check, after the floor pass has lowered them)."""
        problems = [*self.problems, *(self.version_problems() if versions else ())]
        if len(problems) == 1:
            raise ClosureError(f"library closure under policy {self.policy.name!r}: {problems[0]}", self)
        if problems:
            raise ClosureError(f"library closure under policy {self.policy.name!r}: {len(problems)} "
                               "problems:\n" + "\n".join(f"  - {p}" for p in problems), self)

    def summary(self) -> list[str]:
        """Log lines: what is bundled from where, what the system and the driver must provide, what the
        package leaves out of what its runtimes may open."""
        lines = []
        for b in self.bundles:
            opens = [o for o in self.opened.get(b.soname, ()) if o in b.needed_by]
            how = (f"opened at run time by {', '.join(opens)}" if opens
                   else f"needed by {', '.join(b.needed_by)}")
            lines.append(f"{b.dest} <- {b.found_at} ({how})")
        for soname, needers in sorted(self.carried.items()):
            lines.append(f"carried: {soname} of the builder, for {', '.join(needers)}")
        for what, table in (("system", self.system), ("driver", self.driver)):
            if table:
                lines.append(f"from the {what}: {', '.join(sorted(table))}")
        for obj, loads in sorted(self.optional.items()):
            lines.append(f"optional at run time, not bundled, for {obj}: {'; '.join(loads)}")
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
            "opened_at_run_time": {k: list(v) for k, v in sorted(self.opened.items())},
            "optional_at_run_time": {k: list(v) for k, v in sorted(self.optional.items())},
            "carried": {k: list(v) for k, v in sorted(self.carried.items())},
            "system": {k: list(v) for k, v in sorted(self.system.items())},
            "driver": {k: list(v) for k, v in sorted(self.driver.items())},
            "max_versions": {k: {"version": v.version, "object": v.object, "library": v.library}
                             for k, v in sorted(self.max_versions.items())},
        }


@record(positional=True, frozen=False)
class _Item:
    name: str  # package path
    info: ElfInfo
    search: tuple[str, ...]
    bundle_into: str | None
    origin: PurePosixPath | None  # its folder inside the sysroot (bundled objects only)


def walk(package: Path, roots: Sequence[Root], resolver: Resolver, policy: Policy, *,
         inventory: Inventory | None = None, check: bool = True) -> Closure:
    """The closure of `roots` (objects inside `package`); raises ClosureError on problems when `check`.
    `inventory`: what runtimes open with dlopen (runtime-loads.toml); a required one is followed like a
    DT_NEEDED entry of the runtime that opens it."""
    package = Path(package)
    problems: list[str] = []
    objects: dict[str, ElfInfo] = {}
    searches: dict[str, tuple[str, ...]] = {}
    walked: set[Path] = set()  # real files already walked
    planned: dict[tuple[str, str], dict[str, Any]] = {}  # (folder, soname) -> bundle fields
    tables: dict[str, dict[str, list[str]]] = {k: {} for k in ("in_package", "system", "driver", "missing",
                                                             "opened")}
    optional: dict[str, list[str]] = {}
    reasons: dict[str, str] = {}  # soname opened at run time -> why, for a message when it is missing
    searched: dict[str, list[PurePosixPath]] = {}
    never = set(policy.never_bundle) | (set(inventory.driver_sonames()) if inventory else set())

    def note(table: str, soname: str, who: str) -> None:
        needers = tables[table].setdefault(soname, [])
        if who not in needers:
            needers.append(who)

    # Shallow folders first, so that a library both lib/ollama and lib/ollama/rocm need lands once,
    # in lib/ollama, where both find it.
    ordered = sorted(roots, key=lambda r: (r.bundle_into is not None, (r.bundle_into or "").count("/"),
                                           r.path))
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
            searches[item.name] = tuple(pkg_dirs)
            bundle_into = item.bundle_into or next((d for d in pkg_dirs if d not in item.search), None)
            runtime = item.info.soname or PurePosixPath(item.name).name
            needs = list(item.info.needed)
            if inventory is not None:
                for load in inventory.opens(runtime, "required"):
                    reasons[load.soname] = load.reason
                    note("opened", load.soname, item.name)
                    if load.soname not in needs:
                        needs.append(load.soname)
                for load in inventory.opens(runtime, "optional"):
                    optional.setdefault(item.name, []).append(f"{load.soname}: {load.what}")
            for soname in needs:
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
                if soname in policy.provided and not (
                        soname in policy.carry and bundle_into is not None and _wants_newer(item.info, soname,
                                                                                            policy)):
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
        if soname in reasons:
            opener = ", ".join(tables["opened"][soname])
            problems.append(f"{soname} is opened at run time by {opener} ({reasons[soname]}), and the "
                            f"builder image has none (searched {dirs}): install the package that ships it "
                            "there (runtime-loads.toml names it)")
        else:
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

    closure = Closure(
        policy=policy,
        objects=tuple(sorted(objects)),
        bundles=tuple(Bundle(soname=b["soname"], dest=b["dest"], found_at=b["found_at"], source=b["source"],
                             needed_by=tuple(b["needed_by"])) for _, b in sorted(planned.items())),
        **{k: {s: tuple(v) for s, v in sorted(tables[k].items())}
           for k in ("in_package", "system", "driver", "missing", "opened")},
        optional={k: tuple(v) for k, v in sorted(optional.items())},
        max_versions={}, too_new=(), problems=tuple(problems),
        infos=objects, search=searches,
    )
    closure = revise(closure, {})
    if check:
        closure.check()
    return closure


def revise(closure: Closure, changed: Mapping[str, ElfInfo],
           search: Mapping[str, tuple[str, ...]] | None = None) -> Closure:
    """The closure with the ELF of some objects read again (what the floor pass rewrote, and objects it
    added, with the package folders their loader searches): the symbol versions are checked anew, the
    rewritten references read as what they are now."""
    infos = {**closure.infos, **changed}
    searches = {**closure.search, **(search or {})}
    max_versions, too_new, carried, uncovered = _versions(infos, searches, closure.policy)
    return dataclasses.replace(closure, objects=tuple(sorted(infos)), infos=infos, search=searches,
                               max_versions=max_versions, too_new=tuple(too_new), carried=carried,
                               uncovered=tuple(uncovered))


def _wants_newer(info: ElfInfo, soname: str, policy: Policy) -> bool:
    """Whether `info` needs a version of `soname` that the policy's floor lacks."""
    return any(library == soname and not policy.allows(version) for library, version in info.version_needs)


def _origin_dirs(item: _Item) -> list[str]:
    """Package folders named by an object's RUNPATH (or RPATH) through $ORIGIN."""
    here = PurePosixPath(item.name).parent
    out = []
    for entry in expand([e for e in (item.info.runpath or item.info.rpath) if "ORIGIN" in e], here):
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


def _versions(objects: Mapping[str, ElfInfo], searches: Mapping[str, tuple[str, ...]],
              policy: Policy) -> tuple[dict[str, VersionUse], list[VersionUse], dict[str, tuple[str, ...]],
                                       list[VersionUse]]:
    """The highest version per prefix needed from the system, the needs the floor lacks, which objects'
    needs on a system library a carried copy meets (it lies in a folder their loader searches), and the
    needs such a copy does not define."""
    best: dict[str, tuple[tuple[int, ...], VersionUse]] = {}
    worst: dict[tuple[str, str, str], VersionUse] = {}
    provided = set(policy.provided)
    copies = {(posixpath.dirname(name), posixpath.basename(name)): info for name, info in objects.items()
              if posixpath.basename(name) in policy.carry}
    carried: dict[str, list[str]] = {}
    uncovered: list[VersionUse] = []
    for name, info in sorted(objects.items()):
        for library, version in info.version_needs:
            if library not in provided:
                continue  # versions of bundled libraries are satisfied by the copy shipped with them
            prefix, _, number = version.rpartition("_")
            copy = next((copies[(d, library)] for d in searches.get(name, ()) if (d, library) in copies),
                        None)
            if copy is not None:
                if name not in carried.setdefault(library, []):
                    carried[library].append(name)
                if version not in copy.version_defs:
                    uncovered.append(VersionUse(version, name, library))
                continue
            if prefix not in policy.max_versions:
                continue
            use = VersionUse(version, name, library)
            if not policy.allows(version):
                worst[(name, library, prefix)] = max(worst.get((name, library, prefix), use), use,
                                                     key=lambda u: _vkey_or_top(u.version))
            if NUMERIC.fullmatch(number) and (prefix not in best or vkey(number) > best[prefix][0]):
                best[prefix] = (vkey(number), use)
    return ({p: u for p, (_, u) in sorted(best.items())}, [worst[k] for k in sorted(worst)],
            {k: tuple(v) for k, v in sorted(carried.items())}, uncovered)


def _vkey_or_top(version_name: str) -> tuple[int, ...]:
    number = version_name.rpartition("_")[2]
    return vkey(number) if NUMERIC.fullmatch(number) else (1 << 30,)


# --- convenience --------------------------------------------------------------------------------


def compute(package: Path, sysroot: Path, policy: Policy | str, *, library_path: Sequence[str] = (),
            inventory: Inventory | None = None, check: bool = True) -> Closure:
    """The closure of an Ollama package (bin/ollama + lib/ollama) resolved inside `sysroot`."""
    if isinstance(policy, str):
        policy = load_policy(policy)
    resolver = Resolver(sysroot, library_path=library_path)
    return walk(package, ollama_roots(package), resolver, policy, inventory=inventory, check=check)

