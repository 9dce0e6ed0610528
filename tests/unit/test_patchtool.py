"""Maintainer tooling on a generated upstream: tags, and patches that apply, conflict, are already
upstream or are out of range. Real git throughout; no Docker."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pipeline.config import targets
from pipeline.config.settings import Settings
from pipeline.errors import ConfigError, PatchError
from pipeline.tools import patchtool

from .conftest import PROJECT, git, retagged

A = "".join(f"a line {i}\n" for i in range(1, 21))
B = "".join(f"b line {i}\n" for i in range(1, 21))

HEADER = """{subject}

Why.

Description: {subject}
Author: Test
Origin: vendor
Upstream-Status: {status}
Applies-To: {applies_to}
Targets: {targets}
"""


def commit(repo: Path, message: str, files: dict[str, str], tag: str | None = None) -> str:
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", message)
    if tag:
        git(repo, "tag", tag)
    return git(repo, "rev-parse", "HEAD")


def sub(text: str, n: int, new: str) -> str:
    lines = text.splitlines(keepends=True)
    lines[n - 1] = new + "\n"
    return "".join(lines)


@pytest.fixture
def upstream(tmp_path) -> Path:
    """v1.0.0; v1.1.0 takes patch 0001's change and rewrites the line patch 0002 edits."""
    repo = tmp_path / "upstream"
    repo.mkdir()
    git(repo, "init", "--quiet", "--initial-branch=main")
    commit(repo, "base", {"a.txt": A, "b.txt": B}, tag="v1.0.0")
    commit(repo, "upstream work", {"a.txt": sub(A, 5, "a line five"), "b.txt": sub(B, 2, "upstream b two")},
           tag="v1.1.0")
    return repo


@pytest.fixture
def series_dir(tmp_path, upstream) -> Path:
    """Four patches made against v1.0.0 with the pipeline's own format-patch options."""
    work = tmp_path / "author"
    git(tmp_path, "clone", "--quiet", str(upstream), str(work))
    git(work, "checkout", "--quiet", "v1.0.0")
    patches = [
        ("fix a five", {"a.txt": sub(A, 5, "a line five")}, ">=1.0", "Pending"),
        ("change b two", {"b.txt": sub(B, 2, "our b two")}, ">=1.0", "Pending"),
        ("old only", {"a.txt": sub(sub(A, 5, "a line five"), 15, "a fifteen")}, "<1.1", "Inappropriate old"),
        ("add c", {"c.txt": "c\n"}, ">=1.0", "Pending"),
    ]
    for subject, files, spec, status in patches:
        commit(work, HEADER.format(subject=subject, status=status, applies_to=spec, targets="cpu"), files)
    out = tmp_path / "patches"
    git(work, *patchtool.FORMAT_PATCH, "-o", str(out), "v1.0.0..HEAD")
    return out


@pytest.fixture
def env(tmp_path, upstream, series_dir):
    text = (PROJECT / "targets.toml").read_text()
    matrix_file = tmp_path / "targets.toml"
    matrix_file.write_text(retagged(text, "v1.0.0", git(upstream, "rev-parse", "v1.0.0")))
    matrix = targets.load(matrix_file)
    settings = Settings(targets_file=matrix_file, patches_dir=series_dir, templates_dir=PROJECT / "docker",
                        dist=tmp_path / "dist", cache=tmp_path / "cache", source=str(upstream))
    return matrix, settings


def verdicts_by(verdicts, ref):
    return {v.patch: v.verdict for v in verdicts if v.ref == ref}


def test_check_reports_each_patch_against_each_ref(env, log):
    matrix, settings = env
    verdicts = patchtool.check(matrix, settings, ["v1.0.0", "v1.1.0"], log)

    assert verdicts_by(verdicts, "v1.0.0") == {
        "0001-fix-a-five.patch": "applies", "0002-change-b-two.patch": "applies",
        "0003-old-only.patch": "applies", "0004-add-c.patch": "applies"}
    assert verdicts_by(verdicts, "v1.1.0") == {
        "0001-fix-a-five.patch": "already upstream", "0002-change-b-two.patch": "conflicts",
        "0003-old-only.patch": "out of range", "0004-add-c.patch": "applies"}
    (conflict,) = patchtool.failed(verdicts)
    assert conflict.patch == "0002-change-b-two.patch" and conflict.detail == "b.txt, hunk at line 1"
    assert conflict.targets == ("cpu",)
    table = patchtool.table(verdicts)
    assert "conflicts (b.txt, hunk at line 1)" in table and "already upstream" in table


def test_check_of_an_unknown_ref_names_it(env, log):
    matrix, settings = env
    with pytest.raises(Exception, match=r"tag v9.9.9 not found"):
        patchtool.check(matrix, settings, ["v9.9.9"], log)


def test_apply_makes_one_commit_per_patch_in_range(env, tmp_path, log):
    matrix, settings = env
    work = tmp_path / "work"
    names = patchtool.apply(matrix, settings, "v1.0.0", work, log)

    assert names == ["0001-fix-a-five.patch", "0002-change-b-two.patch", "0003-old-only.patch",
                     "0004-add-c.patch"]
    subjects = git(work, "log", "--format=%s", "--reverse").splitlines()
    assert subjects[1:] == ["fix a five", "change b two", "old only", "add c"]
    assert (work / "c.txt").read_text() == "c\n"
    state = json.loads((work / ".git" / patchtool.STATE_FILE).read_text())
    assert state["ref"] == "v1.0.0" and len(state["patches"]) == 4


def test_apply_skips_patches_already_upstream_and_stops_at_a_conflict(env, tmp_path, log):
    matrix, settings = env
    with pytest.raises(PatchError, match=r"0002-change-b-two.patch does not apply to v1.1.0"):
        patchtool.apply(matrix, settings, "v1.1.0", tmp_path / "work", log)
    assert "skipping 0001-fix-a-five.patch: already upstream in v1.1.0" in log.path.read_text()


def test_apply_refuses_a_folder_that_is_not_empty(env, tmp_path, log):
    matrix, settings = env
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        patchtool.apply(matrix, settings, "v1.0.0", tmp_path / "busy", log)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_refresh_without_edits_changes_no_byte(env, tmp_path, log):
    matrix, settings = env
    before = snapshot(settings.patches_dir)
    mtimes = {p.name: p.stat().st_mtime_ns for p in settings.patches_dir.iterdir()}
    patchtool.apply(matrix, settings, "v1.0.0", tmp_path / "work", log)

    changes = patchtool.refresh(matrix, settings, tmp_path / "work", log)

    assert snapshot(settings.patches_dir) == before
    assert {p.name: p.stat().st_mtime_ns for p in settings.patches_dir.iterdir()} == mtimes
    assert sorted(changes["unchanged"]) == sorted(before) and not changes["updated"]


def test_refresh_after_editing_and_adding_commits(env, tmp_path, log):
    matrix, settings = env
    work = tmp_path / "work"
    patchtool.apply(matrix, settings, "v1.0.0", work, log)
    before = snapshot(settings.patches_dir)
    (work / "c.txt").write_text("c, improved\n")
    git(work, "commit", "--quiet", "-a", "--amend", "--no-edit")
    (work / "d.txt").write_text("d\n")
    git(work, "add", "d.txt")
    git(work, "commit", "--quiet", "-m", HEADER.format(subject="add d", status="Pending", applies_to=">=1.0",
                                                       targets="cpu"))

    changes = patchtool.refresh(matrix, settings, work, log)

    assert changes["updated"] == ["0004-add-c.patch"]
    assert changes["added"] == ["0005-add-d.patch"]
    assert "+c, improved" in (settings.patches_dir / "0004-add-c.patch").read_text()
    assert (settings.patches_dir / "0003-old-only.patch").read_bytes() == before["0003-old-only.patch"]


def test_refresh_refuses_a_commit_without_the_header_block_and_writes_nothing(env, tmp_path, log):
    matrix, settings = env
    work = tmp_path / "work"
    patchtool.apply(matrix, settings, "v1.0.0", work, log)
    before = snapshot(settings.patches_dir)
    (work / "e.txt").write_text("e\n")
    git(work, "add", "e.txt")
    git(work, "commit", "--quiet", "-m", "no header")

    with pytest.raises(ConfigError, match="header field 'Description' is missing"):
        patchtool.refresh(matrix, settings, work, log)
    assert snapshot(settings.patches_dir) == before


def test_touched_go_packages_come_from_the_diffs(tmp_path):
    from pipeline.config import series

    from .conftest import patch_text

    diff = ("diff --git a/llm/memory.go b/llm/memory.go\n--- a/llm/memory.go\n+++ b/llm/memory.go\n"
            "diff --git a/main.go b/main.go\n--- a/main.go\n+++ b/main.go\n"
            "diff --git a/CMakeLists.txt b/CMakeLists.txt\n")
    path = tmp_path / "0001-x.patch"
    path.write_text(patch_text("x", diff))
    assert patchtool.touched_go_packages([series.parse(path)]) == ["./.", "./llm"]



def test_refresh_keeps_names_and_numbers_of_a_reworded_commit(env, tmp_path, log):
    matrix, settings = env
    work = tmp_path / "work"
    patchtool.apply(matrix, settings, "v1.0.0", work, log)
    # Reword the first commit (0001) with a rebase: its subject and description change.
    message = git(work, "log", "--format=%B", "-n1", "HEAD~3").replace("fix a five", "fix line five of a")
    env_editor = {"GIT_SEQUENCE_EDITOR": "sed -i '1s/^pick/edit/'"}
    import os
    import subprocess
    subprocess.run(["git", "rebase", "--quiet", "-i", "HEAD~4"], cwd=work, env={**os.environ, **env_editor},
                   check=True, capture_output=True)
    git(work, "commit", "--quiet", "--amend", "-m", message)
    git(work, "rebase", "--continue")

    changes = patchtool.refresh(matrix, settings, work, log)

    assert changes["updated"] == ["0001-fix-a-five.patch"] and not changes["added"] and not changes["removed"]
    text = (settings.patches_dir / "0001-fix-a-five.patch").read_text()
    assert "Subject: [PATCH] fix line five of a" in text
    assert patchtool.TRAILER not in text


def test_refresh_of_reordered_commits_keeps_every_file_name(env, tmp_path, log):
    matrix, settings = env
    work = tmp_path / "work"
    patchtool.apply(matrix, settings, "v1.0.0", work, log)
    names_before = sorted(p.name for p in settings.patches_dir.iterdir())
    import os
    import subprocess
    # Swap the last two commits.
    subprocess.run(["git", "rebase", "--quiet", "-i", "HEAD~2"], cwd=work, check=True, capture_output=True,
                   env={**os.environ, "GIT_SEQUENCE_EDITOR": "sed -i -n '2p;1h;${x;p}'"})

    changes = patchtool.refresh(matrix, settings, work, log)

    assert sorted(p.name for p in settings.patches_dir.iterdir()) == names_before
    assert not changes["added"] and not changes["removed"]
    assert all(patchtool.TRAILER not in p.read_text() for p in settings.patches_dir.iterdir())


def test_refresh_refuses_a_state_file_naming_paths_outside_patches(env, tmp_path, log):
    matrix, settings = env
    work = tmp_path / "work"
    patchtool.apply(matrix, settings, "v1.0.0", work, log)
    victim = tmp_path / "victim.patch"
    victim.write_text("keep me")
    state = json.loads((work / ".git" / patchtool.STATE_FILE).read_text())
    state["patches"].append({"name": "../victim.patch", "subject": "x"})
    (work / ".git" / patchtool.STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(ConfigError, match="is not a patch name"):
        patchtool.refresh(matrix, settings, work, log)
    assert victim.read_text() == "keep me"


def test_a_patch_after_a_conflicting_one_is_blocked_not_a_conflict_of_its_own(env, tmp_path, upstream, log):
    """0002 is made on top of 0001 (its context is 0001's line): where 0001 conflicts, 0002 cannot apply
    either, and check says it is blocked by 0001 rather than reporting a second conflict. A patch after the
    conflict that applies on its own still applies."""
    matrix, settings = env
    work = tmp_path / "stacked"
    git(tmp_path, "clone", "--quiet", str(upstream), str(work))
    git(work, "checkout", "--quiet", "v1.0.0")
    first = sub(B, 2, "our b two")
    steps = (("change b two", {"b.txt": first}), ("then b three", {"b.txt": sub(first, 3, "b 3")}),
             ("add c", {"c.txt": "c\n"}))
    for subject, files in steps:
        commit(work, HEADER.format(subject=subject, status="Pending", applies_to=">=1.0", targets="cpu"),
               files)
    stacked = tmp_path / "stacked-patches"
    git(work, *patchtool.FORMAT_PATCH, "-o", str(stacked), "v1.0.0..HEAD")
    settings = dataclasses.replace(settings, patches_dir=stacked)

    verdicts = patchtool.check(matrix, settings, ["v1.1.0"], log)
    by = {v.patch: v for v in verdicts}
    assert [v.verdict for v in verdicts] == ["conflicts", "blocked", "applies"]
    assert by["0002-then-b-three.patch"].detail == "after 0001-change-b-two.patch, which conflicts"
    assert [v.patch for v in patchtool.failed(verdicts)] == ["0001-change-b-two.patch"]
    assert "blocked (after 0001-change-b-two.patch, which conflicts)" in patchtool.table(verdicts)
