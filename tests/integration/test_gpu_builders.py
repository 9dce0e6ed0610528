"""GPU builders (Debian flavor) compile the mini project's real HIP and CUDA kernels for exactly the
archs of each target, through the pipeline's own builder and build stages."""

from __future__ import annotations

import json
import tarfile

import pytest
from docker.types import Mount

from pipeline import orchestrate, stages
from pipeline.config import targets
from pipeline.errors import GpuCodeError
from pipeline.gpu import archs
from pipeline.infra import archive as archives
from pipeline.infra import container
from pipeline.tools import bench

from . import miniollama
from .conftest import write_matrix

HIP_LIB = "lib/ollama/rocm/libggml-hip.so"
CUDA_LIB = "lib/ollama/cuda_v11/libggml-cuda.so"


def build_gpu(name, mini_project, settings_for, tmp_path, **overrides):
    repo, commit = mini_project
    settings = settings_for(write_matrix(tmp_path / "targets.toml", repo, commit, name=name, **overrides))
    matrix = targets.load(settings.targets_file)
    plan = stages.plan_for(matrix, matrix.targets[name], settings)
    outcome = orchestrate.build_target(plan, settings)
    info = outcome.results["build"]
    root = tmp_path / "unpacked"
    with tarfile.open(outcome.archive) as tar:
        archives.extract(tar, root, tar.getmembers())
    return plan, info, root


def in_builder(engine, info, root, script: str) -> str:
    """Run a listing tool of the builder image (the one the build ran in) on the unpacked package."""
    return engine.containers.run(info.image.tag, ["sh", "-c", script], remove=True,
                                 working_dir="/pkg",
                                 mounts=[Mount("/pkg", str(root), type="bind", read_only=True)]).decode()


def bundled_hip_archs(engine, info, root) -> set[str]:
    # A second reading with LLVM's own tool: the first offload bundle of .hip_fatbin, per translation unit.
    out = in_builder(engine, info, root,
                     f"objcopy -O binary --only-section=.hip_fatbin {HIP_LIB} /tmp/fatbin && "
                     "clang-offload-bundler-21 --list --type=o --input=/tmp/fatbin")
    return {line.split("--", 1)[1] for line in out.split() if line.startswith("hipv4-")}


@pytest.mark.parametrize("name, gpu_archs, expected", [
    ("gfx1103", None, {"gfx1100"}),  # the project's own: the code the 780M runs under the override
    ("gfx1103", ["gfx1100", "gfx1103"], {"gfx1100", "gfx1103"}),  # two archs in one backend
    ("gfx906", None, {"gfx906"})])
def test_rocm_target_compiles_exactly_its_archs(engine, mini_project, settings_for, tmp_path, name, gpu_archs,
                                                expected):
    overrides = {"gpu_archs": gpu_archs} if gpu_archs else {}
    _plan, info, root = build_gpu(name, mini_project, settings_for, tmp_path, **overrides)

    assert set(info.code_objects["libggml-hip.so"]) == expected
    assert bundled_hip_archs(engine, info, root) == expected
    assert (root / "lib/ollama/libggml-cpu.so").exists()


def test_cuda_target_compiles_real_sm_37_code_and_no_ptx(engine, mini_project, settings_for, tmp_path):
    _plan, info, root = build_gpu("sm_37", mini_project, settings_for, tmp_path)

    assert info.code_objects["libggml-cuda.so"] == ("sass:sm_37",)
    listing = in_builder(engine, info, root, f"cuobjdump --list-elf {CUDA_LIB}; cuobjdump --list-ptx "
                                             f"{CUDA_LIB}")
    assert archs.found("cuda", listing) == {"sass:sm_37"}
    assert ".sm_37.cubin" in listing


def test_build_that_ignores_the_requested_archs_is_refused(engine, mini_project, settings_for, tmp_path):
    repo, _ = mini_project
    cmake = (repo / "CMakeLists.txt").read_text()
    (repo / "CMakeLists.txt").write_text(cmake.replace("set(CMAKE_HIP_ARCHITECTURES ${AMDGPU_TARGETS})",
                                                       "set(CMAKE_HIP_ARCHITECTURES gfx1030)"))
    commit = miniollama.commit_files(repo, "hard-code an arch", tag="v1.2.3")

    with pytest.raises(GpuCodeError, match=r"missing: gfx906; unexpected: gfx1030"):
        build_gpu("gfx906", (repo, commit), settings_for, tmp_path)
    assert not list((tmp_path / "dist").rglob("*.tar.gz"))


def test_backend_bench_compiles_the_whole_hip_backend_cold_once_per_arch_list(
        engine, mini_project, settings_for, tmp_path):
    # `nox -s bench -- gfx1103 --backend-archs gfx1100,gfx1103 --backend-archs gfx1100`: the before and
    # after of the arch change in one run, each read back out of the library it compiled.
    repo, commit = mini_project
    settings = settings_for(write_matrix(tmp_path / "targets.toml", repo, commit, name="gfx1103"))
    output = tmp_path / "bench.json"

    report = bench.run(["gfx1103"], settings, output, cold=False,
                       backend_archs=[["gfx1100", "gfx1103"], ["gfx1100"]])

    entry = report["backend"]["gfx1103"]
    assert json.loads(output.read_text())["backend"]["gfx1103"] == entry
    assert (entry["backend"], entry["library"], entry["ccache"]) == ("ROCm 6", "libggml-hip.so", "off")
    first, second = entry["runs"]
    assert (first["archs"], sorted(first["code_objects"])) == (["gfx1100", "gfx1103"], ["gfx1100", "gfx1103"])
    assert (second["archs"], second["code_objects"]) == (["gfx1100"], ["gfx1100"])
    assert first["compile_seconds"] > 0 and second["compile_seconds"] > 0
    assert first["library_bytes"] > second["library_bytes"], "two archs' code objects against one"
    assert entry["first_over_last"] == round(first["compile_seconds"] / second["compile_seconds"], 2)
    log = settings.places.target_log("gfx1103", "backendbench")
    assert "libggml-hip.so for gfx1100: compiled in" in log.read_text()
    assert engine.containers.list(all=True, filters={"label": f"{container.LOG_LABEL}={log}"}) == []
