"""Crash debris: staging names carry their owner; only dead owners' debris of this host is removed."""

from __future__ import annotations

import os
import subprocess
import sys

from pipeline.infra import fsutil, owner


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_sweep_removes_only_dead_owners_debris_of_this_host(tmp_path):
    dead, host = dead_pid(), owner.host()
    gone = tmp_path / f".cpu.p{dead}-{host}.abc.partial"
    gone.mkdir()
    (gone / "half").write_text("x")
    mine = tmp_path / f".cpu{owner.mark()}def.partial"
    mine.mkdir()
    other_host = tmp_path / f".cpu.p{dead}-elsewhere.ghi.partial"
    other_host.mkdir()
    live = tmp_path / f".cpu.p{os.getppid()}-{host}.jkl.partial"
    live.mkdir()
    kept = tmp_path / "cpu"
    kept.mkdir()

    assert owner.sweep(tmp_path) == [gone]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(p.name for p in (mine, other_host, live, kept))


def test_staging_dir_names_its_owner_and_clears_a_killed_runs_folder(tmp_path):
    stale = tmp_path / f".out.p{dead_pid()}-{owner.host()}.x.partial"
    stale.mkdir()
    with fsutil.staging_dir(tmp_path / "out") as staging:
        assert owner.mark() in staging.name
        assert not stale.exists()
        (staging / "f").write_text("new")
    assert (tmp_path / "out" / "f").read_text() == "new"


def test_container_labels_name_pid_and_host():
    labels = owner.labels()
    assert labels[owner.PID_LABEL] == str(os.getpid()) and labels[owner.HOST_LABEL] == owner.host()
    assert not owner.dead_labels(labels)
    assert owner.dead_labels({owner.PID_LABEL: str(dead_pid()), owner.HOST_LABEL: owner.host()})
    assert not owner.dead_labels({owner.PID_LABEL: str(dead_pid()), owner.HOST_LABEL: "elsewhere"})
