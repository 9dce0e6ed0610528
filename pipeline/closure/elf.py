"""ELF reading for the library closure: what the dynamic loader reads from a file (pyelftools, never ldd)."""

from __future__ import annotations

from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection, DynamicSegment
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerDefSection, GNUVerNeedSection

from pipeline.errors import ClosureError
from pipeline.records import record


@record
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
    # The versions it defines (.gnu.version_d, without its own soname's base entry): GLIBCXX_3.4.32, ...
    version_defs: tuple[str, ...] = ()


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
            defs: list[str] = []
            for section in elf.iter_sections():
                if isinstance(section, GNUVerNeedSection):
                    for verneed, auxes in section.iter_versions():
                        versions.extend((verneed.name, aux.name) for aux in auxes)
                elif isinstance(section, GNUVerDefSection):
                    for verdef, auxes in section.iter_versions():
                        first = next(iter(auxes), None)
                        if first is not None and not verdef["vd_flags"] & 1:  # VER_FLG_BASE: the soname
                            defs.append(first.name)
            return ElfInfo(path=path, elf_class=elf.elfclass, machine=elf.header["e_machine"],
                           type=elf.header["e_type"], soname=soname, needed=tuple(needed),
                           rpath=tuple(rpath), runpath=tuple(runpath), version_needs=tuple(versions),
                           version_defs=tuple(defs))
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
