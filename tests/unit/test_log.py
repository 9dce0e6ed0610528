"""log.py: prefixed lines on the console and in the log file; stage outcomes."""

from __future__ import annotations

import io
import re

import pytest

from pipeline.infra.log import Log, duration

PREFIX = re.compile(r"^\[(?P<target>\S+) (?P<stage>\S+) (?P<clock>\d\d:\d\d)\] (?P<text>.*)$")


def parsed(text: str) -> list[tuple[str, str, str]]:
    out = []
    for line in text.splitlines():
        m = PREFIX.match(line)
        assert m, f"line without the [target stage mm:ss] prefix: {line!r}"
        out.append((m["target"], m["stage"], m["text"]))
    return out


def test_lines_go_to_console_and_file_with_target_stage_and_clock(tmp_path):
    console = io.StringIO()
    path = tmp_path / "logs" / "gfx1103" / "build.log"
    with Log("gfx1103", path, console=console) as log:
        log.line("hello")
        log.line("trailing newline is dropped\n")
    assert path.read_text() == console.getvalue()
    assert parsed(path.read_text()) == [("gfx1103", "-", "hello"),
                                        ("gfx1103", "-", "trailing newline is dropped")]
    assert path.read_text().startswith("[gfx1103 - 00:00] hello\n")


def test_log_without_file_writes_only_the_console():
    console = io.StringIO()
    log = Log("cpu", None, console=console)
    log.line("x")
    log.close()
    assert console.getvalue() == "[cpu - 00:00] x\n"


def test_stage_names_its_lines_and_records_done(tmp_path):
    console = io.StringIO()
    with Log("cpu", tmp_path / "b.log", console=console) as log:
        with log.stage("source"):
            log.line("inside")
        log.line("after")
    lines = parsed(console.getvalue())
    assert lines[0] == ("cpu", "source", "==> source")
    assert lines[1] == ("cpu", "source", "inside")
    assert lines[2][:2] == ("cpu", "source")
    assert lines[2][2].startswith("<== source: done in ")
    assert lines[3] == ("cpu", "-", "after")
    assert [(name, outcome) for name, outcome, _ in log.stages] == [("source", "done")]
    assert log.stages[0][2] >= 0


def test_stage_records_cached_with_its_reason(tmp_path):
    console = io.StringIO()
    log = Log("cpu", None, console=console)
    with log.stage("package") as result:
        result.cached("archive matches")
    assert [(n, o) for n, o, _ in log.stages] == [("package", "cached")]
    assert "<== package: cached (archive matches) in " in console.getvalue()


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_stage_records_failed_and_reraises(tmp_path, error):
    console = io.StringIO()
    log = Log("cpu", None, console=console)
    with pytest.raises(error), log.stage("build"):
        raise error
    assert [(n, o) for n, o, _ in log.stages] == [("build", "failed")]
    assert "<== build: failed after " in console.getvalue()
    assert log.stage_name == "-"


def test_nested_stage_restores_the_outer_stage_name():
    log = Log("cpu", None, console=io.StringIO())
    with log.stage("outer"):
        with log.stage("inner"):
            assert log.stage_name == "inner"
        assert log.stage_name == "outer"
    assert [n for n, _, _ in log.stages] == ["inner", "outer"]


@pytest.mark.parametrize(("seconds", "text"), [(0.04, "0.0s"), (59.9, "59.9s"), (60, "1m00s"),
                                               (3725.5, "62m05s")])
def test_duration_is_short(seconds, text):
    assert duration(seconds) == text
