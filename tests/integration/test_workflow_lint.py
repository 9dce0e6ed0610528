"""actionlint on the GitHub workflows, built from the Go module proxy inside the Go builder image."""

from __future__ import annotations

import pytest
from docker.types import Mount

from pipeline import orchestrate, stages
from pipeline.config import targets
from pipeline.infra import toolchain
from pipeline.infra.log import Log

from .conftest import PROJECT

ACTIONLINT = "github.com/rhysd/actionlint/cmd/actionlint@v1.7.7"


@pytest.mark.parametrize("workflow", ["release.yml", "ci.yml", "track.yml"])
def test_actionlint_passes(engine, settings_for, tmp_path, workflow):
    settings = settings_for(PROJECT / "targets.toml")
    matrix = targets.load(settings.targets_file)
    plan = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    with Log("lint", tmp_path / "lint.log") as log:
        image = orchestrate.results_of(plan, settings, log, ["builder"])["builder"]
    mounts, env = toolchain.mounts(settings)
    mounts.append(Mount("/repo", str(PROJECT), type="bind", read_only=True))
    env["GOFLAGS"] = "-mod=mod"
    container = engine.containers.run(
        image.tag, ["go", "run", ACTIONLINT, "-no-color", f".github/workflows/{workflow}"],
        detach=True, working_dir="/repo", environment=env, mounts=mounts,
        user=toolchain.user())
    try:
        code = container.wait(timeout=600)["StatusCode"]
        output = container.logs().decode()
    finally:
        container.remove(force=True)
    assert code == 0, f"actionlint found problems in {workflow}:\n{output}"
