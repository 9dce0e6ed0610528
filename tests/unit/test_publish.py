"""publish.py against a fake `gh` on PATH: draft, uploads that overwrite, check, publish, and a re-run
after a failure injected at every step that finishes the release with no clean-up in between."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.errors import INTERRUPTED, PublishError, UsageError

PUB = PublishError.exit_code
FAKE = Path(__file__).with_name("fake_gh.py")
PROJECT = Path(__file__).resolve().parents[2]
TAG = "v1.2.3"


@pytest.fixture
def gh(tmp_path, monkeypatch):
    """A `gh` on PATH backed by fake_gh.py; returns helpers to read its state and calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "gh"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    state = tmp_path / "gh-state.json"
    state.write_text(json.dumps({"tags": [TAG, "--evil"], "releases": {}}))
    calls = tmp_path / "gh-calls.jsonl"
    calls.touch()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GH_STATE", str(state))
    monkeypatch.setenv("FAKE_GH_CALLS", str(calls))
    monkeypatch.delenv("FAKE_GH_FAIL", raising=False)

    class Fake:
        def state(self) -> dict:
            return json.loads(state.read_text())

        def calls(self) -> list[list[str]]:
            return [json.loads(line) for line in calls.read_text().splitlines()]

        def reset_calls(self) -> None:
            calls.write_text("")

        def fail(self, spec: str | None) -> None:
            if spec:
                monkeypatch.setenv("FAKE_GH_FAIL", spec)
            else:
                monkeypatch.delenv("FAKE_GH_FAIL", raising=False)
            data = self.state()
            data["counts"] = {}
            state.write_text(json.dumps(data))

    return Fake()


@pytest.fixture
def folder(tmp_path) -> Path:
    out = tmp_path / "dist" / "release"
    out.mkdir(parents=True)
    (out / "RELEASE_NOTES.md").write_text("# notes\n")
    (out / "ollama-0.12.5-cpu.tar.zst").write_bytes(b"cpu archive" * 100)
    (out / "ollama-0.12.5-cpu.tar.zst.manifest.json").write_text(manifest_json("cpu", "0.12.5"))
    (out / "ollama-0.24.0-gfx906.tar.zst.manifest.json").write_text(manifest_json("gfx906", "0.24.0"))
    (out / "ollama-0.12.5-gfx906.tar.zst.part-000").write_bytes(b"a" * 700)
    (out / "ollama-0.12.5-gfx906.tar.zst.part-001").write_bytes(b"b" * 300)
    (out / "SHA256SUMS").write_text("".join(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in sorted(out.iterdir())))
    return out


def manifest_json(target: str, version: str) -> str:
    from pipeline.stages.manifest import VERSION

    return json.dumps({
        "manifest_version": VERSION, "target": target, "description": target,
        "version": f"{version}+{target}",
        "upstream": {"url": "https://github.com/ollama/ollama.git", "tag": f"v{version}",
                     "commit": "3" * 40, "version": version},
        "patches": [], "builder": {"name": "b", "image": "b:1", "image_id": "sha256:0", "template": "t",
                                   "suite": "bullseye", "packages": []},
        "backends": ["CPU"], "gpu_archs": [], "runtime_env": {}, "hashes": {}, "source_date_epoch": 1,
        "files": [],
        "archive": {"name": f"ollama-{version}-{target}.tar.zst", "size": 1, "sha256": "ab" * 32}})


def expected_assets(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.iterdir()}


def published_exactly(state: dict, folder: Path, tag: str = TAG) -> bool:
    release = state["releases"][tag]
    assets = {n: a["size"] for n, a in release["assets"].items() if a["state"] == "uploaded"}
    return (release["draft"] is False and assets == expected_assets(folder)
            and all(a["state"] == "uploaded" for a in release["assets"].values())
            and all(a["sha256"] == hashlib.sha256((folder / n).read_bytes()).hexdigest()
                    for n, a in release["assets"].items())
            and not state.get("duplicates"))


def run(folder: Path, tag: str = TAG, *extra: str) -> int:
    return main(["publish", *extra, "--", tag, str(folder)])


def test_a_first_run_drafts_uploads_checks_and_publishes(gh, folder):
    assert run(folder) == 0
    state = gh.state()
    assert published_exactly(state, folder)
    assert state["releases"][TAG]["notes"] == "# notes\n"
    # The title names the upstream versions the assets carry; a plain version tag is no pre-release.
    assert state["releases"][TAG]["title"] == "v1.2.3: Ollama 0.12.5, 0.24.0"
    assert state["releases"][TAG]["prerelease"] is False
    subcommands = [c[1] for c in gh.calls()]
    n = len(expected_assets(folder))
    assert subcommands == ["view", "create", *["upload"] * n, "view", "edit", "view"]
    create = gh.calls()[1]
    assert {"--draft", "--verify-tag"} <= set(create)
    assert all("--clobber" in c for c in gh.calls() if c[1] == "upload")
    assert gh.calls()[-2] == ["release", "edit", "--draft=false", "--", TAG]


def test_every_gh_call_is_echoed_by_the_command_runner_into_the_log(gh, folder):
    assert run(folder) == 0
    log = (folder.parent / "publish.log").read_text()
    assert log.count("+ gh release ") == len(gh.calls())
    assert "<== publish: done" in log


def test_tags_and_files_are_never_where_gh_reads_options(gh, folder):
    (folder / "--help").write_text("an asset named like an option\n")
    assert run(folder) == 0
    for call in gh.calls():
        cut = call.index("--")
        assert call[cut + 1] == TAG
        assert "--help" not in call[:cut]
    assert published_exactly(gh.state(), folder)


def test_a_tag_that_is_not_a_tag_name_is_refused_before_any_gh_call(gh, folder, capsys):
    gh.reset_calls()
    assert run(folder, "--evil") == UsageError.exit_code
    assert capsys.readouterr().err.startswith("error: tag '--evil' is not a valid git tag")
    assert gh.calls() == []


FAILURES = [
    "view:1:before",       # the first look at the release
    "create:1:before",     # creating the draft
    "create:1:after",      # the draft was made, then gh failed (half-way create)
    "upload:1:before",     # the first upload
    "upload:3:partial",    # an upload cut off half-way, the asset left incomplete
    "upload:7:after",      # the last upload arrived, gh still failed
    "view:2:before",       # the check after the uploads
    "publish:1:before",    # publishing the draft
    "publish:1:after",     # the draft was published, then gh failed
    "view:3:before",       # reading back the published release
]


@pytest.mark.parametrize("failure", FAILURES)
def test_a_rerun_after_a_failure_at_any_step_finishes_with_no_clean_up(gh, folder, failure):
    assert len(expected_assets(folder)) == 7  # the upload:7 case is the last upload
    gh.fail(failure)
    assert run(folder) == PUB
    assert gh.state()["releases"].get(TAG, {}).get("draft", True) or failure.startswith(("publish", "view:3"))
    gh.fail(None)
    assert run(folder) == 0
    assert published_exactly(gh.state(), folder)


def test_a_failed_rerun_can_be_rerun_again(gh, folder):
    for failure in ("create:1:after", "upload:2:partial", "publish:1:before"):
        gh.fail(failure)
        assert run(folder) == PUB
    gh.fail(None)
    assert run(folder) == 0
    assert published_exactly(gh.state(), folder)


def test_a_rerun_replaces_assets_and_notes_of_an_earlier_attempt_and_deletes_stale_ones(gh, folder):
    gh.fail("publish:1:before")
    assert run(folder) == PUB
    # The next attempt has a rebuilt archive, new notes, and one split archive is now whole.
    (folder / "ollama-0.12.5-cpu.tar.zst").write_bytes(b"rebuilt" * 10)
    (folder / "RELEASE_NOTES.md").write_text("# new notes\n")
    (folder / "ollama-0.12.5-gfx906.tar.zst.part-000").unlink()
    (folder / "ollama-0.12.5-gfx906.tar.zst.part-001").unlink()
    (folder / "ollama-0.12.5-gfx906.tar.zst").write_bytes(b"whole" * 10)
    gh.fail(None)
    gh.reset_calls()
    assert run(folder) == 0
    state = gh.state()
    assert published_exactly(state, folder)
    assert state["releases"][TAG]["notes"] == "# new notes\n"
    deleted = sorted(c[-1] for c in gh.calls() if c[1] == "delete-asset")
    assert deleted == ["ollama-0.12.5-gfx906.tar.zst.part-000", "ollama-0.12.5-gfx906.tar.zst.part-001"]
    assert not any(c[1] == "create" for c in gh.calls())


def test_a_rerun_after_success_changes_nothing(gh, folder):
    assert run(folder) == 0
    gh.reset_calls()
    assert run(folder) == 0
    assert [c[1] for c in gh.calls()] == ["view"]


def test_a_published_release_that_differs_is_refused_and_left_alone(gh, folder, capsys):
    assert run(folder) == 0
    before = gh.state()["releases"]
    (folder / "ollama-0.12.5-cpu.tar.zst").write_bytes(b"different")
    gh.reset_calls()
    assert run(folder) == PUB
    assert "already published and differs" in capsys.readouterr().err
    assert [c[1] for c in gh.calls()] == ["view"]
    assert gh.state()["releases"] == before


def test_a_missing_tag_fails_at_the_draft_and_publishes_nothing(gh, folder, capsys):
    assert run(folder, "v9.9.9") == PUB
    assert "v9.9.9" not in gh.state()["releases"]
    assert "--verify-tag" in capsys.readouterr().err


def test_draft_only_stops_before_publishing(gh, folder):
    assert run(folder, TAG, "--draft-only") == 0
    assert gh.state()["releases"][TAG]["draft"] is True
    assert run(folder) == 0
    assert published_exactly(gh.state(), folder)


def test_a_folder_without_notes_is_refused_before_any_gh_call(gh, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(empty) == PUB
    assert "nox -s release" in capsys.readouterr().err
    assert gh.calls() == []


def test_a_pre_release_tag_is_drafted_and_published_as_a_pre_release(gh, folder):
    state = gh.state()
    state["tags"].append("v1.3.0-rc.1")
    Path(os.environ["FAKE_GH_STATE"]).write_text(json.dumps(state))
    assert run(folder, "v1.3.0-rc.1") == 0
    release = gh.state()["releases"]["v1.3.0-rc.1"]
    assert release["prerelease"] is True and release["draft"] is False
    assert release["title"] == "v1.3.0-rc.1: Ollama 0.12.5, 0.24.0"
    assert "--prerelease=true" in next(c for c in gh.calls() if c[1] == "create")


def test_a_symbolic_link_in_the_folder_is_refused_before_any_gh_call(gh, folder, tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for publishing\n")
    (folder / "notes.txt").symlink_to(secret)
    gh.reset_calls()
    assert run(folder) == PUB
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "notes.txt is a symbolic link" in err and "only files inside" in err
    assert gh.calls() == []


def hang(monkeypatch, tmp_path, spec: str) -> Path:
    pids = tmp_path / "gh-pids"
    pids.touch()
    monkeypatch.setenv("FAKE_GH_HANG", spec)
    monkeypatch.setenv("FAKE_GH_PIDS", str(pids))
    return pids


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (ended, not yet reaped by its parent) counts as gone.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    return False


def test_a_hung_gh_is_ended_and_tried_again_with_one_line_each_time(gh, folder, tmp_path, monkeypatch,
                                                                     capsys):
    pids = hang(monkeypatch, tmp_path, "upload:2:3")  # the second upload hangs twice, then answers
    assert run(folder, TAG, "--gh-timeout", "1") == 0
    assert published_exactly(gh.state(), folder)
    log = (folder.parent / "publish.log").read_text()
    assert log.count("gh release upload did not answer within 1s") == 2
    assert "(try 1 of 3): ended it, trying again" in log and "(try 2 of 3)" in log
    assert all(gone(int(p)) for p in pids.read_text().split())


def test_a_gh_that_never_answers_fails_in_one_line_and_leaves_a_draft(gh, folder, tmp_path, monkeypatch,
                                                                       capsys):
    hang(monkeypatch, tmp_path, "create:1:9")
    assert run(folder, TAG, "--gh-timeout", "1") == PUB
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith("error: gh release create did not answer within 1s, 3 times in a row")
    assert "re-run" in errors[0]
    monkeypatch.delenv("FAKE_GH_HANG")
    assert run(folder) == 0
    assert published_exactly(gh.state(), folder)


def test_a_create_that_hung_after_making_the_draft_is_not_repeated(gh, folder, tmp_path, monkeypatch):
    """A hung create may have made the draft: the next try looks first, so no second draft is made."""
    state = gh.state()
    state["releases"][TAG] = {"draft": True, "title": TAG, "notes": "", "assets": {}}
    Path(os.environ["FAKE_GH_STATE"]).write_text(json.dumps(state))
    monkeypatch.setattr("pipeline.release.publish.GitHub.view",
                        _first_none(__import__("pipeline.release.publish", fromlist=["GitHub"]).GitHub.view))
    hang(monkeypatch, tmp_path, "create:1")
    assert run(folder, TAG, "--gh-timeout", "1") == 0
    assert [c[1] for c in gh.calls()].count("create") == 1
    assert published_exactly(gh.state(), folder)


def _first_none(view):
    """`view` that reports no release at its first call (as before the hung create)."""
    calls = []

    def wrapped(self, tag):
        calls.append(tag)
        return None if len(calls) == 1 else view(self, tag)
    return wrapped


def test_sigterm_ends_the_running_gh_and_the_publish(gh, folder, tmp_path, monkeypatch):
    pids = hang(monkeypatch, tmp_path, "upload:1")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "publish", "--", TAG, str(folder)],
                            cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not pids.read_text().strip():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    child = int(pids.read_text().split()[0])
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == INTERRUPTED, err
    assert err.splitlines()[-1].startswith("interrupted")
    deadline = time.monotonic() + 10
    while not gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gone(child), f"gh (pid {child}) outlived publish"
    assert gh.state()["releases"][TAG]["draft"] is True
