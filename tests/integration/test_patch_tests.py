"""`patches test`: the series applied to the mini project, then go vet and go test in the Go builder."""

from __future__ import annotations

import pytest

from pipeline.config import targets
from pipeline.errors import CommandError
from pipeline.infra.log import Log
from pipeline.tools import patchtool

from . import miniollama
from .conftest import write_matrix
from .test_build_pipeline import HEADER

GO_TEST = """package version

import "testing"

func TestVersionIsStampable(t *testing.T) {
	if Version != "0.0.0" {
		t.Fatalf("default version %q, want %q", Version, "%s")
	}
}
"""


def make_patch(repo, tmp_path, want: str):
    (repo / "version" / "version_test.go").write_text(GO_TEST.replace('"%s"', f'"{want}"').replace(
        '!= "0.0.0"', f'!= "{want}"'))
    commit = miniollama.commit_files(repo, "add a version test" + HEADER.format(description="test"))
    (tmp_path / "patches").mkdir(exist_ok=True)
    miniollama.git(repo, *patchtool.FORMAT_PATCH, "-1", commit, "-o", str(tmp_path / "patches"))
    miniollama.git(repo, "reset", "--hard", "--quiet", "v1.2.3")


def run_test(mini_project, settings_for, tmp_path):
    repo, commit = mini_project
    settings = settings_for(write_matrix(tmp_path / "targets.toml", repo, commit), source=str(repo))
    matrix = targets.load(settings.targets_file)
    with Log("patches", tmp_path / "patches-test.log") as log:
        return patchtool.test(matrix, settings, "v1.2.3", log)


def test_go_packages_touched_by_the_series_are_vetted_and_tested(engine, mini_project, settings_for,
                                                                  tmp_path):
    make_patch(mini_project[0], tmp_path, "0.0.0")
    assert run_test(mini_project, settings_for, tmp_path) == ["./version"]
    log = (tmp_path / "patches-test.log").read_text()
    assert "+ go vet ./version" in log and "ok  \tgithub.com/ollama/ollama/version" in log


def test_a_failing_go_test_fails_the_session(engine, mini_project, settings_for, tmp_path):
    make_patch(mini_project[0], tmp_path, "9.9.9")
    with pytest.raises(CommandError, match="go test"):
        run_test(mini_project, settings_for, tmp_path)
