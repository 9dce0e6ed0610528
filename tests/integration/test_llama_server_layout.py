"""The build layout of v0.30 and later on a miniature with that interface: llama/server's own CMake
project and presets, llama.cpp supplied by the source stage at its pinned commit and handed to CMake as
FETCHCONTENT_SOURCE_DIR_LLAMA_CPP (a fresh writable copy per configure, so Ollama's compat patch applies),
preset `cpu` then a GPU preset, one install component, then `go build`; packaged, verified and run.

The miniature's Vulkan backend is a stand-in that cannot drive a device, so that package is built and
packaged only, and verify is shown refusing it where its floor policy gives no driver to run it on; the
CPU package of the same tree goes through verify's model run."""

from __future__ import annotations

import tarfile

import pytest
from docker.types import Mount

from pipeline import orchestrate, stages
from pipeline.config import targets
from pipeline.errors import VerifyError
from pipeline.infra import baseimage
from pipeline.infra.log import Log
from pipeline.stages import verify

from . import miniollama
from .conftest import write_matrix


def _build(tmp_path, settings_for, repo, commit, upstream, backends, **kw):
    matrix_file = write_matrix(tmp_path / f"targets-{'-'.join(backends)}.toml", repo, commit, tag="v1.30.0",
                               upstream=upstream, backends=backends)
    settings = settings_for(matrix_file, dist=tmp_path / f"dist-{'-'.join(backends)}")
    matrix = targets.load(matrix_file)
    plan = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    return settings, orchestrate.build_target(plan, settings, **kw)


def test_a_v0_30_style_tree_builds_cpu_then_a_gpu_preset_from_the_pinned_llama_cpp(
        engine, settings_for, tmp_path):
    repo, commit, llama, llama_commit = miniollama.create_llama_server(tmp_path / "upstream",
                                                                        tmp_path / "llama.cpp")
    upstream = {"layouts": {"llama-server": ">=0"},
                "llama_cpp": {"url": str(llama), "pins": {"b100": llama_commit}}}
    settings, outcome = _build(tmp_path, settings_for, repo, commit, upstream, ["cpu", "vulkan"],
                               skip=["verify"])

    assert [name for name, _, _ in outcome.stages] == [s.name for s in stages.select(stages.STAGES,
                                                                                     skip=["verify"])]
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

    # The compat patch reached the copy CMake built from: the packaged server says so.
    root = tmp_path / "unpacked"
    with tarfile.open(outcome.archive) as tar:
        tar.extractall(root, filter="data")
    out = engine.containers.run(baseimage.name(settings.image_prefix, "bullseye"),
                                ["/opt/ollama/lib/ollama/llama-server"], remove=True,
                                mounts=[Mount("/opt/ollama", str(root), type="bind", read_only=True)])
    assert out.decode().strip() == "llama-server ollama-compat"

    # A Vulkan backend is proven on lavapipe, which the cpu target's floor policy does not install.
    with pytest.raises(VerifyError, match=r"libggml-vulkan\.so: its floor policy \(debian-bullseye\) "
                                          r"names no driver_packages"), \
            Log("verify", tmp_path / "verify.log") as verify_log:
        verify.verify_archive(outcome.archive, settings, verify_log)

    # The same tree's CPU package serves and generates on its floor.
    _, cpu = _build(tmp_path, settings_for, repo, commit, upstream, ["cpu"])
    assert [name for name, _, _ in cpu.stages] == [s.name for s in stages.select(stages.STAGES)]
    cpu_log = cpu.log.read_text()
    assert "model run: " in cpu_log and "verified on clean bullseye" in cpu_log
