"""The GitHub workflows: their steps only call nox sessions or trivial shell lines, and the release
matrix is the target matrix. (actionlint runs in the Docker tier: tests/integration/test_workflow_lint.py.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pipeline.cli import main

from .conftest import PROJECT, TARGETS_FILE

yaml = pytest.importorskip("yaml", reason="PyYAML is in the test extra: pip install -e '.[test]'")

WORKFLOWS = PROJECT / ".github" / "workflows"
RELEASE = WORKFLOWS / "release.yml"
CI = WORKFLOWS / "ci.yml"
ALLOWED_ACTIONS = {"actions/checkout", "actions/setup-python", "actions/cache", "actions/upload-artifact",
                   "actions/download-artifact"}


def load(path: Path) -> dict:
    workflow = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    if True in workflow:
        workflow["on"] = workflow.pop(True)
    return workflow


def steps(workflow: dict):
    for job_name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_name, step


def runs(job: dict) -> list[str]:
    return [s["run"] for s in job["steps"] if "run" in s]


def test_release_runs_on_version_tags_and_by_hand():
    on = load(RELEASE)["on"]
    assert on["push"]["tags"] == ["v*"]
    assert "workflow_dispatch" in on


def test_release_matrix_comes_from_nox_targets_json():
    jobs = load(RELEASE)["jobs"]
    matrix_job = jobs["matrix"]
    assert any(r.startswith("nox -s targets -- --json") for r in runs(matrix_job))
    assert matrix_job["outputs"]["targets"] == "${{ steps.targets.outputs.targets }}"
    build = jobs["build"]
    assert build["needs"] == "matrix"
    assert build["strategy"]["matrix"] == {"target": "${{ fromJSON(needs.matrix.outputs.targets) }}"}
    assert build["strategy"]["fail-fast"] is False
    assert build["env"]["TARGET"] == "${{ matrix.target.name }}"
    assert 'nox -s build -- "$TARGET"' in runs(build)


def test_release_caches_are_keyed_by_plan_stage_hashes():
    build = load(RELEASE)["jobs"]["build"]
    assert 'nox -s plan -- "$TARGET" --json > plan.json' in runs(build)
    keys = [s["with"]["key"] for s in build["steps"] if s.get("uses", "").startswith("actions/cache@")]
    assert len(keys) == 3
    assert any("steps.plan.outputs.builder" in k for k in keys)
    assert sum("steps.plan.outputs.build }}" in k for k in keys) == 2


def test_plan_json_has_what_the_cache_steps_read(capsys):
    assert main(["plan", "cpu", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["name"] == "cpu"
    assert set(row["hashes"]) >= {"builder", "build"}
    assert row["image"].endswith(":" + row["hashes"]["builder"][:16])


def test_release_uploads_archive_manifest_and_log_and_publishes_with_gh():
    jobs = load(RELEASE)["jobs"]
    upload = next(s for s in jobs["build"]["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    paths = upload["with"]["path"].splitlines()
    assert paths == ["dist/${{ matrix.target.name }}/ollama-*", "dist/${{ matrix.target.name }}/manifest.json",
                     "dist/${{ matrix.target.name }}/build.log"]
    release = jobs["release"]
    assert release["needs"] == "build"
    assert release["permissions"] == {"contents": "write"}
    assert "nox -s release -- --all" in runs(release)
    publish = next(s for s in release["steps"] if "gh release create" in s.get("run", ""))
    assert publish["if"] == "github.ref_type == 'tag'"
    assert "--notes-file dist/release/RELEASE_NOTES.md dist/release/*" in publish["run"]


@pytest.mark.parametrize("workflow", [RELEASE, CI], ids=lambda p: p.name)
def test_only_allowed_actions_pinned_by_major_version(workflow):
    for job, step in steps(load(workflow)):
        if "uses" in step:
            action, _, ref = step["uses"].partition("@")
            assert action in ALLOWED_ACTIONS, f"{workflow.name} job {job}: {step['uses']} is not allowed"
            assert re.fullmatch(r"v\d+", ref), f"{workflow.name} job {job}: pin {action} by major version"


@pytest.mark.parametrize("workflow", [RELEASE, CI], ids=lambda p: p.name)
def test_no_build_logic_in_yaml_every_run_is_one_line(workflow):
    for job, step in steps(load(workflow)):
        if "run" in step:
            assert "\n" not in step["run"].strip(), f"{workflow.name} job {job}: multi-line script {step['run']!r}"


def test_ci_lints_and_runs_the_tests_as_the_readme_does():
    ci = load(CI)
    assert "pull_request" in ci["on"]
    assert runs(ci["jobs"]["lint"])[-1] == "nox -s lint"
    assert runs(ci["jobs"]["tests"]) == ["sudo ./bootstrap && nox -s tests"]


def test_targets_json_is_exactly_the_matrix_of_targets_toml():
    out = subprocess.run([sys.executable, "-m", "pipeline", "targets", "--json"], cwd=PROJECT,
                         capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout)
    table = tomllib.loads(TARGETS_FILE.read_text())
    assert [r["name"] for r in rows] == list(table["targets"])
    defaults = table["defaults"]
    for row in rows:
        assert set(row) == {"name", "description", "backends", "gpu_archs", "builder", "tag", "commit",
                            "runtime_env"}
        t = table["targets"][row["name"]]
        assert row["description"] == t["description"]
        assert row["builder"] == t.get("builder", defaults["builder"])
        assert row["backends"] == t.get("backends", defaults["backends"])
        assert row["gpu_archs"] == t.get("gpu_archs", [])
        assert row["tag"] == defaults["source"]["tag"]
        assert row["commit"] == defaults["source"]["commit"]
        assert row["runtime_env"] == t.get("runtime", {}).get("env", {})
