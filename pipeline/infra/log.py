"""Progress on the console and a full log on disk.

Every line a stage prints, and every line a command writes, goes to the target's log file; the console
sees the same lines prefixed with the target, the stage and the time elapsed since the run began, so a
long compile always says where it is. What the console shows is the policy of console.py: every line,
folded per stage under GitHub Actions, or quiet on a terminal.

The pipeline's own lines are marked so that they stand out of the tools' output:

    ==> stage 6/8 build (target 1/2)          a stage begins, with its position
    --> step 6/11 compile ROCm 6              a step of the build begins
    ... progress: stage 6/8 build, ...        where a counted step stands, at most every minute
    ... still running: cmake --build (2m10s)  what runs while nothing has been printed for 30 s
    <== build: done in 36m18s                 a stage ends

One thread per open Log watches the run while a stage or a command is running: it writes the
heartbeat of the innermost one (a stage, a command, an image build) after every 30 s of silence, and
refreshes the console's status line. Where the run stands is pipeline.infra.progress's.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from pipeline.infra import progress as progress_mod
from pipeline.infra.console import Console
from pipeline.infra.progress import Progress

HEARTBEAT_SECONDS = 30.0
PROGRESS_SECONDS = 60.0


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


def size(n: int, *, exact: bool = False) -> str:
    """A byte count for people: '1.5 GiB' (with exact, '1.5 GiB (1610612736 bytes)')."""
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            if unit == "bytes":
                return f"{n} bytes"
            return f"{value:.1f} {unit}" + (f" ({n} bytes)" if exact else "")
        value /= 1024
    raise AssertionError("unreachable")


duration = progress_mod.duration


class Log:
    def __init__(self, target: str, path: Path | None = None, console: TextIO | None = None,
                 policy: Console | None = None, *, position: tuple[int, int] = (1, 1),
                 tick: float = 5.0, every: float = HEARTBEAT_SECONDS,
                 progress_every: float = PROGRESS_SECONDS):
        self.target = target
        self.path = path
        self.console = console if console is not None else sys.stderr
        # What the console shows (console.py): from the environment (GitHub Actions groups and step
        # summary, quiet mode) only for the process's own stderr; every line for a given stream.
        if policy is None:
            policy = Console.from_env(self.console) if console is None else Console(self.console)
        self.policy = policy
        self.progress = Progress(target, position)
        if path is not None:
            self.progress.load(progress_mod.timings_file(path))
        policy.attach(target, path, self.progress)
        self.started = time.monotonic()
        self.stage_name = "-"
        self._file = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "w", encoding="utf-8", errors="replace")  # noqa: SIM115
        self.stages: list[tuple[str, str, float]] = []  # (stage, outcome, seconds)
        self._lock = threading.RLock()
        self._last_line = time.monotonic()
        self._depth = 0
        # What is running, innermost last: (label, started, heartbeat seconds).
        self._running: list[tuple[str, float, float]] = []
        self._tick = tick
        self._every = every
        self._progress_every = progress_every
        self._progress_at = time.monotonic()
        self._progress_shown: tuple | None = None
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join()
        self._watcher = None
        if self._file:
            self._file.close()
            self._file = None

    def __enter__(self) -> Log:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if exc_type is None and self.path is not None and self.stages:
                self.progress.save(progress_mod.timings_file(self.path))
            self.policy.finish(self.stages, self.elapsed, failed=exc_type is not None, log_path=self.path)
        finally:
            self.close()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def expect_stages(self, names: Sequence[str]) -> None:
        """The stages this run goes through, in order: the estimate of the time left adds them up."""
        self.progress.stage_names = tuple(names)

    def line(self, text: str, *, stage_line: bool = False) -> None:
        text = text.rstrip("\n")
        prefix = f"[{self.target} {self.stage_name} {_clock(self.elapsed)}]"
        with self._lock:
            self._last_line = time.monotonic()
            moved = self.progress.read(text)
            self.policy.line(f"{prefix} {text}", stage_line=stage_line)
            if self._file:
                self._file.write(f"{prefix} {text}\n")
                self._file.flush()
            if moved:
                self.policy.refresh(force=True)

    # -- what is running, and the watcher that keeps the console alive through it -----------------------

    @contextlib.contextmanager
    def heartbeat(self, label: str, every: float | None = None) -> Iterator[None]:
        """Say that `label` is still running whenever the log has been silent for `every` seconds (the
        log's own, 30 s, unless given)."""
        entry = (label, time.monotonic(), self._every if every is None else every)
        with self._lock:
            self._running.append(entry)
            self._watch()
        try:
            yield
        finally:
            with self._lock:
                self._running.remove(entry)

    def _watch(self) -> None:
        if self._watcher is None and not self._stop.is_set():
            self._watcher = threading.Thread(target=self._watch_loop, name=f"log-{self.target}", daemon=True)
            self._watcher.start()

    def _watch_loop(self) -> None:
        while not self._stop.wait(min([self._tick, *(every for _, _, every in list(self._running))])):
            with self._lock:
                if not self._running:
                    continue
                label, started, every = self._running[-1]
                now = time.monotonic()
                status = self.progress.where()
                if now - self._last_line >= every:
                    text = f"... still running: {label} ({duration(now - started)})"
                    self.line(text + (f"; {self.progress.status(now)}" if status else ""))
                elif self.progress.counter is not None and now - self._progress_at >= self._progress_every \
                        and self._progress_shown != (status, self.progress.counter):
                    self._progress_at, self._progress_shown = now, (status, self.progress.counter)
                    self.line(f"... progress: {self.progress.status(now)}")
                self.policy.refresh()

    # -- stages and steps --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def stage(self, name: str, index: int | None = None, total: int | None = None) -> Iterator[StageResult]:
        """Time a stage; the body may call result.cached(why) to say it reused earlier work. With its
        position (stage `index` of `total`) the stage's first line says it."""
        previous, self.stage_name = self.stage_name, name
        result = StageResult()
        start = time.monotonic()
        self._depth += 1
        top = self._depth == 1
        if top and index is not None and total is not None:
            self.progress.stage_started(name, index, total, start)
        self.policy.stage_started(name)
        j, m = self.progress.position
        where = f"stage {index}/{total} {name}" if index is not None and total is not None else name
        self.line(f"==> {where}" + (f" (target {j}/{m})" if index is not None and m > 1 else ""),
                  stage_line=True)
        try:
            with self.heartbeat(name):
                yield result
        except BaseException as exc:
            # The whole message (every problem of a verification, a server log's tail) goes to the log;
            # the command line ends with it as one line.
            for text in str(exc).splitlines() if isinstance(exc, Exception) else ():
                self.line(f"error: {text}" if text == str(exc).splitlines()[0] else f"  {text.strip()}")
            took = time.monotonic() - start
            self.line(f"<== {name}: failed after {duration(took)}", stage_line=True)
            self.stages.append((name, "failed", took))
            if top:
                self.progress.stage_ended(name, took, done=False)
            raise
        else:
            took = time.monotonic() - start
            outcome = f"cached ({result.reason})" if result.reason else "done"
            self.line(f"<== {name}: {outcome} in {duration(took)}", stage_line=True)
            self.stages.append((name, "cached" if result.reason else "done", took))
            if top:
                self.progress.stage_ended(name, took, done=not result.reason)
        finally:
            self._depth -= 1
            self.stage_name = previous
            self.policy.stage_ended(name)

    @contextlib.contextmanager
    def step(self, label: str, index: int, total: int) -> Iterator[None]:
        """A step of a stage (the build's commands): its line, its position and its time. Inside it the
        build tool's counter (ninja's [N/M]) is read from the lines."""
        start = time.monotonic()
        with self._lock:
            self.progress.step_started(label, index, total, start)
        self.line(f"--> step {index}/{total} {label}", stage_line=True)
        try:
            yield
        finally:
            with self._lock:
                self.progress.step_ended(label, time.monotonic() - start)


class StageResult:
    __slots__ = ("reason",)

    def __init__(self) -> None:
        self.reason = ""

    def cached(self, reason: str) -> None:
        self.reason = reason
