"""The model run verify does, in a clean container of the runtime floor: install the package, serve,
import the tiny GGUF, generate. Against the mini project's stand-in server here, and against the real
Ollama in the upstream tier (OLLAMA_SOURCE)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from docker.types import Mount

from pipeline import orchestrate, stages
from pipeline.config import targets
from pipeline.config.settings import Settings
from pipeline.infra import archive as archives
from pipeline.infra import baseimage
from pipeline.infra.container import Container
from pipeline.infra.log import Log
from pipeline.smoke import modelrun, tinymodel

from .conftest import PROJECT, write_matrix
from .test_build_pipeline import build, unpack

needs_upstream = pytest.mark.skipif(
    not os.environ.get("OLLAMA_SOURCE"),
    reason="OLLAMA_SOURCE is unset: point it at a clone or mirror of Ollama to build the real upstream "
           "source")


def model_run(settings, root: Path, tmp_path: Path, *, model: Path | None = None, suite: str = "trixie"):
    """Install the unpacked package at root into /opt/prefix of a clean container and run the model."""
    if model is None:
        model = tinymodel.write(tmp_path / "model" / "tiny.gguf")
    mounts = [Mount("/opt/ollama", str(root), type="bind", read_only=True),
              Mount("/opt/model", str(model.parent), type="bind", read_only=True)]
    with Log("modelrun", tmp_path / "modelrun.log") as log, \
            Container(baseimage.name(settings.image_prefix, suite), log, mounts=mounts) as box:
        box.exec(["sh", "/opt/ollama/share/ollama/install.sh", "/opt/prefix"])
        run = lambda argv: box.exec(argv, capture=True)  # noqa: E731
        return (modelrun.run(run, prefix="/opt/prefix", model_path=f"/opt/model/{model.name}"),
                modelrun.check_unit(run, "/opt/ollama", "/opt/prefix"))


def test_model_run_passes_against_the_mini_projects_server(engine, mini_project, settings_for, tmp_path):
    repo, commit = mini_project
    settings = settings_for(write_matrix(tmp_path / "targets.toml", repo, commit))
    _, outcome = build(settings.targets_file, settings)
    root = unpack(outcome.archive, tmp_path / "unpacked")

    result, unit = model_run(settings, root, tmp_path)

    assert result.tokens == modelrun.NUM_PREDICT
    assert result.tokens_per_s > 0
    assert result.backend == "CPU (libggml-cpu.so)"
    assert result.compute == ("cpu",)
    assert len(result.response.split()) == modelrun.NUM_PREDICT
    # The stand-in really read the GGUF: its tensor count is in the server log.
    assert f"tensors={len(tinymodel.tensors())}" in result.server_log
    assert unit == modelrun.UnitCheck(False, ())  # minbase has no systemd-analyze


def test_model_run_failure_shows_the_server_log(engine, mini_project, settings_for, tmp_path):
    repo, commit = mini_project
    settings = settings_for(write_matrix(tmp_path / "targets.toml", repo, commit))
    _, outcome = build(settings.targets_file, settings)
    root = unpack(outcome.archive, tmp_path / "unpacked")
    bad = tmp_path / "bad" / "notgguf.gguf"
    bad.parent.mkdir()
    bad.write_bytes(b"GGML" + bytes(100))

    with pytest.raises(modelrun.ModelRunError) as failure:
        model_run(settings, root, tmp_path, model=bad)

    assert failure.value.step == "create"
    assert "not a GGUF file" in str(failure.value)
    assert "server log (last 40 lines)" in str(failure.value)


@pytest.mark.upstream
@needs_upstream
def test_real_cpu_package_serves_imports_and_generates(engine, tmp_path):
    # The user's cache (or PIPELINE_CACHE) is used on purpose: a cold build of Ollama takes minutes.
    settings = Settings.from_env(targets_file=PROJECT / "targets.toml", dist=tmp_path / "dist")
    matrix = targets.load(settings.targets_file)
    outcome = orchestrate.build_target(stages.plan_for(matrix, matrix.targets["cpu"], settings), settings)
    root = tmp_path / "unpacked"
    with archives.open_archive(outcome.archive, tmp_path) as tar:
        archives.extract(tar, root, tar.getmembers())

    result, _unit = model_run(settings, root, tmp_path)

    print(f"model run of the real cpu package: {result.summary()}")
    assert result.tokens == modelrun.NUM_PREDICT
    assert result.tokens_per_s > 0
    assert result.backend.startswith("CPU (libggml-cpu-")
    assert result.compute == ("cpu",)
    assert "llama runner started" in result.server_log
