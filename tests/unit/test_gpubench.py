"""gpubench: the pure parts of the GPU compile-time benchmark (no Docker, no compiler)."""

from __future__ import annotations

import json

import pytest

from pipeline import cli, stages
from pipeline.errors import ConfigError, PipelineError, SelectionError
from pipeline.tools import bench, gpubench

PRESETS = {
    "version": 3,
    "configurePresets": [
        {"name": "Default", "binaryDir": "${sourceDir}/build",
         "cacheVariables": {"CMAKE_BUILD_TYPE": "Release"}},
        {"name": "CUDA", "inherits": ["Default"]},
        {"name": "CUDA 11", "inherits": ["CUDA"],
         "cacheVariables": {"CMAKE_CUDA_ARCHITECTURES": "50-virtual;60-virtual;90-virtual",
                            "CMAKE_CUDA_FLAGS": "-t 2"}},
        {"name": "CUDA 11 Kepler", "inherits": "CUDA 11"},
        {"name": "ROCm", "inherits": ["Default"], "cacheVariables": {"CMAKE_HIP_PLATFORM": "amd"}},
        {"name": "ROCm 6", "inherits": ["ROCm"],
         "cacheVariables": {"CMAKE_HIP_FLAGS": "-parallel-jobs=4",
                            "AMDGPU_TARGETS": {"type": "STRING",
                                               "value": "gfx906;gfx940;gfx1100;gfx90a:xnack+;"}}},
        {"name": "Loop", "inherits": ["Loop"]},
    ],
}

NINJA_TARGETS = """\
cmake_object_order_depends_target_ggml-base: phony
cmake_object_order_depends_target_ggml-hip: phony
ml/backend/ggml/ggml/src/CMakeFiles/ggml-base.dir/ggml.c.o: C_COMPILER__ggml-base_unscanned_Release
ml/backend/ggml/ggml/src/ggml-hip/CMakeFiles/ggml-hip.dir/__/ggml-cuda/arange.cu.o: HIP_COMPILER__ggml-hip_unscanned_Release
ml/backend/ggml/ggml/src/ggml-hip/CMakeFiles/ggml-hip.dir/__/ggml-cuda/concat.cu.o: HIP_COMPILER__ggml-hip_unscanned_Release
ml/backend/ggml/ggml/src/ggml-hip/CMakeFiles/ggml-hip.dir/__/ggml-cuda/softmax.cu.o: HIP_COMPILER__ggml-hip_unscanned_Release
ml/backend/ggml/ggml/src/ggml-hip/CMakeFiles/ggml-hip.dir/__/ggml-cuda/template-instances/mmq-instance-q4_0.cu.o: HIP_COMPILER__ggml-hip_unscanned_Release
lib/ollama/libggml-hip.so: HIP_SHARED_LIBRARY_LINKER__ggml-hip_Release
all: phony
"""


def test_upstream_hip_archs_come_from_the_preset_value():
    archs = gpubench.preset_archs(PRESETS, "ROCm 6", "AMDGPU_TARGETS")
    assert archs == ["gfx906", "gfx940", "gfx1100", "gfx90a:xnack+"]


def test_upstream_archs_are_inherited_from_a_parent_preset():
    assert gpubench.preset_archs(PRESETS, "CUDA 11 Kepler", "CMAKE_CUDA_ARCHITECTURES") == [
        "50-virtual", "60-virtual", "90-virtual"]


def test_a_preset_without_the_variable_is_refused():
    with pytest.raises(ConfigError, match="does not set AMDGPU_TARGETS"):
        gpubench.preset_archs(PRESETS, "CUDA 11", "AMDGPU_TARGETS")


def test_an_unknown_or_looping_preset_is_refused():
    with pytest.raises(ConfigError, match="no configure preset 'ROCm 7'"):
        gpubench.preset_archs(PRESETS, "ROCm 7", "AMDGPU_TARGETS")
    with pytest.raises(ConfigError, match="inherits itself"):
        gpubench.preset_archs(PRESETS, "Loop", "AMDGPU_TARGETS")


def test_sm_37_full_list_is_the_cuda_11_presets_virtual_archs(matrix, settings):
    # The shape of upstream's file (v0.12.5): ROCm 6 names gfx archs, CUDA 11 virtual ones.
    upstream = {"configurePresets": [
        {"name": "Default"}, {"name": "CUDA", "inherits": ["Default"]},
        {"name": "CUDA 11", "inherits": ["CUDA"], "cacheVariables": {
            "CMAKE_CUDA_ARCHITECTURES": "50-virtual;60-virtual;61-virtual;70-virtual;75-virtual;"
                                        "80-virtual;86-virtual;87-virtual;89-virtual;90-virtual"}}]}
    backend = gpubench.gpu_backend(stages.plan_for(matrix, matrix.targets["sm_37"], settings))
    archs = gpubench.preset_archs(upstream, backend.preset, backend.arch_variable)
    assert len(archs) == 10 and all(a.endswith("-virtual") for a in archs)


def test_configure_argv_sets_the_arch_list_ninja_and_the_binary_dir(matrix, settings):
    p = stages.plan_for(matrix, matrix.targets["gfx906"], settings)
    backend = gpubench.gpu_backend(p)
    step = gpubench.configure_step(p, backend)
    assert step[:3] == ("cmake", "--preset", "ROCm 6")

    target = gpubench.configure_argv(step, backend.arch_variable, ["gfx906"], "build/target")
    full = gpubench.configure_argv(step, backend.arch_variable, ["gfx906", "gfx1100", "gfx90a:xnack+"],
                                   "build/full")
    assert target[-4:] == ["-B", "build/target", "-G", "Ninja"]
    assert full[-4:] == ["-B", "build/full", "-G", "Ninja"]
    assert [a for a in target if a.startswith("-DAMDGPU_TARGETS")] == ["-DAMDGPU_TARGETS=gfx906"]
    assert [a for a in full if a.startswith("-DAMDGPU_TARGETS")] == [
        "-DAMDGPU_TARGETS=gfx906;gfx1100;gfx90a:xnack+"]
    # Everything else of the plan's configure is kept as it is, in order.
    rest = [a for a in step if not a.startswith("-DAMDGPU_TARGETS")]
    assert [a for a in full[:-4] if not a.startswith("-DAMDGPU_TARGETS")] == rest
    assert "-DCMAKE_HIP_COMPILER_LAUNCHER=ccache" in full and "-DCMAKE_HIP_FLAGS=" in full


def test_configure_argv_replaces_a_typed_define_and_adds_a_missing_one():
    argv = ("cmake", "--preset", "CUDA 11", "-DCMAKE_CUDA_ARCHITECTURES:STRING=37-real")
    out = gpubench.configure_argv(argv, "CMAKE_CUDA_ARCHITECTURES", ["50-virtual", "60-virtual"], "b")
    assert out == ["cmake", "--preset", "CUDA 11", "-DCMAKE_CUDA_ARCHITECTURES=50-virtual;60-virtual",
                   "-B", "b", "-G", "Ninja"]
    out = gpubench.configure_argv(("cmake", "--preset", "X"), "V", ["a"], "b")
    assert out == ["cmake", "--preset", "X", "-DV=a", "-B", "b", "-G", "Ninja"]


def test_cuda_target_configure_uses_the_cuda_preset(matrix, settings):
    p = stages.plan_for(matrix, matrix.targets["sm_37"], settings)
    backend = gpubench.gpu_backend(p)
    assert (backend.gpu_code, gpubench.library_target(backend)) == ("cuda", "ggml-cuda")
    argv = gpubench.configure_argv(gpubench.configure_step(p, backend), backend.arch_variable,
                                   list(p.target.gpu_archs), "build/target")
    assert "-DCMAKE_CUDA_ARCHITECTURES=37-real" in argv


def test_objects_are_chosen_from_ninja_targets_in_source_order():
    objects = gpubench.object_targets(NINJA_TARGETS, "ggml-hip", ["softmax.cu", "arange.cu"])
    assert objects == [
        "ml/backend/ggml/ggml/src/ggml-hip/CMakeFiles/ggml-hip.dir/__/ggml-cuda/softmax.cu.o",
        "ml/backend/ggml/ggml/src/ggml-hip/CMakeFiles/ggml-hip.dir/__/ggml-cuda/arange.cu.o",
    ]
    assert gpubench.order_target(NINJA_TARGETS, "ggml-hip") == "cmake_object_order_depends_target_ggml-hip"
    assert gpubench.order_target(NINJA_TARGETS, "ggml-cuda") is None


def test_a_source_without_an_object_in_the_library_is_an_error():
    with pytest.raises(PipelineError, match=r"expected one object of getrows.cu in target ggml-hip"):
        gpubench.object_targets(NINJA_TARGETS, "ggml-hip", ["getrows.cu"])
    with pytest.raises(PipelineError, match="ggml-cuda"):
        gpubench.object_targets(NINJA_TARGETS, "ggml-cuda", ["arange.cu"])


def test_ratio_is_full_over_target_and_none_without_a_target_time():
    assert gpubench.ratio(30.0, 10.0) == 3.0
    assert gpubench.ratio(1.0, 3.0) == 0.33
    assert gpubench.ratio(5.0, 0.0) is None


def test_ratios_cover_each_phase_in_total_and_per_source():
    def phase(total, a, b):
        return {"seconds": total, "objects": {"arange.cu": a, "concat.cu": b}}

    result = {"target": {"cold": phase(10.0, 4.0, 6.0), "warm": phase(1.0, 0.5, 0.5)},
              "full": {"cold": phase(85.0, 40.0, 45.0), "warm": phase(1.2, 0.6, 0.6)}}
    assert gpubench.ratios(result) == {
        "cold": {"total": 8.5, "arange.cu": 10.0, "concat.cu": 7.5},
        "warm": {"total": 1.2, "arange.cu": 1.2, "concat.cu": 1.2},
    }


def test_probe_output_names_the_refused_archs():
    out = "ok gfx906\nbad gfx940\nbad gfx941\nok gfx90a:xnack+\n"
    assert gpubench.probe_failures(out) == ["gfx940", "gfx941"]


def test_ccache_stats_add_direct_and_preprocessed_hits():
    out = ("stats_updated_timestamp\t1700000000\ndirect_cache_hit\t2\npreprocessed_cache_hit\t1\n"
           "cache_miss\t3\n")
    assert gpubench.ccache_stats(out) == {"hits": 3, "misses": 3}
    assert gpubench.ccache_stats("") == {"hits": 0, "misses": 0}


def test_only_targets_with_a_gpu_backend_are_benchmarked(matrix, settings):
    chosen = gpubench.plans(matrix, ["cpu", "gfx906", "sm_37"], settings)
    assert [p.name for p in chosen] == ["gfx906", "sm_37"]
    gpu = [n for n, t in matrix.targets.items() if t.gpu_archs]
    with pytest.raises(SelectionError, match=r"no GPU target selected \(cpu\).*" + ", ".join(gpu)):
        gpubench.plans(matrix, ["cpu"], settings)


def test_bench_gpu_writes_only_the_gpu_section(monkeypatch, matrix, settings, tmp_path):
    monkeypatch.setattr(gpubench, "measure", lambda p, s: {"backend": p.backends[-1].preset})
    monkeypatch.setattr(bench.orchestrate, "build_target", lambda *a: pytest.fail("no warm-up build"))
    out = tmp_path / "bench.json"
    report = bench.run(["gfx906"], settings, out, cold=False, gpu=True)
    assert report["gpu"] == {"gfx906": {"backend": "ROCm 6"}}
    assert json.loads(out.read_text())["gpu"] == report["gpu"]
    assert report["machine"]["cpus"] and report["date"]


def test_bench_cli_passes_gpu_through(monkeypatch, tmp_path):
    seen = {}

    def fake_run(selection, settings, output, *, cold, gpu=False, backend_archs=None):
        seen.update(selection=selection, cold=cold, gpu=gpu)
        return {}

    monkeypatch.setattr(bench, "run", fake_run)
    assert cli.main(["bench", "sm_37", "--gpu", "--output", str(tmp_path / "b.json")]) == 0
    assert seen == {"selection": ["sm_37"], "cold": False, "gpu": True}


# --- the whole backend, cold, once per arch list ------------------------------------------------------

def test_the_backend_run_configures_as_the_plan_does_without_ccache(matrix, settings):
    plan = stages.plan_for(matrix, matrix.targets["gfx1103"], settings)
    backend = gpubench.gpu_backend(plan)
    argv = gpubench.without_launchers(gpubench.configure_step(plan, backend), backend)
    assert not any("LAUNCHER" in a for a in argv)
    assert "-DCMAKE_HIP_COMPILER=/usr/lib/llvm-21/bin/clang++" in argv
    out = gpubench.configure_argv(argv, backend.arch_variable, ["gfx1100", "gfx1103"], "build/run0")
    assert "-DAMDGPU_TARGETS=gfx1100;gfx1103" in out and "-DAMDGPU_TARGETS=gfx1100" not in out
    # The plan's configure environment (Ninja, upstream's LDFLAGS=-s) comes along.
    assert gpubench.configure_env(plan, backend) == {"CMAKE_GENERATOR": "Ninja", "LDFLAGS": "-s"}


def test_bench_cli_passes_the_arch_lists_through(monkeypatch, tmp_path):
    seen = {}

    def fake_run(selection, settings, output, *, cold, gpu=False, backend_archs=None):
        seen.update(selection=selection, backend_archs=backend_archs)
        return {}

    monkeypatch.setattr(bench, "run", fake_run)
    assert cli.main(["bench", "gfx1103", "--backend-archs", "gfx1100,gfx1103", "--backend-archs", "gfx1100",
                     "--output", str(tmp_path / "b.json")]) == 0
    assert seen == {"selection": ["gfx1103"], "backend_archs": [["gfx1100", "gfx1103"], ["gfx1100"]]}


@pytest.mark.parametrize("argv, message", [
    (["--backend-archs", "gfx1100,,gfx1103"], "give archs separated by commas, each once"),
    (["--backend-archs", "gfx1100,gfx1100"], "give archs separated by commas, each once"),
    (["--backend-archs", "gfx1100", "--cold"], "--backend-archs is a benchmark of its own"),
    (["--backend-archs", "gfx1100", "--ref", "v0.24.0"], "--backend-archs is a benchmark of its own"),
])
def test_bench_refuses_a_bad_arch_list_or_a_mix_of_modes(capsys, tmp_path, argv, message):
    assert cli.main(["bench", "gfx1103", *argv, "--output", str(tmp_path / "b.json")]) == 11
    assert message in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()


def test_an_arch_the_compiler_does_not_know_is_refused_before_any_work(matrix, settings):
    plan = stages.plan_for(matrix, matrix.targets["gfx1103"], settings)
    with pytest.raises(PipelineError, match="'gfx9999': not an AMDGPU processor clang knows"):
        gpubench.backend_runs(plan, settings, [["gfx1100"], ["gfx9999"]])
