"""How rocBLAS and hipBLASLt name their per-arch Tensile kernel files: the one owner of the naming,
in Python and as the POSIX extended regex a builder image's `find -regex` reads."""

from __future__ import annotations

import re
from collections.abc import Sequence

# rocBLAS/hipBLASLt kernels per arch: ..._gfx906.co, Kernels.so-000-gfx906.hsaco, ..._gfx90a-xnack-.co.
# POSIX ERE as well as Python's: the builder image's `find -regex` reads the same pattern.
_SUFFIX = r"[-_]({arch})(-xnack[+-])?\.[A-Za-z]+"
_ANY_ARCH = "gfx[0-9a-f]+"
_TENSILE_ARCH = re.compile(_SUFFIX.format(arch=_ANY_ARCH) + "$")
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


def find_regexes(archs: Sequence[str]) -> tuple[str, str]:
    """POSIX extended regexes for `find -regex`: (any Tensile kernel file of a library folder, a file
    of one of `archs`)."""
    for arch in archs:
        if not re.fullmatch(_ANY_ARCH, arch):
            raise ValueError(f"not a GPU arch: {arch!r}")
    dirs = "|".join(TENSILE_DIRS)
    return (f".*/({dirs})/(.*/)?library/[^/]*" + _SUFFIX.format(arch=_ANY_ARCH),
            ".*" + _SUFFIX.format(arch="|".join(archs)))
