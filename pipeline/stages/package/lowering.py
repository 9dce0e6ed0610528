"""The glibc floor pass applied to a package's files, where the library policy has one ([floor_pass]).

Every ELF of the package whose glibc references lie above the floor (the ROCm libraries of Debian
unstable, libggml-hip.so, the carried libstdc++.so.6) is copied into the scratch folder and lowered
there by pipeline.closure.floor (never in the build cache or the sysroot); bin/ollama and the CPU
backends, built on the host builder's floor, need nothing. The compatibility library, compiled from
pipeline/closure/compat/ in the host builder (its glibc must be the floor's), goes into each folder
holding an object that needs it. Afterwards every ELF of the package is read again as the loader
would (floor.check_file) and the closure's symbol versions are checked anew: a retargeted reference
against the floor's glibc, a compat one against the compatibility library's exports.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from pathlib import Path
from typing import Any

from pipeline.closure import floor
from pipeline.closure.elf import read_elf
from pipeline.closure.floor import FileRecord, GlibcTable
from pipeline.closure.walk import Closure, revise
from pipeline.config.paths import COMPAT_SOURCE
from pipeline.config.policy import Policy
from pipeline.config.settings import Settings
from pipeline.errors import ClosureError
from pipeline.formats import PackageLayout
from pipeline.hashing import file_sha256
from pipeline.infra import ctools
from pipeline.infra.log import Log
from pipeline.records import record

COMPILER = ("gcc", "-std=gnu11", "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-Wall", "-Wextra",
            "-Werror", f"-Wl,-soname,{floor.COMPAT_SONAME}", "-Wl,-z,defs", "-Wl,--hash-style=both",
            "-o", "{out}", "{src}")


@record
class Lowered:
    """What the pass did to a package: its entries after, the closure read anew, per-file records."""

    entries: list[tuple[str, Path]]
    closure: Closure
    records: dict[str, FileRecord]
    floor: GlibcTable
    # The compatibility library: soname, sha256, the folders it went into, what it exports.
    compat: dict[str, Any]


def compat_library(host_image: str, policy: Policy, settings: Settings, log: Log) -> Path:
    """libollama-glibc-compat.so.1, compiled in the host builder, whose glibc must be the floor's."""
    return ctools.build(floor.COMPAT_SONAME, host_image, COMPAT_SOURCE, COMPILER, settings, log,
                        glibc=policy.glibc)


def lower(entries: list[tuple[str, Path]], closure: Closure, policy: Policy, host_image: str, scratch: Path,
          settings: Settings, log: Log) -> Lowered:
    """Lower `entries` (package path, file) to the policy's floor; raises ClosureError with every
    refusal or problem left."""
    assert policy.floor_pass is not None
    table = floor.load_table(policy.floor_pass.glibc)
    newer = floor.load_table(policy.floor_pass.newer) if policy.floor_pass.newer else None
    rules = floor.load_abi_changes()
    compat = compat_library(host_image, policy, settings, log)
    exports = floor.check_compat(compat, table)
    elves = [(rel, path) for rel, path in entries if _is_object(rel, path)]
    log.line(f"glibc floor pass: {len(elves)} ELF files against {table.label}"
             + (f", checked against {newer.label} too" if newer else ""))
    todo: dict[str, Path] = {}
    problems: list[str] = []
    for rel, path in elves:
        try:
            plan = floor.plan_file(path, table, compat=exports, rules=rules, newer=newer, name=rel)
        except ClosureError as exc:
            problems.append(str(exc))
            continue
        if plan.changed or plan.add_needed:
            todo[rel] = path
    if problems:
        raise ClosureError("the glibc floor pass refuses:\n" + "\n".join(f"  - {p}" for p in problems))
    copies: dict[str, Path] = {}
    for rel, path in todo.items():
        if path.resolve().is_relative_to(scratch.resolve()):
            copies[rel] = path  # a copy of this package's already (GPU code stripped): lowered in place
            continue
        dest = scratch / "floor" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        copies[rel] = dest
    records = floor.treat(copies, table, compat_library=compat, rules=rules, log=log, newer=newer)
    for rel, rec in records.items():
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(rec.counts().items())) or "version needs only"
        log.line(f"{rel}: {kinds}; added {', '.join(rec.added_needed) or 'nothing'}"
                 + (f"; GPU code unchanged ({', '.join(rec.gpu_code)})" if rec.gpu_code else ""))

    out = [(rel, copies.get(rel, path)) for rel, path in entries]
    folders = sorted({posixpath.dirname(rel) for rel, rec in records.items()
                      if floor.COMPAT_SONAME in rec.added_needed})
    have = {rel for rel, _ in out}
    for folder in folders:
        if f"{folder}/{floor.COMPAT_SONAME}" not in have:
            out.append((f"{folder}/{floor.COMPAT_SONAME}", compat))
    out.sort()

    # The closure names an object by the path it reached it at: often a link the build installed
    # (upstream's ROCm install puts librocblas.so.4 -> librocblas.so.4.4 beside the file). Each name is
    # read again from the lowered file it leads to; a lowered file the closure knows by no name is added.
    links = {rel: path for rel, path in entries if path.is_symlink()}
    changed = {}
    for name in closure.infos:
        target = _follow(name, links)
        if target in copies:
            changed[name] = read_elf(copies[target])
    for rel, path in copies.items():
        if not any(_follow(name, links) == rel for name in changed):
            changed[rel] = read_elf(path)
    search = {}
    for folder in folders:
        rel = f"{folder}/{floor.COMPAT_SONAME}"
        changed[rel] = read_elf(compat)
        search[rel] = (folder, PackageLayout.LIBDIR) if folder != PackageLayout.LIBDIR else (folder,)
    revised = revise(closure, changed, search)
    left = [p for rel, path in out if _is_object(rel, path)
            for p in floor.check_file(path, table, compat=exports, newer=newer, name=rel)]
    if left:
        raise ClosureError("after the glibc floor pass:\n" + "\n".join(f"  - {p}" for p in left))
    for line in revised.summary():
        if line.startswith("highest "):
            log.line(f"after the floor pass: {line}")
    revised.check()
    return Lowered(entries=out, closure=revised, records=records, floor=table,
                   compat={"soname": floor.COMPAT_SONAME, "sha256": file_sha256(compat),
                           "folders": folders, "exports": sorted(exports)})


def _follow(rel: str, links: dict[str, Path]) -> str:
    """The package path a package path leads to through the package's own links (`links`: package path
    -> the link in the build), relative targets as the archive keeps them."""
    seen = set()
    while rel in links and rel not in seen:
        seen.add(rel)
        rel = posixpath.normpath(posixpath.join(posixpath.dirname(rel), os.readlink(links[rel])))
    return rel


def _is_object(rel: str, path: Path) -> bool:
    """An x86-64 ELF file of the package (bin/ollama, lib/ollama/...), not a GPU code object or a link."""
    if path.is_symlink() or not path.is_file() or "/library/" in rel:
        return False
    if rel != PackageLayout.BIN and not rel.startswith(f"{PackageLayout.LIBDIR}/"):
        return False
    return floor.is_candidate(path)
