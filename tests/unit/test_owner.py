"""Crash debris: what a run stages is a folder named for its owner with the owner's marker inside; only
dead owners' folders of this host are removed, never a user's file or folder that merely looks alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pipeline.infra import fsutil, owner


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def debris_of(parent, pid: int, host: str, kind: str = "partial", *, marker: bool = True, base: str = ".cpu"):
    """A folder as owned_dir makes them, for another process."""
    token = os.urandom(8).hex()
    path = parent / f"{base}.{owner.TAG}.p{pid}-{host}.{token}.{kind}"
    path.mkdir()
    if marker:
        (path / owner.OWNER_FILE).write_text(json.dumps({"pid": pid, "host": host, "token": token}))
    (path / "half").write_text("x")
    return path


def test_sweep_removes_only_dead_owners_debris_of_this_host(tmp_path):
    dead, host = dead_pid(), owner.host()
    gone = debris_of(tmp_path, dead, host)
    old = debris_of(tmp_path, dead, host, "old")
    mine = owner.owned_dir(tmp_path, ".cpu", "partial")
    other_host = debris_of(tmp_path, dead, "elsewhere")
    live = debris_of(tmp_path, os.getppid(), host)
    kept = tmp_path / "cpu"
    kept.mkdir()

    assert sorted(owner.sweep(tmp_path)) == sorted([gone, old])
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(p.name for p in (mine, other_host, live, kept))


def test_a_users_file_or_folder_shaped_like_debris_survives_the_sweep(tmp_path):
    dead, host = dead_pid(), owner.host()
    # The names earlier versions used, and the exact form without (or with a wrong) marker.
    old_style_file = tmp_path / f".manifest.json.p{dead}-{host}.abc123.partial"
    old_style_file.write_text("a user's notes")
    old_style_dir = tmp_path / f".cpu.p{dead}-{host}.xyz.partial"
    old_style_dir.mkdir()
    (old_style_dir / "mine").write_text("a user's file")
    shaped_file = tmp_path / f".cpu.{owner.TAG}.p{dead}-{host}.{'ab' * 8}.partial"
    shaped_file.write_text("a user's file")
    debris_of(tmp_path, dead, host, marker=False, base=".x")  # no marker: a user's folder
    wrong_marker = debris_of(tmp_path, dead, host, base=".y")
    (wrong_marker / owner.OWNER_FILE).write_text(json.dumps({"pid": dead, "host": host, "token": "0" * 16}))
    before = sorted(p.name for p in tmp_path.iterdir())

    assert owner.sweep(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (old_style_dir / "mine").read_text() == "a user's file"


def test_an_empty_folder_of_the_form_goes_a_kill_between_mkdir_and_marker_leaves_it(tmp_path):
    dead = dead_pid()
    empty = tmp_path / f".cpu.{owner.TAG}.p{dead}-{owner.host()}.{'cd' * 8}.partial"
    empty.mkdir()
    assert owner.sweep(tmp_path) == [empty]


def test_staging_dir_is_owned_and_clears_a_killed_runs_folder(tmp_path):
    stale = debris_of(tmp_path, dead_pid(), owner.host(), base=".out")
    with fsutil.staging_dir(tmp_path / "out") as staging:
        assert owner.mine(staging.parent) and (staging.parent / owner.OWNER_FILE).is_file()
        assert not stale.exists()
        (staging / "f").write_text("new")
    assert (tmp_path / "out" / "f").read_text() == "new"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["f"], "no marker in the result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_container_labels_name_pid_and_host():
    labels = owner.labels()
    assert labels[owner.PID_LABEL] == str(os.getpid()) and labels[owner.HOST_LABEL] == owner.host()
    assert not owner.dead_labels(labels)
    assert owner.dead_labels({owner.PID_LABEL: str(dead_pid()), owner.HOST_LABEL: owner.host()})
    assert not owner.dead_labels({owner.PID_LABEL: str(dead_pid()), owner.HOST_LABEL: "elsewhere"})
