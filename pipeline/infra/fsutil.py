"""Atomic file and folder replacement: a reader sees the old thing or the new one, never half.

Staging names carry their owner (pipeline.infra.owner): a run removes what killed runs left beside
the file or folder it replaces."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pipeline.infra import owner


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Write to a temporary file beside `path`; it replaces `path` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    owner.sweep(path.parent)  # what a killed run left here
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{owner.mark()}", suffix=".partial", dir=path.parent)
    try:
        # mkstemp makes 0600 files; outputs get the mode any new file of this user would have.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_files(*paths: Path) -> Iterator[tuple[Path, ...]]:
    """Temporary files beside each of `paths` (same folder), for the block to write by path. Only when
    the block succeeds are they made durable and then renamed over `paths`, in the order given, one
    rename right after the other: files that belong together (an archive, its manifest, SHA256SUMS)
    are never published one write at a time, so a kill leaves the old set unless it lands between
    two renames. On failure every temporary file is removed."""
    tmps: list[Path] = []
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            owner.sweep(path.parent)  # what a killed run left here
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{owner.mark()}", suffix=".partial",
                                       dir=path.parent)
            os.close(fd)
            tmps.append(Path(tmp))
        yield tuple(tmps)
        for tmp in tmps:
            os.chmod(tmp, 0o666 & ~_umask())
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for tmp, path in zip(tmps, paths):
            os.replace(tmp, path)
    except BaseException:
        for tmp in tmps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


@contextlib.contextmanager
def scratch_dir(parent: Path, name: str) -> Iterator[Path]:
    """A temporary folder `<name>.p<pid>-<host>.XXXX` in `parent`, removed when the block ends; what
    killed runs left in `parent` is removed first (their names carry their owner)."""
    parent.mkdir(parents=True, exist_ok=True)
    owner.sweep(parent)
    with tempfile.TemporaryDirectory(prefix=f"{name}{owner.mark()}", dir=parent) as tmp:
        yield Path(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    with atomic_file(path) as f:
        f.write(text.encode())


@contextlib.contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """A scratch folder beside `final` that becomes `final` if the block succeeds, else is removed.

    The swap is two renames (old aside, new in), undone if the second fails; the old folder is removed
    only once the new one is in place, so `final` is never half-written and never lost on failure.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    owner.sweep(final.parent)  # what a killed run left here
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{owner.mark()}", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
        _swap(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap(new: Path, final: Path) -> None:
    aside_dir = Path(tempfile.mkdtemp(prefix=f".{final.name}{owner.mark()}", suffix=".old", dir=final.parent))
    aside = aside_dir / final.name
    try:
        if final.exists():
            os.rename(final, aside)
        try:
            os.rename(new, final)
        except BaseException:
            if aside.exists():
                os.rename(aside, final)
            raise
    except BaseException:
        with contextlib.suppress(OSError):
            aside_dir.rmdir()  # only when empty: an old folder that could not be put back stays here
        raise
    shutil.rmtree(aside_dir, ignore_errors=True)


def tree_size(root: Path) -> int:
    """Bytes a folder takes on disk (allocated blocks: holes and hard links are not counted twice); 0
    when it does not exist."""
    total, seen = 0, set()
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total
