"""The build layout of v0.30 and later on a miniature with that interface: llama/server's own CMake
project and presets, llama.cpp supplied by the source stage at its pinned commit and handed to CMake as
FETCHCONTENT_SOURCE_DIR_LLAMA_CPP (a fresh writable copy per configure, so Ollama's compat patch applies),
preset `cpu` then a GPU preset, one install component, then `go build`; packaged, verified and run."""

from __future__ import annotations

import tarfile

from docker.types import Mount

from pipeline import orchestrate, stages
from pipeline.config import targets
from pipeline.infra import baseimage

from . import miniollama
from .conftest import write_matrix


def test_a_v0_30_style_tree_builds_cpu_then_a_gpu_preset_from_the_pinned_llama_cpp(
        engine, settings_for, tmp_path):
    repo, commit, llama, llama_commit = miniollama.create_llama_server(tmp_path / "upstream",
                                                                        tmp_path / "llama.cpp")
    upstream = {"layouts": {"llama-server": ">=0"},
                "llama_cpp": {"url": str(llama), "pins": {"b100": llama_commit}}}
    matrix_file = write_matrix(tmp_path / "targets.toml", repo, commit, tag="v1.30.0", upstream=upstream,
                               backends=["cpu", "vulkan"])
    settings = settings_for(matrix_file)
    matrix = targets.load(matrix_file)
    plan = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    outcome = orchestrate.build_target(plan, settings)

    assert [name for name, _, _ in outcome.stages] == [s.name for s in stages.select(stages.STAGES)]
    with tarfile.open(outcome.archive) as tar:
        names = set(tar.getnames())
    assert {"bin/ollama", "lib/ollama/llama-server", "lib/ollama/llama-quantize",
            "lib/ollama/libggml-base.so", "lib/ollama/libggml-cpu.so",
            "lib/ollama/vulkan/libggml-vulkan.so"} <= names
    log = outcome.log.read_text()
    assert f"llama.cpp b100 -> {llama_commit} supplied from {llama}" in log
    for preset, folder in (("cpu", "cpu"), ("vulkan", "vulkan")):
        assert (f"+ cmake -S llama/server -B build/llama-server-{folder} --preset {preset} "
                f"-DOLLAMA_RUNNER_DIR={'' if preset == 'cpu' else preset} "
                "-DFETCHCONTENT_SOURCE_DIR_LLAMA_CPP=/src/build/llama.cpp") in log
        assert f"+ cmake --install build/llama-server-{folder} --component llama-server --prefix dist" in log
    assert "model run: " in log and "verified on a clean bullseye" in log

    # The compat patch reached the copy CMake built from: the packaged server says so.
    root = tmp_path / "unpacked"
    with tarfile.open(outcome.archive) as tar:
        tar.extractall(root, filter="data")
    out = engine.containers.run(baseimage.name(settings.image_prefix, "bullseye"),
                                ["/opt/ollama/lib/ollama/llama-server"], remove=True,
                                mounts=[Mount("/opt/ollama", str(root), type="bind", read_only=True)])
    assert out.decode().strip() == "llama-server ollama-compat"
