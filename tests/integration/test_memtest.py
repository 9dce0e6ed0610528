"""memtest end to end: the real Ollama source, upstream against the patch series, in the Go builder."""

from __future__ import annotations

import json
import os

import pytest

from pipeline import cli
from pipeline.config.settings import PROJECT_ROOT
from pipeline.tools.memtest import driver as mt_driver

pytestmark = pytest.mark.upstream

SCENARIO = PROJECT_ROOT / "scenarios" / "k80x2-12b.toml"


@pytest.fixture
def ollama_source():
    source = os.environ.get("OLLAMA_SOURCE")
    if not source:
        pytest.skip("OLLAMA_SOURCE is not set; point it at a clone or mirror of Ollama to run memtest")
    return source


def test_12b_on_two_k80_dies_moves_from_two_gpus_to_one(engine, ollama_source, cache_dir, tmp_path,
                                                          monkeypatch, capsys):
    monkeypatch.setenv("PIPELINE_CACHE", str(cache_dir))
    monkeypatch.setenv("PIPELINE_DIST", str(tmp_path / "dist"))
    output = tmp_path / "memtest.json"
    code = cli.main(["memtest", "--source", ollama_source, "--ref", "v0.12.5", "--json", str(output),
                     str(SCENARIO)])
    text = capsys.readouterr().out
    assert code == 0, text

    report = json.loads(output.read_text())
    (row,) = report["scenarios"]
    before, after = row["before"], row["after"]
    assert (before["gpus_used"], after["gpus_used"]) == (2, 1)
    assert before["layers_on_gpu"] == after["layers_on_gpu"] == 49
    # Upstream reserves the whole graph on both dies; patched on the one it uses
    assert before["per_gpu"][0]["graph"] == before["per_gpu"][1]["graph"] > 0
    assert after["per_gpu"][1] == {"gpu": "GPU-1", "layers": 0, "memory": 0, "graph": 0, "reserved": None}
    assert before["graph_secondary"] == before["per_gpu"][0]["graph"] and after["graph_secondary"] == 0
    assert all(c["ok"] for c in row["checks"])
    assert "GPUs used: 2" in text and "GPUs used: 1" in text
    # The driver was put into temporary trees only, never into the cache's trees
    assert not list(cache_dir.rglob(mt_driver.DRIVER_NAME))

    # A second run compiles nothing: both sides' test binaries come from the cache
    code = cli.main(["memtest", "--source", ollama_source, "--ref", "v0.12.5", "--json", str(output),
                     str(SCENARIO)])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code == 0, text
    assert "before: test binary from the cache" in text and "after: test binary from the cache" in text
    assert "go test -c" not in text
    assert json.loads(output.read_text())["scenarios"][0]["after"] == after
