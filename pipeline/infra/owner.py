"""Who owns what a run leaves behind: the process id and host, so that the next run can remove what a
killed process (kill -9, a lost machine) left: staging folders, scratch folders, containers.

What a run stages on disk is always a folder it made itself (`owned_dir`), named
`<base>.~ollama-pipeline.p<pid>-<host>.<token>.<kind>`, a form no file of a user has by accident, and
holding a marker file (OWNER_FILE) that names the same pid, host and token. The sweep removes such a
folder only when both agree and the owner is a process of this host that no longer runs (an empty folder
of the form, which a kill between the mkdir and the marker leaves, goes too: rmdir takes nothing with
it). Files are never swept: a user's file shaped like debris stays. A container carries the labels
PID_LABEL and HOST_LABEL. Something of another host is left alone (its owner may still be running there).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.config.places import CACHE_FOLDERS, Places
from pipeline.errors import UsageError

PID_LABEL = "org.ollama-pipeline.pid"
HOST_LABEL = "org.ollama-pipeline.host"
TAG = "~ollama-pipeline"
OWNER_FILE = ".ollama-pipeline-owner"
KINDS = ("partial", "old", "scratch")
_FORM = re.compile(rf"\.{re.escape(TAG)}\.p(?P<pid>[0-9]+)-(?P<host>[A-Za-z0-9-]{{0,32}})\."
                   rf"(?P<token>[0-9a-f]{{16}})\.(?P<kind>{'|'.join(KINDS)})$")


def host() -> str:
    """This machine's name, as it appears in staging names (letters, digits and '-' only)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32]


def owned_dir(parent: Path, base: str, kind: str) -> Path:
    """A new folder of this process in `parent`, `<base>.~ollama-pipeline.p<pid>-<host>.<token>.<kind>`
    (0700), with its marker written before anything else goes in."""
    assert kind in KINDS, kind
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        token = secrets.token_hex(8)
        path = parent / f"{base}.{TAG}.p{os.getpid()}-{host()}.{token}.{kind}"
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        marker = {"pid": os.getpid(), "host": host(), "token": token}
        (path / OWNER_FILE).write_text(json.dumps(marker) + "\n")
        return path


def owned_form(name: str) -> bool:
    """Whether `name` has the form of an owned_dir folder (any owner)."""
    return bool(_FORM.search(name))


def mine(path: Path) -> bool:
    """Whether `path` is a folder this process made with owned_dir."""
    m = _FORM.search(path.name)
    return bool(m) and int(m["pid"]) == os.getpid() and m["host"] == host()


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


def debris(path: Path) -> bool:
    """Whether `path` is a folder a dead process of this host made with owned_dir: its name has the form,
    the owner it names has ended, and the marker inside names the same owner (or the folder is empty)."""
    m = _FORM.search(path.name)
    if not m or m["host"] != host() or int(m["pid"]) == os.getpid() or alive(int(m["pid"])):
        return False
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        found = json.loads((path / OWNER_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return not any(path.iterdir())
    except (OSError, ValueError):
        return False
    return found == {"pid": int(m["pid"]), "host": m["host"], "token": m["token"]}


def labels() -> dict[str, str]:
    return {PID_LABEL: str(os.getpid()), HOST_LABEL: host()}


def dead_labels(found: dict[str, str] | None) -> bool:
    """Whether a container's labels name a process of this host that no longer runs."""
    found = found or {}
    pid = found.get(PID_LABEL, "")
    return (found.get(HOST_LABEL) == host() and pid.isdigit() and int(pid) != os.getpid()
            and not alive(int(pid)))


def sweep(folder: Path) -> list[Path]:
    """Remove the debris of dead processes of this host directly inside `folder` (see `debris`);
    returns what went."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if debris(entry):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


# The cache folder's marker: a Cache Directory Tagging Specification tag (backup tools skip the folder)
# whose comment line says which tool wrote it. `clean` removes a cache folder only when it carries it.
CACHE_TAG = "CACHEDIR.TAG"
_CACHE_SIGNATURE = "Signature: 8a477f597d28d172789f06886806bc55"
_CACHE_LINE = "# This file is a cache directory tag created by ollama-pipeline."
CACHE_TAG_TEXT = f"{_CACHE_SIGNATURE}\n{_CACHE_LINE}\n# See the Cache Directory Tagging Specification.\n"


def cache_marked(cache: Path) -> bool:
    """Whether `cache` is a folder (not a link) holding the marker the pipeline writes."""
    tag = cache / CACHE_TAG
    if cache.is_symlink() or not cache.is_dir() or tag.is_symlink() or not tag.is_file():
        return False
    try:
        lines = tag.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    return lines[:1] == [_CACHE_SIGNATURE] and _CACHE_LINE in lines


def claim_cache(cache: Path, known: tuple[str, ...]) -> str | None:
    """Mark `cache` as the pipeline's (its CACHEDIR.TAG) when it is new, empty, or holds only what the
    pipeline makes there (`known` folder names, owned_dir folders); returns why not, else None. A folder
    holding anything else is someone's: it is never marked, so `clean` never removes it."""
    if cache_marked(cache):
        return None
    if cache.is_symlink():
        return "it is a symbolic link; point it at the folder itself"
    if cache.exists() and not cache.is_dir():
        return "it is not a folder"
    if cache.is_dir():
        others = sorted(e.name for e in cache.iterdir() if e.name not in known and e.name != CACHE_TAG
                        and not _FORM.search(e.name))
        if others:
            return (f"it holds files the pipeline did not make ({', '.join(others[:3])}"
                    f"{', ...' if len(others) > 3 else ''}) and no {CACHE_TAG} of the pipeline")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{CACHE_TAG}.p{os.getpid()}"
    tmp.write_text(CACHE_TAG_TEXT)
    os.replace(tmp, cache / CACHE_TAG)
    return None


def claim(places: Places) -> None:
    """The cache folder of `places` marked as the pipeline's before anything is written into it; a folder
    that holds what the pipeline did not make is refused (see claim_cache)."""
    if why := claim_cache(places.cache, CACHE_FOLDERS):
        raise UsageError(f"PIPELINE_CACHE {places.cache}: not the pipeline's cache folder: {why}; point "
                         "PIPELINE_CACHE at a new or empty folder")


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
