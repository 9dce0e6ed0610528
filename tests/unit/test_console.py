"""console.py: GitHub Actions groups and step summary, quiet mode on a terminal; the log file keeps all."""

from __future__ import annotations

import io
import json

import pytest

from pipeline.infra.console import Console
from pipeline.infra.log import Log


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def build(log: Log, lines: int = 3, fail: bool = False) -> None:
    with log.stage("source") as stage:
        stage.cached("tree exported earlier")
    with log.stage("build"):
        with log.stage("inner"):
            log.line("nested")
        for i in range(lines):
            log.line(f"cc -c file{i}.c")
        if fail:
            raise RuntimeError("compiler failed")
    with log.stage("package"):
        log.line("packed")


def test_the_policy_comes_from_the_environment_only_for_the_process_stderr(monkeypatch):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert Log("cpu").policy.github
    assert not Log("cpu", console=io.StringIO()).policy.github


def test_github_actions_folds_each_top_level_stage_into_a_group(tmp_path):
    out = io.StringIO()
    with Log("cpu", tmp_path / "build.log", policy=Console(out, github=True)) as log:
        log.line("before")
        build(log)
    text = out.getvalue().splitlines()
    assert [t for t in text if t.startswith("::")] == [
        "::group::cpu: source", "::endgroup::", "::group::cpu: build", "::endgroup::",
        "::group::cpu: package", "::endgroup::"]
    opened = text.index("::group::cpu: build")
    assert text[opened + 1].endswith("==> build")
    assert text[text.index("::endgroup::", opened) - 1].split("] ", 1)[1].startswith("<== build: done")
    # Every line on the console is in the file, prefixed; no command line can start a workflow command.
    logged = (tmp_path / "build.log").read_text().splitlines()
    assert [t for t in text if not t.startswith("::")] == logged
    assert all(line.startswith("[cpu ") for line in logged)


def test_a_group_left_open_by_a_failure_is_closed(tmp_path):
    out = io.StringIO()
    with pytest.raises(RuntimeError), Log("cpu", None, policy=Console(out, github=True)) as log:
        build(log, fail=True)
    assert out.getvalue().count("::group::") == out.getvalue().count("::endgroup::") == 2


def test_github_step_summary_gets_a_table_per_target(tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    for target in ("cpu", "gfx906"):
        with Log(target, tmp_path / target / "build.log", policy=Console.from_env(io.StringIO())) as log:
            build(log)
    text = summary.read_text()
    assert text.count("### ") == 2
    assert "### cpu: done in " in text and "### gfx906: done in " in text
    assert "| source | cached |" in text
    assert "| build | done |" in text and "| inner | done |" in text


def test_step_summary_of_a_failure_holds_the_last_lines(tmp_path):
    summary = tmp_path / "summary.md"
    with pytest.raises(RuntimeError), \
            Log("cpu", tmp_path / "build.log",
                policy=Console(io.StringIO(), github=True, summary=summary)) as log:
        build(log, lines=80, fail=True)
    text = summary.read_text()
    assert "### cpu: failed in " in text
    assert "| build | failed |" in text
    assert "cc -c file79.c" in text and "cc -c file29.c" not in text
    assert "Full log: `build.log`" in text


def test_quiet_on_a_terminal_shows_stage_lines_and_progress_not_command_output(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_QUIET", "1")
    term = Terminal()
    policy = Console.from_env(term)
    assert policy.quiet
    with Log("cpu", tmp_path / "build.log", policy=policy) as log:
        build(log, lines=200)
    shown = term.getvalue()
    assert "cc -c file" not in shown
    assert "==> build" in shown and "<== package: done" in shown
    assert "(no estimate yet)" in shown
    assert "cc -c file199.c" in (tmp_path / "build.log").read_text()  # the full log stays on disk


def test_quiet_needs_a_terminal_and_is_off_under_github_actions(monkeypatch):
    monkeypatch.setenv("PIPELINE_QUIET", "1")
    assert not Console.from_env(io.StringIO()).quiet
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert not Console.from_env(Terminal()).quiet


def test_quiet_prints_the_last_50_lines_when_the_run_fails(tmp_path):
    term = Terminal()
    with pytest.raises(RuntimeError), Log("cpu", tmp_path / "build.log",
                                          policy=Console(term, quiet=True)) as log:
        build(log, lines=120, fail=True)
    shown = term.getvalue()
    tail = shown[shown.index("--- the last 50 lines of the log ---"):]
    assert "cc -c file119.c" in tail and "cc -c file70.c" not in tail
    assert len([t for t in tail.splitlines() if t.startswith("[cpu ")]) == 50
    assert f"full log: {tmp_path / 'build.log'}" in tail


def test_progress_is_estimated_from_the_stage_times_of_the_run_before(tmp_path):
    path = tmp_path / "build.log"
    with Log("cpu", path, policy=Console(io.StringIO())) as log:
        build(log)
    timings = json.loads((tmp_path / "build.timings.json").read_text())
    # Top-level stages only (a nested one is inside its parent's time); a cached one says nothing.
    assert set(timings) == {"build", "package"}
    (tmp_path / "build.timings.json").write_text(json.dumps({"source": 10, "build": 80, "package": 10}))
    policy = Console(Terminal(), quiet=True)
    log = Log("cpu", path, policy=policy)
    with log.stage("source"):
        pass
    with log.stage("build"):
        now = policy._stage_started + 40
        assert policy.progress(now) == "[cpu build] 50% done, about 50.0s left"
        assert policy.progress(policy._stage_started + 500) == "[cpu build] 90% done, about 10.0s left"
    log.close()


def test_a_failed_run_keeps_the_stage_times_of_the_last_good_one(tmp_path):
    path = tmp_path / "build.log"
    (tmp_path / "build.timings.json").write_text('{"build": 99.0}\n')
    with pytest.raises(RuntimeError), Log("cpu", path, policy=Console(io.StringIO())) as log:
        build(log, fail=True)
    assert json.loads((tmp_path / "build.timings.json").read_text()) == {"build": 99.0}
