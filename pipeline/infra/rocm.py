"""Facts about ROCm's files that packaging and verification both read: how rocBLAS / hipBLASLt name
their per-arch Tensile kernel files."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

# rocBLAS/hipBLASLt kernels per arch: ..._gfx906.co, Kernels.so-000-gfx906.hsaco, ..._gfx90a-xnack-.co.
# POSIX ERE as well as Python's: the builder image's `find -regex` reads the same pattern.
_SUFFIX = r"[-_]({arch})(-xnack[+-])?\.[A-Za-z]+"
_TENSILE_ARCH = re.compile(_SUFFIX.format(arch="gfx[0-9a-f]+") + "$")
TENSILE_DIRS = ("rocblas", "hipblaslt")


def tensile_arch(path: str) -> str | None:
    """The arch of a Tensile kernel file given by its package path (lib/ollama/rocm/rocblas/library/
    TensileLibrary_..._gfx906.co -> gfx906); None for arch-neutral files and files outside a Tensile
    library folder."""
    parts = path.split("/")
    if "library" not in parts[:-1] or not any(d in parts[:-1] for d in TENSILE_DIRS):
        return None
    m = _TENSILE_ARCH.search(parts[-1])
    return m[1] if m else None


def is_tensile(path: str) -> bool:
    parts = path.split("/")
    return "library" in parts[:-1] and any(d in parts[:-1] for d in TENSILE_DIRS)


def unserved(paths: Iterable[str], serves: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Split package paths by the archs a runtime asks for: (Tensile kernel files of other archs, served
    archs without a single Tensile file). Arch-neutral files and non-Tensile files are never listed; a
    build without Tensile files misses nothing."""
    other, seen = [], set()
    for path in paths:
        arch = tensile_arch(path)
        if arch is not None:
            seen.add(arch)
            if arch not in serves:
                other.append(path)
    return other, ([a for a in serves if a not in seen] if seen else [])


def drop_unserved(root: Path, serves: tuple[str, ...]) -> tuple[int, int]:
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


def prune_command(serves: tuple[str, ...], roots: tuple[str, ...] = ("/usr",)) -> str:
    """A shell command deleting, under `roots`, the Tensile kernel files of every arch but `serves` (in
    a Debian builder image, where Debian installs ROCm)."""
    for arch in serves:
        if not re.fullmatch(r"gfx[0-9a-f]+", arch):
            raise ValueError(f"not a GPU arch: {arch!r}")
    dirs = "|".join(TENSILE_DIRS)
    tensile = f".*/({dirs})/(.*/)?library/[^/]*" + _SUFFIX.format(arch="gfx[0-9a-f]+")
    kept = ".*" + _SUFFIX.format(arch="|".join(serves))
    return (f"find {' '.join(roots)} -xdev -regextype posix-extended -type f -regex '{tensile}' "
            f"! -regex '{kept}' -delete")
