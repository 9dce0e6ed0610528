"""kill -9 at each stage boundary of the table: the previous good output stays byte for byte, nothing
half-written is visible as output, and the next normal run removes what the dead process left (its
containers, its staging folders) and finishes. Real Docker engine, the miniature project.

For every stage of pipeline.stages.STAGES (the image stage included: runs use --image) a change makes
that stage and those after it redo. `python -m pipeline build cpu --image` then runs as a child and is
killed with SIGKILL when its log shows the stage start (`==> stage i/n STAGE`), and a second time when
its log shows the last line that stage wrote in the good build (just before it finishes). The builder stage
is killed at its boundaries while its image is cached (a new builder image costs minutes); its change
(a cmake variable) makes the stages after it redo.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline import stages
from pipeline.hashing import file_sha256
from pipeline.infra import container, owner

from . import miniollama
from .conftest import PROJECT, write_matrix

TABLE = stages.select(stages.STAGES, add=["image"])
LINE = re.compile(r"^\[cpu (?P<stage>\S+) [\d:]+\] (?P<text>.*)$")


def shape(text: str) -> str:
    """A log line without what changes from run to run (hashes, sizes, times)."""
    return re.sub(r"[0-9a-f]{8,}|\d+(\.\d+)?", "#", text)

HEADER = """

Description: kill test {n}
Author: Fixture
Origin: vendor
Upstream-Status: Inappropriate test fixture
Applies-To: >=1.2
Targets: cpu
"""


class Project:
    """The mini project's repository, matrix and patches, changed one stage at a time."""

    def __init__(self, tmp_path: Path, repo: Path, commit: str, settings):
        self.tmp, self.repo, self.commit, self.settings = tmp_path, repo, commit, settings
        self.overrides: dict = {"cmake_variables": {}, "runtime": {"env": {}}}
        self.n = 0
        self.settings.patches_dir.mkdir(exist_ok=True)
        self.write()

    @property
    def folder(self) -> Path:
        return self.settings.dist / "cpu"

    def write(self) -> None:
        write_matrix(self.settings.targets_file, self.repo, self.commit, **self.overrides)

    def change(self, stage: str) -> None:
        """Make `stage` and every stage after it redo."""
        self.n += 1
        CHANGES[stage](self)
        self.write()

    def new_commit(self) -> None:
        (self.repo / "NOTES.txt").write_text(f"change {self.n}\n")
        self.commit = miniollama.commit_files(self.repo, f"change {self.n}", tag="v1.2.3")

    def new_patch(self) -> None:
        (self.repo / f"patched-{self.n}.txt").write_text("patched\n")
        made = miniollama.commit_files(self.repo, f"add patched-{self.n}" + HEADER.format(n=self.n))
        miniollama.git(self.repo, "format-patch", "--zero-commit", "--no-signature", "--full-index",
                       f"--start-number={self.n}", "-1", made, "-o", str(self.settings.patches_dir))
        miniollama.git(self.repo, "reset", "--hard", "--quiet", "v1.2.3")

    def new_cmake_variable(self) -> None:
        self.overrides["cmake_variables"]["KILL_TEST_CHANGE"] = str(self.n)

    def new_runtime_env(self) -> None:
        self.overrides["runtime"]["env"]["KILL_TEST_CHANGE"] = str(self.n)

    def forget(self, stage: str) -> None:
        """Remove a stage's record beside the package."""
        stages.record_file(next(s for s in stages.STAGES if s.name == stage), self.folder).unlink()


# A change per stage that makes it (and every stage after it) redo. A new stage needs one here.
CHANGES: dict[str, Callable[[Project], None]] = {
    "source": Project.new_commit,
    "patches": Project.new_patch,
    "builder": Project.new_cmake_variable,  # the builder image stays cached; see the docstring
    "host_builder": Project.new_cmake_variable,  # likewise (the cpu target builds all on one builder)
    "build": Project.new_cmake_variable,
    "package": Project.new_runtime_env,
    "verify": lambda p: p.forget("verify"),
    "image": lambda p: p.forget("image"),
}


def sha256(path: Path) -> str:
    return file_sha256(path)


def outputs(folder: Path) -> dict[str, str]:
    """The package's published files: archive, manifest, SHA256SUMS, the saved image."""
    return {p.name: sha256(p) for p in sorted(folder.iterdir())
            if p.name.startswith("ollama-") or p.name in ("manifest.json", "SHA256SUMS")}


def consistent(folder: Path) -> None:
    """The archive, its manifest and SHA256SUMS describe each other."""
    manifest = json.loads((folder / "manifest.json").read_text())
    archive = folder / manifest["archive"]["name"]
    assert sha256(archive) == manifest["archive"]["sha256"]
    assert (folder / "SHA256SUMS").read_text() == f"{manifest['archive']['sha256']}  {archive.name}\n"


def env_for(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OLLAMA_SOURCE" and not k.startswith("PIPELINE_")}
    env.update(PIPELINE_CACHE=str(settings.cache), PIPELINE_PATCHES=str(settings.patches_dir),
               PYTHONUNBUFFERED="1")
    return env


def command(settings, image: bool) -> list[str]:
    return [sys.executable, "-m", "pipeline", "build", "cpu", *(["--image"] if image else []),
            "--targets-file",
            str(settings.targets_file), "--dist", str(settings.dist)]


def run_to_end(settings, image: bool) -> str:
    done = subprocess.run(command(settings, image), cwd=PROJECT, env=env_for(settings), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return (settings.dist / "cpu" / "build.log").read_text()


def last_lines(log: str) -> dict[str, str]:
    """Each stage's last line before its `<==` line, where it wrote one."""
    last: dict[str, str] = {}
    for line in log.splitlines():
        if (m := LINE.match(line)) and not m["text"].startswith(("==> ", "<== ")):
            last[m["stage"]] = shape(m["text"])
    return last


def run_and_kill(settings, stage: str, text: str, image: bool) -> int:
    """Start a build and SIGKILL it when its log shows `text` in `stage`; the dead process's pid."""
    log = settings.dist / "cpu" / "build.log"
    log.unlink(missing_ok=True)
    child = subprocess.Popen(command(settings, image), cwd=PROJECT, env=env_for(settings),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    try:
        while True:
            seen = log.read_text(errors="replace") if log.exists() else ""
            if any((m := LINE.match(line)) and m["stage"] == stage and shape(m["text"]) == shape(text)
                   for line in seen.splitlines()):
                break
            assert child.poll() is None, f"the build ended before `{text}` in {stage}: {child.stderr.read()}"
            assert time.monotonic() < deadline, f"no `{text}` in {stage} within 240 s"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    return child.pid


def debris(settings, pid: int) -> list[str]:
    """Staging and scratch folders and files that carry the dead process's mark."""
    mark = f".p{pid}-{owner.host()}."
    found = []
    for top in (settings.dist, settings.cache):
        for path in top.rglob("*"):
            if mark in path.name + ".":
                found.append(str(path))
    return found


def containers_of(engine, pid: int) -> list:
    return engine.containers.list(all=True, filters={"label": [f"{owner.PID_LABEL}={pid}",
                                                               f"{owner.HOST_LABEL}={owner.host()}"]})


def test_kill_9_at_every_stage_boundary_keeps_the_good_output_and_the_next_run_cleans_up(
        engine, mini_project, settings_for, tmp_path):
    assert set(CHANGES) == {s.name for s in TABLE}, "every stage of the table needs a change here"
    repo, commit = mini_project
    settings = settings_for(tmp_path / "targets.toml")
    project = Project(tmp_path, repo, commit, settings)
    last = last_lines(run_to_end(settings, image=True))
    folder = project.folder
    consistent(folder)
    dead: list[int] = []
    try:
        for index, stage in enumerate(TABLE):
            # What a finished run leaves visible (before the change, which may remove a stage's record).
            visible = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
            project.change(stage.name)
            good = outputs(folder)
            # The stage's first line, "==> stage i/n NAME" (its position compared as a shape only).
            kills = [("start", f"==> stage {index + 1}/{len(TABLE)} {stage.name}")]
            if stage.name in last:
                kills.append(("end", last[stage.name]))
            # The image stage runs only with --image; other stages are tested without it (saving the
            # image takes longer than the mini project's build): its saved tarball must stay as it is.
            image = stage.name == TABLE[-1].name
            for when, text in kills:
                pid = run_and_kill(settings, stage.name, text, image)
                dead.append(pid)
                where = f"killed at the {when} of {stage.name} (pid {pid})"
                if when == "start" or index < [s.name for s in TABLE].index("package"):
                    assert outputs(folder) == good, f"{where}: the last good output changed"
                else:
                    # The stage may have published its new output: whatever is there belongs together.
                    consistent(folder)
                left = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
                assert left <= visible, f"{where}: new visible files {sorted(left - visible)}"
                assert not [p for p in settings.dist.rglob("*") if p.name.endswith(".partial")
                            and not p.name.startswith(".")], where

            log = run_to_end(settings, image)
            ran = stages.select(stages.STAGES, add=["image"] if image else [])
            # Done, or cached where the kill landed after the stage's work was complete.
            assert all(re.search(f"<== {s.name}: (done|cached)", log) for s in ran), log
            consistent(folder)
            for pid in dead:
                assert debris(settings, pid) == [], \
                    f"after the run that followed {stage.name}: {pid}'s debris"
                assert containers_of(engine, pid) == [], f"after the run that followed {stage.name}"
    finally:
        for pid in dead:
            for c in containers_of(engine, pid):
                c.remove(force=True)
        for c in engine.containers.list(all=True, filters={
                "label": f"{container.LOG_LABEL}={settings.dist / 'cpu' / 'build.log'}"}):
            c.remove(force=True)


@pytest.fixture(autouse=True)
def _bounded_time():
    started = time.monotonic()
    yield
    assert time.monotonic() - started < 240, "the kill test should stay under 4 minutes"
