"""What the console shows of a Log; the log file always gets every line.

    plain     every line, as it is written to the log file (the default)
    GitHub    (GITHUB_ACTIONS=true) every line, each top-level stage folded in a ::group:: of the job's
              log, and a table of the stages appended to $GITHUB_STEP_SUMMARY when the log closes
    quiet     (PIPELINE_QUIET=1 or `--quiet`, on a terminal) only the stage lines and one status line
              (stage, percent done and time left, estimated from the stage times of the run before);
              when the run fails, the last 50 lines of the log

A Log takes its policy from the environment only when it writes to the process's stderr: a Log given
its own console stream (tests, tools capturing output) gets the plain policy unless one is passed.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from pipeline.config.settings import flag

TAIL = 50


def _duration(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"


class Console:
    def __init__(self, stream: TextIO, *, github: bool = False, quiet: bool = False,
                 summary: Path | None = None, tail: int = TAIL, refresh: float = 1.0):
        self.stream = stream
        self.github = github
        self.quiet = quiet
        self.summary = summary
        self.tail: collections.deque[str] = collections.deque(maxlen=tail)
        self.refresh = refresh
        self.target = "-"
        self.timings_file: Path | None = None
        self.estimate: dict[str, float] = {}
        self._depth = 0
        self._group_open = False
        self._status = ""
        self._status_at = 0.0
        self._stage = ""
        self._stage_started = 0.0
        self._done_estimate = 0.0
        self._top_level: set[str] = set()  # stages not inside another: the estimate's parts

    @classmethod
    def from_env(cls, stream: TextIO, env: Mapping[str, str] | None = None) -> Console:
        env = os.environ if env is None else env
        github = env.get("GITHUB_ACTIONS") == "true"
        summary = Path(env["GITHUB_STEP_SUMMARY"]) if github and env.get("GITHUB_STEP_SUMMARY") else None
        isatty = getattr(stream, "isatty", lambda: False)()
        quiet = flag(env, "PIPELINE_QUIET") and isatty and not github
        return cls(stream, github=github, quiet=quiet, summary=summary)

    # -- the Log calls these -------------------------------------------------------------------

    def attach(self, target: str, log_path: Path | None) -> None:
        """The Log's target and file: stage times of the last run lie beside the file."""
        self.target = target
        if log_path is not None:
            self.timings_file = log_path.with_name(log_path.stem + ".timings.json")
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(self.timings_file.read_text(encoding="utf-8"))
                # Only an estimate: a file of another shape (hand-edited, damaged) is no estimate at all.
                if isinstance(data, dict):
                    self.estimate = {k: float(v) for k, v in data.items()
                                     if isinstance(k, str) and type(v) in (int, float) and 0 <= v < 1e7}

    def line(self, text: str, *, stage_line: bool = False) -> None:
        self.tail.append(text)
        if not self.quiet:
            print(text, file=self.stream, flush=True)
        elif stage_line:
            self._clear_status()
            print(text, file=self.stream, flush=True)
            self._show_status(force=True)
        else:
            self._show_status()

    def stage_started(self, name: str) -> None:
        """Before the stage's first line."""
        self._depth += 1
        if self._depth == 1:
            self._stage, self._stage_started = name, time.monotonic()
            self._top_level.add(name)
            if self.github:
                print(f"::group::{self.target}: {name}", file=self.stream, flush=True)
                self._group_open = True

    def stage_ended(self, name: str) -> None:
        """After the stage's last line."""
        self._depth -= 1
        if self._depth == 0:
            self._done_estimate += self.estimate.get(name, time.monotonic() - self._stage_started)
            self._stage = ""
            if self._group_open:
                print("::endgroup::", file=self.stream, flush=True)
                self._group_open = False

    def finish(self, stages: list[tuple[str, str, float]], elapsed: float, *, failed: bool,
               log_path: Path | None) -> None:
        """When the Log closes: the tail on failure (quiet), the step summary, the stage times."""
        self._clear_status()
        if self._group_open:
            print("::endgroup::", file=self.stream, flush=True)
            self._group_open = False
        if failed and self.quiet and self.tail:
            print(f"--- the last {len(self.tail)} lines of the log ---", file=self.stream)
            for text in self.tail:
                print(text, file=self.stream)
            print(f"--- full log: {log_path} ---" if log_path else "---", file=self.stream, flush=True)
        if self.summary is not None and stages:
            with contextlib.suppress(OSError), open(self.summary, "a", encoding="utf-8") as f:
                f.write(step_summary(self.target, stages, elapsed, failed=failed,
                                     tail=list(self.tail) if failed else [], log_path=log_path))
        if self.timings_file is not None and stages and not failed:
            timings = dict(self.estimate)
            timings.update({name: round(secs, 1) for name, outcome, secs in stages
                            if outcome == "done" and name in self._top_level})
            with contextlib.suppress(OSError):
                self.timings_file.write_text(json.dumps(timings, indent=2) + "\n")

    # -- quiet mode's status line ----------------------------------------------------------------

    def progress(self, now: float | None = None) -> str:
        """`stage, 42% done, about 3m10s left` from the last run's stage times; without them, the time
        the stage has taken."""
        now = time.monotonic() if now is None else now
        stage = self._stage or "-"
        in_stage = now - self._stage_started if self._stage else 0.0
        total = sum(self.estimate.values())
        if not total or (self._stage and self._stage not in self.estimate):
            return f"[{self.target} {stage}] {_duration(in_stage)} in this stage (no estimate yet)"
        current = min(in_stage, self.estimate.get(self._stage, 0.0)) if self._stage else 0.0
        done = min(self._done_estimate + current, total)
        return (f"[{self.target} {stage}] {100 * done / total:.0f}% done, "
                f"about {_duration(max(total - done, 0.0))} left")

    def _show_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._status_at < self.refresh:
            return
        self._status_at = now
        self._status = self.progress(now)
        self.stream.write("\r\x1b[K" + self._status)
        self.stream.flush()

    def _clear_status(self) -> None:
        if self._status:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._status = ""


def step_summary(target: str, stages: list[tuple[str, str, float]], elapsed: float, *, failed: bool,
                 tail: list[str], log_path: Path | None) -> str:
    """Markdown for $GITHUB_STEP_SUMMARY: the target's outcome, a row per stage, the tail on failure."""
    outcome = "failed" if failed else "done"
    lines = [f"### {target}: {outcome} in {_duration(elapsed)}", "", "| stage | outcome | time |",
             "| --- | --- | ---: |"]
    lines += [f"| {name} | {result} | {_duration(secs)} |" for name, result, secs in stages]
    if tail:
        lines += ["", f"<details><summary>the last {len(tail)} lines of the log</summary>", "", "```text",
                  *(t.replace("```", "'''") for t in tail), "```", "", "</details>"]
    if log_path is not None:
        lines += ["", f"Full log: `{log_path.name}` (in the target's artifact)."]
    return "\n".join(lines) + "\n\n"
