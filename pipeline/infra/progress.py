"""Where a run stands, for people: target j of m, stage i of n, step k of K of the build, the build
tool's own counter, and the time left.

* Positions come from the orchestrator (targets, stages) and from the build stage (its steps).
* The counter is ninja's: every backend is configured for Ninja (upstream/layouts.py) and the build
  stage runs its steps with TOOL_ENV, so each finished edge prints `[N/M P%] description`; `read`
  takes N and M from such a line.
* The time left in a counted step comes from its own rate (seconds per finished edge so far), so a
  first build has an estimate. The rest of the run is estimated from the step and stage times of the
  last good run (the timings file beside the log) where there is one.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path

# Ninja's status line: finished/total edges and the percentage (`[52/105  49%] Building HIP object ...`).
NINJA_STATUS = "[%f/%t %p] "
TOOL_ENV = {"NINJA_STATUS": NINJA_STATUS}
COUNTER = re.compile(r"^\[(\d+)/(\d+)\s+\d+%\] ")


def duration(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"


def timings_file(log_path: Path) -> Path:
    """The times of the last good run, beside its log: build.log -> build.timings.json."""
    return log_path.with_name(log_path.stem + ".timings.json")


class _Place:
    """A stage or a step being run: its name, position and start."""

    __slots__ = ("index", "name", "started", "total")

    def __init__(self, name: str, index: int, total: int, started: float):
        self.name, self.index, self.total, self.started = name, index, total, started


class Progress:
    def __init__(self, target: str, position: tuple[int, int] = (1, 1)):
        self.target = target
        self.position = position  # (target j, of m)
        self.stage: _Place | None = None
        self.step: _Place | None = None
        self.counter: tuple[int, int] | None = None  # ninja's (finished, total) in the current step
        self.stage_names: tuple[str, ...] = ()  # the stages this run goes through, in order
        # The last good run's times: top-level stage -> seconds, and its build steps in order.
        self.last_stages: dict[str, float] = {}
        self.last_steps: list[tuple[str, float]] = []
        # This run's: the times of top-level stages done, and of steps done.
        self.stage_times: dict[str, float] = {}
        self.step_times: list[tuple[str, float]] = []

    # -- what the run says --------------------------------------------------------------------------

    def stage_started(self, name: str, index: int, total: int, now: float | None = None) -> None:
        self.stage = _Place(name, index, total, time.monotonic() if now is None else now)
        self.step, self.counter = None, None

    def stage_ended(self, name: str, seconds: float, *, done: bool) -> None:
        if done:
            self.stage_times[name] = round(seconds, 1)
        self.stage, self.step, self.counter = None, None, None

    def step_started(self, label: str, index: int, total: int, now: float | None = None) -> None:
        self.step = _Place(label, index, total, time.monotonic() if now is None else now)
        self.counter = None

    def step_ended(self, label: str, seconds: float) -> None:
        self.step_times.append((label, round(seconds, 1)))
        self.step, self.counter = None, None

    def read(self, text: str) -> bool:
        """Take ninja's counter from a line of the current step; True when it moved."""
        if self.step is None:
            return False
        m = COUNTER.match(text)
        if not m:
            return False
        counter = (int(m[1]), int(m[2]))
        if counter == self.counter or counter[1] == 0:
            return False
        self.counter = counter
        return True

    # -- the last good run's times -------------------------------------------------------------------

    def load(self, path: Path) -> None:
        """The times of the last good run; a missing or damaged file means none."""
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            data = json.loads(path.read_text(encoding="utf-8"))
            stages = data.get("stages", {}) if "stages" in data else data  # the older, flat form
            self.last_stages = {str(k): float(v) for k, v in stages.items()
                                if not isinstance(v, (dict, list))}
            self.last_steps = [(str(label), float(secs)) for label, secs in data.get("steps", [])]

    def save(self, path: Path) -> None:
        """This run's times, over the last run's for the stages it did not run (cached ones)."""
        stages = {**self.last_stages, **self.stage_times}
        steps = self.step_times or self.last_steps
        with contextlib.suppress(OSError):
            path.write_text(json.dumps({"stages": stages, "steps": steps}, indent=2) + "\n", encoding="utf-8")

    # -- what a person reads ---------------------------------------------------------------------------

    def where(self) -> str:
        """'stage 6/8 build, step 6/11 compile ROCm 6: 52/105 (50%)'."""
        parts = []
        if self.stage is not None:
            parts.append(f"stage {self.stage.index}/{self.stage.total} {self.stage.name}")
        if self.step is not None:
            text = f"step {self.step.index}/{self.step.total} {self.step.name}"
            if self.counter is not None:
                done, total = self.counter
                text += f": {done}/{total} ({100 * done // total}%)"
            parts.append(text)
        return ", ".join(parts)

    def step_left(self, now: float) -> float | None:
        """Seconds left in the current step: from ninja's rate so far, else from the last run."""
        if self.step is None:
            return None
        elapsed = now - self.step.started
        if self.counter is not None and self.counter[0] > 0:
            done, total = self.counter
            return elapsed / done * (total - done)
        last = dict(self.last_steps).get(self.step.name)
        return None if last is None else max(last - elapsed, 0.0)

    def stage_left(self, now: float) -> float | None:
        """Seconds left in the current stage: its steps' estimates, else the last run's stage time."""
        if self.stage is None:
            return None
        if self.step is not None:
            here = self.step_left(now)
            labels = [label for label, _ in self.last_steps]
            if here is None or self.step.name not in labels:
                return None
            return here + sum(secs for _, secs in self.last_steps[labels.index(self.step.name) + 1:])
        last = self.last_stages.get(self.stage.name)
        return None if last is None else max(last - (now - self.stage.started), 0.0)

    def target_left(self, now: float) -> float | None:
        """Seconds left for the target: this stage's and the later stages' of the last run."""
        here = self.stage_left(now)
        if here is None or self.stage is None or self.stage.name not in self.stage_names:
            return None
        later = self.stage_names[self.stage_names.index(self.stage.name) + 1:]
        if any(name not in self.last_stages for name in later):
            return None
        return here + sum(self.last_stages[name] for name in later)

    def status(self, now: float | None = None) -> str:
        """One line: where the run is and what is left, as far as it can be told."""
        now = time.monotonic() if now is None else now
        text = self.where() or "starting"
        j, m = self.position
        if m > 1:
            text = f"target {j}/{m}, {text}"
        left = []
        step = self.step_left(now)
        if step is not None:
            left.append(f"about {duration(step)} left in this step")
        target = self.target_left(now)
        if target is not None:
            left.append(f"about {duration(target)} left for {self.target}")
        elif self.stage is not None and self.step is None:
            stage = self.stage_left(now)
            if stage is not None:
                left.append(f"about {duration(stage)} left in this stage")
        if self.stage is not None and not left:
            left.append(f"{duration(now - self.stage.started)} in this stage")
        return text + ("; " + ", ".join(left) if left else "")

