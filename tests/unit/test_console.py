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

    def fileno(self) -> int:
        raise io.UnsupportedOperation("a terminal of 80 columns, as far as the console can tell")


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
    policy._width = lambda: 200
    with Log("cpu", tmp_path / "build.log", policy=policy) as log:
        log.expect_stages(["source", "build", "package"])
        with log.stage("source", 1, 3):
            pass
        with log.stage("build", 2, 3):
            with log.step("compile CPU", 1, 2):
                for i in range(200):
                    log.line(f"[{i + 1}/200 {(i + 1) // 2}%] cc -c file{i}.c")
            with log.step("go build", 2, 2):
                pass
        with log.stage("package", 3, 3):
            log.line("packed")
    shown = term.getvalue()
    assert "cc -c file" not in shown
    assert "==> stage 2/3 build" in shown and "--> step 1/2 compile CPU" in shown
    assert "<== package: done" in shown
    # ninja's counter as a percentage, with a time left from its own rate: no earlier run needed
    assert "[cpu] stage 2/3 build, step 1/2 compile CPU: 100/200 (50%); about " in shown
    assert "left in this step" in shown
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


def test_progress_is_estimated_from_the_stage_and_step_times_of_the_run_before(tmp_path):
    path = tmp_path / "build.log"
    with Log("cpu", path, policy=Console(io.StringIO())) as log:
        build(log)
    timings = json.loads((tmp_path / "build.timings.json").read_text())
    # Top-level stages only (a nested one is inside its parent's time); a cached one says nothing.
    assert set(timings["stages"]) == {"build", "package"}
    (tmp_path / "build.timings.json").write_text(json.dumps(
        {"stages": {"source": 10, "build": 80, "package": 10},
         "steps": [["configure CPU", 10], ["compile CPU", 60], ["go build", 10]]}))
    policy = Console(Terminal(), quiet=True)
    log = Log("cpu", path, policy=policy)
    log.expect_stages(["source", "build", "package"])
    with log.stage("source", 1, 3):
        pass
    with log.stage("build", 2, 3):
        started = log.progress.stage.started
        assert policy.status(started + 40) == "[cpu] stage 2/3 build; about 50.0s left for cpu"
        with log.step("compile CPU", 2, 3):
            step = log.progress.step.started
            assert policy.status(step + 20) == (
                "[cpu] stage 2/3 build, step 2/3 compile CPU; about 40.0s left in this step, "
                "about 1m00s left for cpu")
    log.close()


def test_the_status_line_is_cut_to_the_terminal_width():
    term = Terminal()
    with Log("a-target-with-a-long-name", None, policy=Console(term, quiet=True), position=(2, 3)) as log, \
            log.stage("build", 6, 8), log.step("compile ROCm 6", 6, 11):
        log.line("[52/105  49%] Building HIP object ml/backend/ggml/ggml/src/ggml-hip/CMakeFiles/x.o")
    statuses = [part for part in term.getvalue().split("\r\x1b[K") if part and "\n" not in part]
    assert statuses and max(len(s) for s in statuses) == 79
    assert statuses[-2].startswith("[a-target-with-a-long-name] target 2/3, stage 6/8 build, step 6/11")


def test_a_failed_run_keeps_the_stage_times_of_the_last_good_one(tmp_path):
    path = tmp_path / "build.log"
    (tmp_path / "build.timings.json").write_text('{"build": 99.0}\n')
    with pytest.raises(RuntimeError), Log("cpu", path, policy=Console(io.StringIO())) as log:
        build(log, fail=True)
    assert json.loads((tmp_path / "build.timings.json").read_text()) == {"build": 99.0}
    # The older, flat form still reads as stage times.
    assert Log("cpu", path, console=io.StringIO()).progress.last_stages == {"build": 99.0}
