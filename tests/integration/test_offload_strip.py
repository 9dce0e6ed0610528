"""Stripping a real HIP library: the mini project's kernels, compiled by the ROCm builder for two archs,
keep one arch; LLVM's own clang-offload-bundler then reads the bundles before and after."""

from __future__ import annotations

import pytest
from docker.types import Mount

from pipeline import orchestrate, stages
from pipeline.config import targets
from pipeline.gpu import offload
from pipeline.infra.log import Log

from . import miniollama
from .conftest import write_matrix

BUNDLER = "/usr/lib/llvm-21/bin/clang-offload-bundler"
CLANG = "/usr/lib/llvm-21/bin/clang++"
KEEP, DROP = "hipv4-amdgcn-amd-amdhsa--gfx1100", "hipv4-amdgcn-amd-amdhsa--gfx906"


@pytest.fixture
def rocm_image(mini_project, settings_for, tmp_path) -> str:
    """The ROCm builder image, made (or found by its tag) through the pipeline's builder stage."""
    repo, commit = mini_project
    settings = settings_for(write_matrix(tmp_path / "targets.toml", repo, commit, name="gfx1103"))
    matrix = targets.load(settings.targets_file)
    plan = stages.plan_for(matrix, matrix.targets["gfx1103"], settings)
    with Log("offload", tmp_path / "builder.log") as log:
        return orchestrate.results_of(plan, settings, log, ["builder"])["builder"].tag


def run(engine, image, work, script: str) -> str:
    return engine.containers.run(image, ["sh", "-ec", script], remove=True, working_dir="/w",
                                 mounts=[Mount("/w", str(work), type="bind")]).decode()


@pytest.mark.parametrize("flags", ["", "--offload-compress"], ids=["plain", "compressed"])
def test_stripped_hip_library_keeps_its_code_objects_unchanged(engine, rocm_image, tmp_path, flags):
    work = tmp_path / "w"
    work.mkdir()
    (work / "gpu.hip").write_text(miniollama.HIP_KERNEL)
    (work / "gpu2.hip").write_text(miniollama.HIP_KERNEL2)
    run(engine, rocm_image, work,
        f"{CLANG} -x hip --offload-arch=gfx906 --offload-arch=gfx1100 {flags} -O2 -fPIC -shared "
        "gpu.hip gpu2.hip -o libmini.so")
    lib, stripped = work / "libmini.so", work / "libmini.gfx1100.so"

    report = offload.strip_file(lib, stripped, ["gfx1100"])
    assert report.compressed is bool(flags)
    assert report.entries("dropped") == {DROP: 2}  # one bundle per translation unit
    assert offload.compare(lib, stripped, ["gfx1100"]) == []

    # Each bundle as a file of its own, for LLVM's bundler (it reads one bundle per input).
    names = []
    for tag, path in (("before", lib), ("after", stripped)):
        data = path.read_bytes()
        for i, b in enumerate(offload.find_bundles(path)):
            (work / f"{tag}{i}.bundle").write_bytes(data[b.offset:b.offset + b.span])
            names.append(f"{tag}{i}")
    assert sorted(names) == ["after0", "after1", "before0", "before1"]

    out = run(engine, rocm_image, work, f"""
        for i in 0 1; do
          echo "list before$i: $({BUNDLER} --list --type=o --input=before$i.bundle | sort | tr '\\n' ' ')"
          echo "list after$i: $({BUNDLER} --list --type=o --input=after$i.bundle | sort | tr '\\n' ' ')"
          {BUNDLER} --unbundle --type=o --input=before$i.bundle --targets={KEEP} --output=before$i.co
          {BUNDLER} --unbundle --type=o --input=after$i.bundle --targets={KEEP} --output=after$i.co
          cmp before$i.co after$i.co && echo "same$i"
          if {BUNDLER} --unbundle --type=o --input=after$i.bundle --targets={DROP} --output=gone$i.co \
               2>/dev/null; then echo "still there$i"; else echo "gone$i"; fi
        done
        lib=/w/libmini.gfx1100.so  # lazily bound: its ggml_base_* functions live in the base library
        python3 -c 'import ctypes, sys; ctypes.CDLL(sys.argv[1], 1).ggml_gpu_scale; print("dlopen ok")' $lib
    """)
    for i in (0, 1):
        assert f"list before{i}: {KEEP} {DROP} host-x86_64-unknown-linux-gnu- " in out
        assert f"list after{i}: {KEEP} host-x86_64-unknown-linux-gnu- " in out
        assert f"same{i}" in out and f"gone{i}" in out and f"still there{i}" not in out
    assert "dlopen ok" in out
    assert (work / "before0.co").read_bytes()[:4] == b"\x7fELF"
