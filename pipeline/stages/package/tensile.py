"""rocBLAS Tensile files: only those of the archs the runtime asks for (runtime.archs) are packaged.

A 780M under HSA_OVERRIDE_GFX_VERSION=11.0.0 asks for gfx1100, an MI50 for gfx906: Debian's Tensile
folder (2.9 GB, every arch) shrinks to the served arch and the arch-neutral files.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import PackageError
from pipeline.infra import rocm


def prune(entries: list[tuple[str, Path]], serves: tuple[str, ...]):
    """Drop Tensile kernel files for archs outside `serves`; arch-neutral files stay.

    Returns (kept, pruned). A Tensile folder without files for a served arch is an error: the package
    would load and then fail on the first matrix multiplication.
    """
    if not serves:
        return entries, []
    other, missing = rocm.unserved((rel for rel, _ in entries), serves)
    if missing:
        seen = sorted({a for rel, _ in entries if (a := rocm.tensile_arch(rel))})
        raise PackageError(f"no rocBLAS Tensile files for {', '.join(missing)} in the build (found: "
                           f"{', '.join(seen)}); the runtime would fail on its first GEMM")
    drop = set(other)
    return [e for e in entries if e[0] not in drop], [e for e in entries if e[0] in drop]
