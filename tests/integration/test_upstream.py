"""Upstream tier: the real Ollama of targets.toml, from the mirror named by OLLAMA_SOURCE."""

from __future__ import annotations

import json
import os
import re

import pytest

from pipeline import orchestrate, stages
from pipeline.config import targets
from pipeline.config.settings import Settings
from pipeline.infra import archive as archives

from .conftest import PROJECT
from .test_build_pipeline import run_packaged

pytestmark = [
    pytest.mark.upstream,
    pytest.mark.skipif(not os.environ.get("OLLAMA_SOURCE"),
                       reason="OLLAMA_SOURCE is unset: point it at a clone or mirror of Ollama to build "
                              "the real upstream source"),
]


def test_cpu_target_of_the_real_upstream_builds_and_reports_its_version(engine, tmp_path):
    # The user's cache (or PIPELINE_CACHE) is used on purpose: a cold build of Ollama takes minutes.
    settings = Settings.from_env(targets_file=PROJECT / "targets.toml", dist=tmp_path / "dist")
    matrix = targets.load(settings.targets_file)
    target = matrix.targets["cpu"]
    outcome = orchestrate.build_target(stages.plan_for(matrix, target, settings), settings)

    root = tmp_path / "unpacked"
    with archives.open_archive(outcome.archive, tmp_path) as tar:
        archives.extract(tar, root, tar.getmembers())
    version = run_packaged(engine, settings, root, "--version")
    upstream = target.source.tag.removeprefix("v")
    assert f"client version is {upstream}+cpu" in version


@pytest.mark.parametrize("name, code", [("gfx906", ["gfx906"]), ("gfx1103", ["gfx1100"]),
                                        ("sm_37", ["sass:sm_37"])])
def test_gpu_target_of_the_real_upstream_holds_exactly_its_archs(engine, tmp_path, name, code):
    # Minutes to hours on a small machine when nothing is cached: the build stage is shared with
    # `nox -s build` through the user's cache.
    settings = Settings.from_env(targets_file=PROJECT / "targets.toml", dist=tmp_path / "dist")
    matrix = targets.load(settings.targets_file)
    target = matrix.targets[name]
    outcome = orchestrate.build_target(stages.plan_for(matrix, target, settings), settings)

    manifest = json.loads((settings.dist / name / "manifest.json").read_text())
    assert list(manifest["gpu_code_objects"].values()) == [code]
    assert [state for stage, state, _ in outcome.stages if stage == "verify"] == ["done"]
    served = manifest["tensile"]["serves"]
    tensile = [f["path"] for f in manifest["files"] if "/rocblas/" in f["path"] and "/library/" in f["path"]]
    archs = {m[1] for p in tensile if (m := re.search(r"[-_](gfx[0-9a-f]+)", p.rsplit("/", 1)[-1]))}
    assert archs == set(served)
