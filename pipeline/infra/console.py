"""What the console shows of a Log; the log file always gets every line.

    plain     every line, as it is written to the log file (the default); the pipeline's own lines are
              marked (log.py) and carry the positions and percentages of pipeline.infra.progress
    GitHub    (GITHUB_ACTIONS=true) every line, each top-level stage folded in a ::group:: of the job's
              log, and a table of the stages appended to $GITHUB_STEP_SUMMARY when the log closes
    quiet     (PIPELINE_QUIET=1 or `--quiet`, on a terminal) only the pipeline's stage and step lines and
              one status line (target, stage and step positions, ninja's counter as a percentage, the
              time left); when the run fails, the last 50 lines of the log

A Log takes its policy from the environment only when it writes to the process's stderr: a Log given
its own console stream (tests, tools capturing output) gets the plain policy unless one is passed.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from pipeline.config.settings import flag
from pipeline.infra.progress import Progress, duration

TAIL = 50


class Console:
    def __init__(self, stream: TextIO, *, github: bool = False, quiet: bool = False,
                 summary: Path | None = None, tail: int = TAIL, refresh: float = 1.0):
        self.stream = stream
        self.github = github
        self.quiet = quiet
        self.summary = summary
        self.tail: collections.deque[str] = collections.deque(maxlen=tail)
        self.every = refresh
        self.target = "-"
        self.progress = Progress("-")
        self._depth = 0
        self._group_open = False
        self._status = ""
        self._status_at = 0.0

    @classmethod
    def from_env(cls, stream: TextIO, env: Mapping[str, str] | None = None) -> Console:
        env = os.environ if env is None else env
        github = env.get("GITHUB_ACTIONS") == "true"
        summary = Path(env["GITHUB_STEP_SUMMARY"]) if github and env.get("GITHUB_STEP_SUMMARY") else None
        isatty = getattr(stream, "isatty", lambda: False)()
        quiet = flag(env, "PIPELINE_QUIET") and isatty and not github
        return cls(stream, github=github, quiet=quiet, summary=summary)

    # -- the Log calls these -------------------------------------------------------------------

    def attach(self, target: str, log_path: Path | None, progress: Progress | None = None) -> None:
        """The Log's target and where its run stands."""
        self.target = target
        if progress is not None:
            self.progress = progress

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

    def refresh(self, force: bool = False) -> None:
        """The status line again (quiet): the log calls this when ninja's counter moves (force) and
        while a silent step runs."""
        if self.quiet:
            self._show_status(force=force)

    def stage_started(self, name: str) -> None:
        """Before the stage's first line."""
        self._depth += 1
        if self._depth == 1 and self.github:
            print(f"::group::{self.target}: {name}", file=self.stream, flush=True)
            self._group_open = True

    def stage_ended(self, name: str) -> None:
        """After the stage's last line."""
        self._depth -= 1
        if self._depth == 0 and self._group_open:
            print("::endgroup::", file=self.stream, flush=True)
            self._group_open = False

    def finish(self, stages: list[tuple[str, str, float]], elapsed: float, *, failed: bool,
               log_path: Path | None) -> None:
        """When the Log closes: the tail on failure (quiet), the step summary."""
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

    # -- quiet mode's status line ----------------------------------------------------------------

    def status(self, now: float | None = None) -> str:
        """`[cpu] stage 6/8 build, step 3/11 compile CPU: 40/151 (26%); about 4m10s left in this step`."""
        return f"[{self.target}] {self.progress.status(now)}"

    def _show_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._status_at < self.every:
            return
        self._status_at = now
        self._status = self.status(now)[:self._width() - 1]
        self.stream.write("\r\x1b[K" + self._status)
        self.stream.flush()

    def _width(self) -> int:
        """The terminal's width: a status line longer than that would wrap, and \\r would not clear it."""
        try:
            return os.get_terminal_size(self.stream.fileno()).columns or 80
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return 80

    def _clear_status(self) -> None:
        if self._status:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._status = ""


def step_summary(target: str, stages: list[tuple[str, str, float]], elapsed: float, *, failed: bool,
                 tail: list[str], log_path: Path | None) -> str:
    """Markdown for $GITHUB_STEP_SUMMARY: the target's outcome, a row per stage, the tail on failure."""
    outcome = "failed" if failed else "done"
    lines = [f"### {target}: {outcome} in {duration(elapsed)}", "", "| stage | outcome | time |",
             "| --- | --- | ---: |"]
    lines += [f"| {name} | {result} | {duration(secs)} |" for name, result, secs in stages]
    if tail:
        lines += ["", f"<details><summary>the last {len(tail)} lines of the log</summary>", "", "```text",
                  *(t.replace("```", "'''") for t in tail), "```", "", "</details>"]
    if log_path is not None:
        lines += ["", f"Full log: `{log_path.name}` (in the target's artifact)."]
    return "\n".join(lines) + "\n\n"
