"""The one command runner: prints `+ command`, streams output into the log, raises CommandError.

Every command of a build and of the maintainer tools goes through here; commands inside containers go
through Container.exec, which shares the echo and streaming below. Two callers start processes
themselves, for a reason each: registries asks `go env GOPROXY` once, before any log exists, and
bench runs a private dockerd (and a build against it) whose lifetime it manages.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pipeline.errors import CommandError
from pipeline.infra.log import Log


def echo(log: Log, cmd: Sequence[str], where: str = "") -> str:
    text = shlex.join(cmd)
    # A script argument (sh -c '...') is shown by its first line: the log keeps one line per command.
    shown = shlex.join(a if "\n" not in a else f"{a.strip().splitlines()[0]} ... ({a.count(chr(10))} lines)"
                       for a in cmd)
    log.line(f"+ {shown}" + (f"  ({where})" if where else ""))
    return text


def label(cmd: Sequence[str]) -> str:
    """What a heartbeat calls a command: its first two words, past a `nice -n N` in front."""
    args = list(cmd)
    if args[:2] == ["nice", "-n"]:
        args = args[3:]
    return " ".join(args[:2])


def stream(log: Log, chunks: Iterable[bytes]) -> None:
    """Split a byte stream into lines and log each; partial lines are held until complete."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            log.line(raw.decode("utf-8", "replace").rstrip("\r"))
    if pending:
        log.line(pending.decode("utf-8", "replace"))


_PR_SET_PDEATHSIG = 1


def child_setup():
    """What Popen runs in a child of the pipeline before exec (preexec_fn): on Linux the child gets
    SIGKILL when the thread that started it ends, kill -9 of the pipeline included, so a long command (a
    compile, a test binary) never outlives it. prctl is looked up here, in the parent: between fork and
    exec the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # the C library this process already has loaded

    def end_with_parent() -> None:  # pragma: no cover - runs in the child
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    return end_with_parent


def run(
    log: Log,
    cmd: Sequence[str | os.PathLike],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    capture: bool = False,
    quiet: bool = False,
    check: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess:
    """Run a host command. With capture, stdout is returned (not logged) and stderr is logged.
    A command still running after `timeout` seconds is ended (CommandError with .timeout); one running
    when this process is interrupted (Ctrl-C, or SIGTERM as the CLI turns it into one) is ended before
    the interruption goes on, so no child outlives its parent."""
    args = [os.fspath(c) for c in cmd]
    text = shlex.join(args) if quiet else echo(log, args)
    full_env = {**os.environ, **env} if env else None
    try:
        proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if capture else subprocess.STDOUT,
            preexec_fn=child_setup(),
        )
    except FileNotFoundError:
        raise CommandError(text, 127, log=str(log.path) if log.path else None) from None
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        end(proc)

    timer = threading.Timer(timeout, expire) if timeout is not None else None
    try:
        if timer is not None:
            timer.start()
        if capture:
            out, err = proc.communicate(stdin)
            if err and not quiet:
                stream(log, [err])
        else:
            if stdin is not None:
                proc.stdin.write(stdin)
                proc.stdin.close()
            with log.heartbeat(label(args)):
                stream(log, iter(lambda: proc.stdout.read1(65536), b""))
            proc.wait()
            out = err = b""
    except BaseException:
        end(proc)
        raise
    finally:
        if timer is not None:
            timer.cancel()
    if expired.is_set():
        raise CommandError(text, None, log=str(log.path) if log.path else None, timeout=timeout)
    if check and proc.returncode != 0:
        if quiet and capture and err:
            stream(log, [err])
        raise CommandError(text, proc.returncode, log=str(log.path) if log.path else None)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def end(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """End a child: SIGTERM, and SIGKILL when it is still there after `grace` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
