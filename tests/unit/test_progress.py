"""progress.py and the Log's watcher: positions, ninja's counter, estimates from its rate and from the
last run, heartbeats of the innermost running thing, progress lines in the plain console."""

from __future__ import annotations

import io
import time

import pytest

from pipeline.infra import progress
from pipeline.infra.log import Log
from pipeline.infra.progress import Progress


def test_ninja_is_asked_for_a_counter_the_pipeline_reads():
    assert progress.TOOL_ENV == {"NINJA_STATUS": "[%f/%t %p] "}
    p = Progress("cpu")
    p.step_started("compile CPU", 3, 11, now=0.0)
    assert p.read("[12/151   7%] Building C object ggml.c.o")
    assert p.counter == (12, 151)
    assert not p.read("[12/151   7%] Building C object again.c.o")  # not moved
    assert not p.read("-- Detecting C compiler ABI info")
    assert not p.read("[ 45%] Building C object (make's form)")


def test_a_counter_outside_a_step_is_not_read():
    p = Progress("cpu")
    assert not p.read("[1/2  50%] x")
    assert p.counter is None


def test_time_left_in_a_counted_step_comes_from_its_own_rate_on_a_first_build():
    p = Progress("gfx1103")
    p.stage_started("build", 6, 8, now=0.0)
    p.step_started("compile ROCm 6", 6, 11, now=100.0)
    p.read("[25/100  25%] Building HIP object a.cu.o")
    # 25 edges in 500 s: 75 more take about 1500 s.
    assert p.step_left(600.0) == pytest.approx(1500.0)
    assert p.status(600.0) == ("stage 6/8 build, step 6/11 compile ROCm 6: 25/100 (25%); "
                               "about 25m00s left in this step")


def test_a_second_build_adds_the_later_steps_and_stages_of_the_last_run(tmp_path):
    timings = tmp_path / "build.timings.json"
    first = Progress("cpu")
    first.stage_times = {"build": 700.0, "package": 20.0}
    first.step_times = [("configure CPU", 10.0), ("compile CPU", 400.0), ("go build", 290.0)]
    first.save(timings)
    p = Progress("cpu", position=(2, 3))
    p.load(timings)
    p.stage_names = ("build", "package", "verify")
    p.last_stages["verify"] = 10.0
    p.stage_started("build", 1, 3, now=0.0)
    p.step_started("compile CPU", 2, 3, now=10.0)
    p.read("[50/100  50%] x")
    # 200 s left of the compile (its rate), then go build's 290 s, then package 20 s and verify 10 s.
    assert p.target_left(210.0) == pytest.approx(200 + 290 + 20 + 10)
    assert p.status(210.0).startswith("target 2/3, stage 1/3 build, step 2/3 compile CPU: 50/100 (50%); ")
    assert p.status(210.0).endswith("about 3m20s left in this step, about 8m40s left for cpu")


def test_a_damaged_timings_file_means_no_estimate(tmp_path):
    timings = tmp_path / "build.timings.json"
    timings.write_text('{"stages": {"build": "slow"}, "steps": 3}')
    p = Progress("cpu")
    p.load(timings)
    assert p.last_stages == {} and p.last_steps == []


def wait_for(predicate, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_silent_command_gets_a_heartbeat_naming_it_and_where_the_run_stands():
    console = io.StringIO()
    with Log("cpu", None, console=console, tick=0.05) as log, log.stage("build", 6, 8), \
            log.step("go build", 11, 11), log.heartbeat("go build", every=0.2):
        wait_for(lambda: "still running" in console.getvalue())
    beat = next(line for line in console.getvalue().splitlines() if "still running" in line)
    assert "... still running: go build (" in beat
    assert beat.endswith(")") is False and "; stage 6/8 build, step 11/11 go build" in beat


def test_the_innermost_running_thing_beats_and_only_once_per_silence():
    console = io.StringIO()
    with Log("cpu", None, console=console, tick=0.05) as log, log.stage("builder", 3, 7), \
            log.heartbeat("docker build of x", every=0.3):
        wait_for(lambda: console.getvalue().count("still running") >= 1)
        time.sleep(0.1)
    beats = [line for line in console.getvalue().splitlines() if "still running" in line]
    assert all("docker build of x" in b for b in beats)
    assert len(beats) == 1  # the next one only after another 0.3 s of silence


def test_a_silent_stage_beats_too():
    console = io.StringIO()
    with Log("cpu", None, console=console, tick=0.05, every=0.2) as log, log.stage("package", 7, 8):
        wait_for(lambda: "still running: package (" in console.getvalue())


def test_the_plain_console_gets_a_progress_line_while_the_counter_moves():
    console = io.StringIO()
    with Log("cpu", None, console=console, tick=0.05, progress_every=0.2) as log, log.stage("build", 6, 8), \
            log.step("compile CPU", 3, 11):
        for i in range(1, 4):
            log.line(f"[{i}/10  {i * 10}%] cc")
            time.sleep(0.3)
    lines = console.getvalue().splitlines()
    shown = [line for line in lines if "... progress: " in line]
    assert shown, lines
    assert "stage 6/8 build, step 3/11 compile CPU: " in shown[0] and "left in this step" in shown[0]
    assert "--> step 3/11 compile CPU" in console.getvalue()


def test_a_closed_log_stops_its_watcher():
    log = Log("cpu", None, console=io.StringIO(), tick=0.01)
    with log.heartbeat("x"):
        watcher = log._watcher
    log.close()
    assert watcher is not None and not watcher.is_alive()
