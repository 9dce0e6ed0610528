"""Tensile pruning: a generated rocBLAS library folder keeps the served archs and arch-neutral files."""

from __future__ import annotations

import pytest

from pipeline.errors import PackageError
from pipeline.gpu import tensile

NAMES = [
    "TensileLibrary_Type_SS_Contraction_l_Ailk_Bjlk_Cijk_Dijk_fallback.dat",
    "TensileLibrary_Type_SS_Contraction_l_Ailk_Bjlk_Cijk_Dijk_gfx906.co",
    "TensileLibrary_Type_HH_Contraction_l_Ailk_Bjlk_Cijk_Dijk_fallback_gfx906.hsaco",
    "Kernels.so-000-gfx906.hsaco",
    "TensileLibrary_Type_SS_Contraction_l_Ailk_Bjlk_Cijk_Dijk_gfx1100.co",
    "TensileLibrary_Type_SS_Contraction_l_Ailk_Bjlk_Cijk_Dijk_gfx90a-xnack-.co",
    "TensileLibrary_lazy_gfx908.dat",
]


@pytest.fixture
def entries(tmp_path):
    lib = tmp_path / "lib/ollama/rocm/rocblas/4.4.1/library"
    lib.mkdir(parents=True)
    out = []
    for name in NAMES:
        (lib / name).write_bytes(b"x" * 10)
        out.append((f"lib/ollama/rocm/rocblas/4.4.1/library/{name}", lib / name))
    # A backend library whose name happens to carry an arch is not Tensile data.
    (tmp_path / "libggml-gfx900.so").write_bytes(b"elf")
    out.append(("lib/ollama/rocm/libggml-gfx900.so", tmp_path / "libggml-gfx900.so"))
    return out


def names(items):
    return {rel.rsplit("/", 1)[-1] for rel, _ in items}


def test_only_served_archs_and_neutral_files_are_kept(entries):
    kept, pruned = tensile.prune(entries, ("gfx906",))
    assert names(kept) == {NAMES[0], NAMES[1], NAMES[2], NAMES[3], "libggml-gfx900.so"}
    assert names(pruned) == {NAMES[4], NAMES[5], NAMES[6]}


def test_gfx1103_under_the_override_is_served_gfx1100_files(entries):
    kept, _ = tensile.prune(entries, ("gfx1100",))
    assert NAMES[4] in names(kept) and NAMES[1] not in names(kept)


def test_a_served_arch_without_tensile_files_is_refused(entries):
    with pytest.raises(PackageError, match="no rocBLAS Tensile files for gfx1103"):
        tensile.prune(entries, ("gfx1103",))


def test_targets_without_runtime_archs_prune_nothing(entries):
    assert tensile.prune(entries, ()) == (entries, [])


def test_the_build_output_drops_other_archs_files(entries, tmp_path):
    root = tmp_path
    dropped = tensile.drop(root, ("gfx906",))
    left = {p.name for p in root.rglob("*") if p.is_file()}
    assert dropped == (3, 30)
    assert left == set(NAMES) - {"TensileLibrary_Type_SS_Contraction_l_Ailk_Bjlk_Cijk_Dijk_gfx1100.co",
                                 "TensileLibrary_Type_SS_Contraction_l_Ailk_Bjlk_Cijk_Dijk_gfx90a-xnack-.co",
                                 "TensileLibrary_lazy_gfx908.dat"} | {"libggml-gfx900.so"}
    # What is left packages as before: the package stage finds nothing more to prune.
    left = [(p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file()]
    _kept, pruned = tensile.prune(left, ("gfx906",))
    assert pruned == []


def test_the_build_output_keeps_everything_when_a_served_arch_has_no_files(entries, tmp_path):
    before = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert tensile.drop(tmp_path, ("gfx1103",)) == (0, 0)
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == before
    # ... so that packaging still refuses it with the reason.
    with pytest.raises(PackageError, match="no rocBLAS Tensile files for gfx1103"):
        tensile.prune([(p.relative_to(tmp_path).as_posix(), p) for p in before], ("gfx1103",))


def test_the_builder_image_deletes_the_tensile_files_no_target_serves(tmp_path):
    """The command the ROCm builder runs where its packages are installed (real `find`)."""
    import subprocess

    lib = tmp_path / "usr/lib/x86_64-linux-gnu/rocblas/4.4.1/library"
    lib.mkdir(parents=True)
    for name in NAMES:
        (lib / name).write_bytes(b"x")
    (tmp_path / "usr/lib/libggml-gfx900.so").write_bytes(b"elf")  # not Tensile data
    subprocess.run(["sh", "-c", tensile.shell_command(("gfx1100", "gfx906"), roots=(str(tmp_path / "usr"),))],
                   check=True)
    left = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert left == {"libggml-gfx900.so", *(n for n in NAMES if "gfx90a" not in n and "gfx908" not in n)}
    with pytest.raises(ValueError):
        tensile.shell_command(("gfx906'; rm -rf /; '",))


def test_a_builder_keeps_the_archs_its_targets_serve(matrix):
    assert matrix.serves("debian-rocm") == ("gfx1100", "gfx906")
    assert matrix.serves("debian-cpu") == ()
