"""What the bundled GPU runtimes open with dlopen at run time, as data (runtime-loads.toml).

A DT_NEEDED walk cannot see these: Debian's libamdhip64.so.6 opens libamd_comgr.so.3 with dlopen when it
creates a GPU device, and without comgr it creates none (a GPU host then sees no device at all); a
CPU-only verify never gets that far. The inventory names, per runtime library, each library it opens
and how the package treats it (`use`): required (bundled and walked; packaging fails without it),
optional (profilers, tracers, interop: named, never bundled), driver (the host's: never bundled) and
never (named in the binary, opened by no code path of the build). The closure walk reads it.

    inventory = load_inventory()
    inventory.opens("libamdhip64.so.6", "required")   # (Load(libamd_comgr.so.3 ...),)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from pipeline.config import loader
from pipeline.config.paths import RUNTIME_LOADS
from pipeline.records import record

USES = ("required", "optional", "driver", "never")
_SONAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]*\.so(\.[0-9A-Za-z_]+)*")


@record
class Load:
    """One library a runtime opens at run time."""

    # A soname; an optional or driver load may name a variable ($HSA_TOOLS_LIB) or describe what it
    # opens in parentheses instead.
    soname: str
    use: str
    reason: str
    evidence: tuple[str, ...]
    # What an optional load is (profiler, tracer, interop, an unused API).
    what: str = ""

    def __post_init__(self) -> None:
        if self.use not in USES:
            raise ValueError(f"use {self.use!r} is not one of {', '.join(USES)}")
        if self.use in ("required", "never") and not _SONAME.fullmatch(self.soname):
            raise ValueError(f"a {self.use} load names a soname, not {self.soname!r}")
        if self.use == "optional" and not self.what:
            raise ValueError(f"optional load {self.soname!r}: say what it is (key 'what': profiler, ...)")
        if not self.reason or not self.evidence:
            raise ValueError(f"load {self.soname!r}: reason and evidence are required")

    @property
    def is_soname(self) -> bool:
        return bool(_SONAME.fullmatch(self.soname))


@record
class Runtime:
    """A runtime library (by soname), where it comes from, and what it opens."""

    soname: str
    package: str
    source: str
    loads: tuple[Load, ...] = ()
    # Data files it reads at run time (for the record; the package stage handles them elsewhere).
    data: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _SONAME.fullmatch(self.soname):
            raise ValueError(f"soname {self.soname!r} is not a soname")
        if not self.package or not self.source:
            raise ValueError(f"{self.soname}: package and source are required")


@record
class Inventory:
    runtime: tuple[Runtime, ...] = ()

    def __post_init__(self) -> None:
        seen = [r.soname for r in self.runtime]
        twice = sorted({s for s in seen if seen.count(s) > 1})
        if twice:
            raise ValueError(f"runtime {twice[0]!r} is listed twice")

    @property
    def by_soname(self) -> Mapping[str, Runtime]:
        return {r.soname: r for r in self.runtime}

    def opens(self, soname: str, use: str) -> tuple[Load, ...]:
        """What the runtime `soname` opens, of one use; () for a library that is no runtime here."""
        found = self.by_soname.get(soname)
        return tuple(ld for ld in found.loads if ld.use == use) if found else ()

    def driver_sonames(self) -> frozenset[str]:
        """Driver libraries the runtimes open by soname: never bundled."""
        return frozenset(ld.soname for r in self.runtime for ld in r.loads
                         if ld.use == "driver" and ld.is_soname)


def load_inventory(path: Path = RUNTIME_LOADS) -> Inventory:
    """The inventory file, read with the typed loader (one line naming the file and key on a mistake)."""
    return loader.build(Inventory, loader.read(path, "run-time load inventory"), f"{path}:")
