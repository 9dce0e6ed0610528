"""Who owns what a run leaves behind: the process id and host, so that the next run can remove what a
killed process (kill -9, a lost machine) left: staging folders, scratch folders, containers.

A staging name carries `.p<pid>-<host>.`; a container carries the labels PID_LABEL and HOST_LABEL.
Something owned by a process of this host that no longer runs is debris; something of another host is
left alone (its owner may still be running there).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

PID_LABEL = "org.ollama-pipeline.pid"
HOST_LABEL = "org.ollama-pipeline.host"
_MARK = re.compile(r"\.p(?P<pid>\d+)-(?P<host>[A-Za-z0-9-]*)\.")


def host() -> str:
    """This machine's name, as it appears in staging names (letters, digits and '-' only)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32]


def mark() -> str:
    """What goes into the name of a staging folder or file of this process: `.p<pid>-<host>.`"""
    return f".p{os.getpid()}-{host()}."


def alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def dead_owner(name: str) -> bool:
    """Whether `name` (a staging name) belongs to a process of this host that no longer runs."""
    m = _MARK.search(name)
    return bool(m) and m["host"] == host() and int(m["pid"]) != os.getpid() and not alive(int(m["pid"]))


def labels() -> dict[str, str]:
    return {PID_LABEL: str(os.getpid()), HOST_LABEL: host()}


def dead_labels(found: dict[str, str] | None) -> bool:
    """Whether a container's labels name a process of this host that no longer runs."""
    found = found or {}
    pid = found.get(PID_LABEL, "")
    return (found.get(HOST_LABEL) == host() and pid.isdigit() and int(pid) != os.getpid()
            and not alive(int(pid)))


def sweep(folder: Path) -> list[Path]:
    """Remove the staging debris of dead processes of this host directly inside `folder`
    (`*.partial` and `*.old` from fsutil, scratch folders named `<name>.p<pid>-<host>.`); returns it."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if dead_owner(entry.name + "."):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


@contextlib.contextmanager
def pid_lock(path: Path, on_busy: Callable[[str], None]) -> Iterator[None]:
    """An exclusive lock on `path` (fcntl) that holds the owner's pid while it is held. When another
    process holds it, `on_busy(its pid)` is called: raise to give up, return to wait for it. The kernel
    releases the lock of a process that dies, kill -9 included."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            on_busy(f.read().strip() or "?")
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)
