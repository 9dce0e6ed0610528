"""Atomic file and folder replacement: a reader sees the old thing or the new one, never half.

Everything staged waits in a folder of its run's (pipeline.infra.owner.owned_dir: named for its owner,
with the owner's marker inside): a run removes what killed runs left beside the file or folder it
replaces, and nothing else."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pipeline.infra import owner


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Write to a temporary file beside `path` (in a folder of this run's, see owner.owned_dir); it
    replaces `path` only if the block succeeds."""
    with atomic_files(path) as (tmp,), open(tmp, "wb") as f:
        yield f


@contextlib.contextmanager
def atomic_files(*paths: Path) -> Iterator[tuple[Path, ...]]:
    """Temporary files beside each of `paths` (same folder), for the block to write by path. Only when
    the block succeeds are they made durable and then renamed over `paths`, in the order given, one
    rename right after the other: files that belong together (an archive, its manifest, SHA256SUMS)
    are never published one write at a time, so a kill leaves the old set unless it lands between
    two renames. On failure every temporary file is removed."""
    holders: list[Path] = []
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            owner.sweep(path.parent)  # what a killed run left here
            holders.append(owner.owned_dir(path.parent, f".{path.name}", "partial"))
        tmps = tuple(holder / path.name for holder, path in zip(holders, paths))
        for tmp in tmps:
            tmp.touch(mode=0o666)  # the mode any new file of this user gets
        yield tmps
        for tmp in tmps:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for tmp, path in zip(tmps, paths):
            os.replace(tmp, path)
    finally:
        for holder in holders:
            shutil.rmtree(holder, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir(parent: Path, name: str) -> Iterator[Path]:
    """A temporary folder of this run in `parent` (owner.owned_dir: `<name>.~ollama-pipeline.p<pid>-...`),
    removed when the block ends; what killed runs left in `parent` is removed first."""
    parent.mkdir(parents=True, exist_ok=True)
    owner.sweep(parent)
    holder = owner.owned_dir(parent, name, "scratch")
    try:
        work = holder / "work"
        work.mkdir()
        yield work
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
    with atomic_file(path) as f:
        f.write(text.encode())


@contextlib.contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """A scratch folder beside `final` that becomes `final` if the block succeeds, else is removed.

    The swap is two renames (old aside, new in), undone if the second fails; the old folder is removed
    only once the new one is in place, so `final` is never half-written and never lost on failure. The
    new and the old folder wait inside folders of this run's (owner.owned_dir), so a kill at any point
    leaves only what the next run's sweep removes.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    owner.sweep(final.parent)  # what a killed run left here
    holder = owner.owned_dir(final.parent, f".{final.name}", "partial")
    try:
        tmp = holder / final.name
        tmp.mkdir()
        yield tmp
        _swap(tmp, final)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


def _swap(new: Path, final: Path) -> None:
    aside_dir = owner.owned_dir(final.parent, f".{final.name}", "old")
    aside = aside_dir / final.name
    try:
        if final.exists() or final.is_symlink():
            os.rename(final, aside)
        try:
            os.rename(new, final)
        except BaseException:
            if aside.exists():
                os.rename(aside, final)
            raise
    except BaseException:
        if not aside.exists():
            shutil.rmtree(aside_dir, ignore_errors=True)  # an old folder that could not be put back stays
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
