"""Progress on the console and a full log on disk.

Every line a stage prints, and every line a command writes, goes to the target's log file; the console
sees the same lines prefixed with the target, the stage and the time elapsed since the run began, so a
long compile always says where it is. What the console shows is the policy of console.py: every line,
folded per stage under GitHub Actions, or quiet on a terminal.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from pipeline.infra.console import Console


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


def duration(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds) // 60}m{int(seconds) % 60:02d}s"


class Log:
    def __init__(self, target: str, path: Path | None = None, console: TextIO | None = None,
                 policy: Console | None = None):
        self.target = target
        self.path = path
        self.console = console if console is not None else sys.stderr
        # What the console shows (console.py): from the environment (GitHub Actions groups and step
        # summary, quiet mode) only for the process's own stderr; every line for a given stream.
        if policy is None:
            policy = Console.from_env(self.console) if console is None else Console(self.console)
        self.policy = policy
        policy.attach(target, path)
        self.started = time.monotonic()
        self.stage_name = "-"
        self._file = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "w", encoding="utf-8", errors="replace")  # noqa: SIM115
        self.stages: list[tuple[str, str, float]] = []  # (stage, outcome, seconds)
        self._lock = threading.Lock()
        self._last_line = time.monotonic()

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None

    def __enter__(self) -> Log:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            self.policy.finish(self.stages, self.elapsed, failed=exc_type is not None, log_path=self.path)
        finally:
            self.close()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def line(self, text: str, *, stage_line: bool = False) -> None:
        text = text.rstrip("\n")
        prefix = f"[{self.target} {self.stage_name} {_clock(self.elapsed)}]"
        with self._lock:
            self._last_line = time.monotonic()
            self.policy.line(f"{prefix} {text}", stage_line=stage_line)
            if self._file:
                self._file.write(f"{prefix} {text}\n")
                self._file.flush()

    @contextlib.contextmanager
    def heartbeat(self, label: str, every: float = 30.0) -> Iterator[None]:
        """Say that `label` is still running whenever it has been quiet for `every` seconds."""
        stop = threading.Event()
        started = time.monotonic()

        def beat() -> None:
            while not stop.wait(min(every, 5.0)):
                if time.monotonic() - self._last_line >= every:
                    self.line(f"... still running: {label} ({duration(time.monotonic() - started)})")

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[StageResult]:
        """Time a stage; the body may call result.cached(why) to say it reused earlier work."""
        previous, self.stage_name = self.stage_name, name
        result = StageResult()
        start = time.monotonic()
        self.policy.stage_started(name)
        self.line(f"==> {name}", stage_line=True)
        try:
            yield result
        except BaseException as exc:
            # The whole message (every problem of a verification, a server log's tail) goes to the log;
            # the command line ends with it as one line.
            for text in str(exc).splitlines() if isinstance(exc, Exception) else ():
                self.line(f"error: {text}" if text == str(exc).splitlines()[0] else f"  {text.strip()}")
            self.line(f"<== {name}: failed after {duration(time.monotonic() - start)}", stage_line=True)
            self.stages.append((name, "failed", time.monotonic() - start))
            raise
        else:
            took = time.monotonic() - start
            outcome = f"cached ({result.reason})" if result.reason else "done"
            self.line(f"<== {name}: {outcome} in {duration(took)}", stage_line=True)
            self.stages.append((name, "cached" if result.reason else "done", took))
        finally:
            self.stage_name = previous
            self.policy.stage_ended(name)


class StageResult:
    __slots__ = ("reason",)

    def __init__(self) -> None:
        self.reason = ""

    def cached(self, reason: str) -> None:
        self.reason = reason
