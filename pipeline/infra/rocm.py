"""Facts about ROCm's files that packaging and verification both read: how rocBLAS / hipBLASLt name
their per-arch Tensile kernel files."""

from __future__ import annotations

import re

# rocBLAS/hipBLASLt kernels per arch: ..._gfx906.co, Kernels.so-000-gfx906.hsaco, ..._gfx90a-xnack-.co.
_TENSILE_ARCH = re.compile(r"[-_](gfx[0-9a-f]+)(?:-xnack[+-])?\.[A-Za-z]+$")
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
