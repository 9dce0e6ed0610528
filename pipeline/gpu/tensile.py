"""rocBLAS Tensile files: only those of the archs the runtime asks for (runtime.archs) are kept.

A 780M under HSA_OVERRIDE_GFX_VERSION=11.0.0 asks for gfx1100, an MI50 for gfx906: Debian's Tensile
folder (2.9 GB, every arch) shrinks to the served arch and the arch-neutral files. The one rule, kept
at every step that sees the files (the naming is pipeline.gpu.rocm's):

* the builder image deletes the files no target of the builder serves (`shell_command`);
* the build drops those its target does not serve from its output (`drop`), unless a served arch has
  none at all, so that packaging refuses it with the reason;
* packaging keeps only the served archs' files and refuses a build without one of them (`prune`);
* verification checks that every served arch has its files and its GPU code (`coverage`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from pipeline.errors import PackageError
from pipeline.gpu import rocm


def unserved(paths: Iterable[str], serves: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Split package paths by the archs a runtime asks for: (Tensile kernel files of other archs, served
    archs without a single Tensile file). Arch-neutral files and non-Tensile files are never listed; a
    build without Tensile files misses nothing."""
    other, seen = [], set()
    for path in paths:
        arch = rocm.tensile_arch(path)
        if arch is not None:
            seen.add(arch)
            if arch not in serves:
                other.append(path)
    return other, ([a for a in serves if a not in seen] if seen else [])


def shell_command(serves: tuple[str, ...], roots: tuple[str, ...] = ("/usr",)) -> str:
    """A shell command deleting, under `roots`, the Tensile kernel files of every arch but `serves` (in
    a Debian builder image, where Debian installs ROCm)."""
    tensile, kept = rocm.find_regexes(serves)
    return (f"find {' '.join(roots)} -xdev -regextype posix-extended -type f -regex '{tensile}' "
            f"! -regex '{kept}' -delete")


def drop(root: Path, serves: tuple[str, ...]) -> tuple[int, int]:
    """Delete from a build output (bin/, lib/ollama/...) the Tensile files of archs outside `serves`;
    returns (files, bytes) dropped. Nothing is dropped when a served arch has no files at all: the
    package stage refuses that build with the reason, and the files that were there stay to show it."""
    if not serves:
        return 0, 0
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            files[path.relative_to(root).as_posix()] = path
    other, missing = unserved(files, serves)
    if missing:
        return 0, 0
    size = 0
    for rel in other:
        size += files[rel].lstat().st_size
        files[rel].unlink()
    return len(other), size


def prune(entries: list[tuple[str, Path]], serves: tuple[str, ...]):
    """Drop Tensile kernel files for archs outside `serves`; arch-neutral files stay.

    Returns (kept, pruned). A Tensile folder without files for a served arch is an error: the package
    would load and then fail on the first matrix multiplication.
    """
    if not serves:
        return entries, []
    other, missing = unserved((rel for rel, _ in entries), serves)
    if missing:
        seen = sorted({a for rel, _ in entries if (a := rocm.tensile_arch(rel))})
        raise PackageError(f"no rocBLAS Tensile files for {', '.join(missing)} in the build (found: "
                           f"{', '.join(seen)}); the runtime would fail on its first GEMM")
    drop_names = set(other)
    return [e for e in entries if e[0] not in drop_names], [e for e in entries if e[0] in drop_names]


def coverage(serves: Iterable[str], code_objects: Mapping[str, Iterable[str]],
             paths: Iterable[str]) -> list[str]:
    """Each arch the runtime asks for needs GPU code in the backend (`code_objects`: library -> archs)
    and, where rocBLAS ships (a Tensile file among `paths`), Tensile files; returns the problems."""
    code = {arch for found in code_objects.values() for arch in found}
    tensile = [p for p in paths if rocm.is_tensile(p)]
    problems = []
    for arch in serves:
        if code and arch not in code:
            problems.append(f"no GPU code for {arch} in the backend (it has {', '.join(sorted(code))})")
        if tensile and arch not in {rocm.tensile_arch(p) for p in tensile}:
            problems.append(f"no rocBLAS Tensile files for {arch}")
    return problems
