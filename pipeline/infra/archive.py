"""Package archives: writing and reading them (their formats and names are pipeline.formats').

Written reproducibly: entries sorted, owned by 0:0 with empty owner names, mtimes from
SOURCE_DATE_EPOCH, ordinary modes (0755 executables, 0644 the rest), and compressed without names or
times in the header; zstd's multi-threaded output does not depend on the thread count.
"""

from __future__ import annotations

import contextlib
import copy
import gzip
import io
import json
import os
import stat
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import zstandard

from pipeline.errors import PackageError
from pipeline.formats import SUFFIXES, PackageLayout, archive_glob
from pipeline.hashing import file_sha256


def find(folder: Path, target: str) -> list[Path]:
    """The archives of `target` in `folder` (any version, any format), sorted."""
    if not folder.is_dir():
        return []
    return sorted(p for pattern in archive_glob(target) for p in folder.glob(pattern) if p.is_file())


def executable(path: Path) -> bool:
    return bool(path.stat().st_mode & stat.S_IXUSR)


@contextlib.contextmanager
def _compressed(f: BinaryIO, fmt: str, level: int) -> Iterator[BinaryIO]:
    if fmt == "tar.zst":
        # zstd's multi-threaded output does not depend on the number of threads: reproducible anywhere.
        zstd = zstandard.ZstdCompressor(level=level, threads=-1, write_checksum=True)
        with zstd.stream_writer(f, closefd=False) as out:
            yield out
    elif fmt == "tar.gz":
        # filename='' and mtime=0 keep the gzip header free of names and times.
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=level, mtime=0) as out:
            yield out
    else:
        raise ValueError(f"unknown archive format {fmt!r}")


def write(f: BinaryIO, files: Iterable[tuple[str, Path]], generated: Mapping[str, bytes], *, epoch: int,
          fmt: str, level: int) -> None:
    """Files (archive name, path on disk) plus generated ones (name -> bytes), sorted, owned by 0:0.

    A generated entry replaces a file of the same name; generated *.sh files are executable.
    """
    items: list[tuple[str, Path | None]] = [(rel, path) for rel, path in files if rel not in generated]
    items += [(rel, None) for rel in generated]
    with _compressed(f, fmt, level) as stream, \
            tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for rel, path in sorted(items, key=lambda item: item[0]):
            info = tarfile.TarInfo(rel)
            info.mtime = epoch
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path is None:
                data = generated[rel]
                info.size, info.mode = len(data), 0o755 if rel.endswith(".sh") else 0o644
                tar.addfile(info, io.BytesIO(data))
            elif path.is_symlink():
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, os.readlink(path), 0o777
                tar.addfile(info)
            elif path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = path.stat().st_size
                info.mode = 0o755 if executable(path) else 0o644
                with open(path, "rb") as src:
                    tar.addfile(info, src)


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"


def plain_tar(path: Path, scratch: Path, limit: int | None = None) -> Path:
    """An uncompressed copy of a package archive in `scratch`, decompressed with a bound: `limit` (from
    the manifest's sizes, see `bound_for`) or, without one, `bound`. A file that is not an archive of a
    known format, or is truncated, is one PackageError naming it."""
    _check_suffix(path)
    plain = scratch / (path.name.rsplit(".", 1)[0])
    with _open_checked(plain, scratch) as dst:
        _decompress(path, dst, scratch, limit)
    return plain


def gzip_tar(path: Path, scratch: Path, limit: int | None = None) -> Path:
    """The archive as a gzip'd tar (what Docker's ADD unpacks): itself when it is one, else a copy in
    `scratch` recompressed fast (a ROCm package's zeroed GPU code costs nothing there, where a plain tar
    would carry it in full)."""
    _check_suffix(path)
    if path.name.endswith(".tar.gz"):
        return path
    out = scratch / (path.name.rsplit(".", 1)[0] + ".gz")
    with _open_checked(out, scratch) as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as dst:
        _decompress(path, dst, scratch, limit)
    return out


@contextlib.contextmanager
def _open_checked(path: Path, scratch: Path) -> Iterator[BinaryIO]:
    try:
        with open(path, "wb") as f:
            yield f
    except OSError as exc:
        raise PackageError(f"{path.name}: cannot write into {scratch} ({exc.strerror or exc})") from None


def _check_suffix(path: Path) -> None:
    if not path.name.endswith(SUFFIXES):
        raise PackageError(f"{path.name}: not a package archive (expected {' or '.join(SUFFIXES)})")


def _decompress(path: Path, dst: BinaryIO, scratch: Path, limit: int | None) -> None:
    """Decompress a package archive into dst, bounded (see plain_tar)."""
    limit = bound(path) if limit is None else limit
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise PackageError(f"{path}: cannot read the archive ({exc.strerror or exc})") from None
    if not magic:
        raise PackageError(f"{path.name}: the file is empty; rebuild or download it again")
    want = ZSTD_MAGIC if path.name.endswith(".tar.zst") else GZIP_MAGIC
    if not magic.startswith(want):
        raise PackageError(f"{path.name}: not a {path.name.split('.', 1)[-1].rsplit('.', 2)[-1]} file (its "
                           "first bytes say otherwise); the archive is damaged or of another format")
    try:
        with open(path, "rb") as src:
            written = 0
            for block in (_zstd_blocks(src, path) if path.name.endswith(".tar.zst") else _gzip_blocks(src)):
                written += len(block)
                if written > limit:
                    raise PackageError(f"{path.name}: decompresses to more than {limit} bytes, more than "
                                       "its manifest's files add up to; refusing it (a broken or hostile "
                                       "archive)")
                dst.write(block)
    except zstandard.ZstdError as exc:
        raise PackageError(f"{path.name}: not a valid zstd stream ({exc}); the archive is damaged") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise PackageError(f"{path.name}: cannot decompress ({exc or 'truncated'}); the archive is "
                           "damaged or of another format") from None
    except OSError as exc:
        raise PackageError(f"{path.name}: cannot decompress into {scratch} ({exc.strerror or exc})") from None


def _gzip_blocks(src: BinaryIO) -> Iterator[bytes]:
    reader = gzip.GzipFile(fileobj=src, mode="rb")
    while block := reader.read(1 << 20):
        yield block


def _frame_start(data: bytes) -> bool:
    """Whether `data` starts a zstd frame: a data frame, or a skippable one (magic 0x184D2A5?)."""
    return data[:4] == ZSTD_MAGIC or (data[1:4] == b"\x2a\x4d\x18" and 0x50 <= data[0] <= 0x5F)


def _zstd_blocks(src: BinaryIO, path: Path) -> Iterator[bytes]:
    """Decompressed blocks of a zstd file: one frame or several (as `zstd` concatenates them, or a
    multi-threaded writer), skippable frames included. Input goes in small pieces, so one piece's output
    stays small even for a bomb (a zstd block of a few bytes can stand for 128 KiB); a stream that stops
    inside a frame (truncated) or goes on with what is not a frame is refused."""
    dctx = zstandard.ZstdDecompressor()
    obj = None
    pending = b""
    while True:
        piece = src.read(4096)
        pending += piece
        while pending:
            if obj is None:
                if len(pending) < 4 and piece:
                    break  # a frame's magic may go on in the next piece
                if not _frame_start(pending):
                    raise PackageError(f"{path.name}: data after the end of the zstd stream; the archive is "
                                       "damaged")
                obj = dctx.decompressobj(write_size=1 << 20)
            data, pending = pending, b""
            if out := obj.decompress(data):
                yield out
            if obj.eof:
                pending, obj = obj.unused_data, None
        if not piece:
            break
    if obj is not None:
        raise PackageError(f"{path.name}: truncated (the zstd stream stops before its end); rebuild or "
                           "download it again")


def open_archive(path: Path, scratch: Path, limit: int | None = None) -> tarfile.TarFile:
    """A package archive opened for reading, through an uncompressed copy in `scratch`."""
    plain = plain_tar(path, scratch, limit)
    try:
        return tarfile.open(plain)
    except (tarfile.TarError, OSError) as exc:
        raise PackageError(f"{path.name}: not a tar archive inside ({exc}); the archive is damaged") from None


def bound(path: Path) -> int:
    """The most bytes a compressed package may expand to: packages compress 2-5x; 40x is refused."""
    return 40 * path.stat().st_size + (256 << 20)


# Per tar entry: its header, a PAX header with its own header, and padding to 512 bytes.
_ENTRY_OVERHEAD = 4 * 512
# What packaging generates besides the listed files (share/ollama, the manifest inside) and tar's end.
_GENERATED_ALLOWANCE = 16 << 20


def bound_for(files) -> int:
    """The most bytes an archive holding `files` (a manifest's FileRecords) can decompress to."""
    files = list(files)
    return sum(f.size or 0 for f in files) + _ENTRY_OVERHEAD * (len(files) + 64) + _GENERATED_ALLOWANCE


# Files packaging generates into every archive besides those the manifest lists.
GENERATED_PREFIXES = (f"{PackageLayout.SHARE}/",)


def unpack(path: Path, dest: Path, scratch: Path, manifest_member: str = PackageLayout.INSIDE, *,
           limit: int | None = None) -> dict:
    """Unpack a package archive into `dest`, refusing unsafe members by name (absolute paths, `..`,
    links that leave the tree, devices, hard links), and return the manifest inside it (parsed JSON).
    `limit` bounds the decompressed size (see `bound_for`). Every problem is one PackageError naming
    the archive and the member."""
    with open_archive(path, scratch, limit) as tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise PackageError(f"{path.name}: truncated or damaged archive ({exc})") from None
        if not members:
            raise PackageError(f"{path.name}: the archive holds nothing; rebuild or download it again")
        # What unpacking writes and verify then reads: the members' real sizes (a sparse member's is its
        # size unpacked, not the few bytes it takes in the archive).
        limit = bound(path) if limit is None else limit
        real = sum(m.size for m in members if m.isfile())
        if real > limit:
            raise PackageError(f"{path.name}: its members add up to {real} bytes unpacked (sparse members "
                               f"counted in full), more than {limit}; refusing it (a broken or hostile "
                               "archive)")
        seen: set[str] = set()
        for m in members:
            _check_member(path.name, m)
            key = os.path.normpath(m.name)
            if key in seen and not m.isdir():
                raise PackageError(f"{path.name}: member {m.name!r} appears twice; refusing the archive")
            seen.add(key)
        try:
            extract(tar, dest, members)
        except FilterError as exc:
            member = getattr(exc, "tarinfo", None) and exc.tarinfo.name
            raise PackageError(f"{path.name}: unsafe member {member!r} ({exc}); refusing the "
                               "archive") from None
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise PackageError(f"{path.name}: cannot unpack ({exc}); the archive is damaged") from None
    found = dest / manifest_member
    if not found.is_file():
        raise PackageError(f"{path.name}: no {manifest_member}; not a package made by this pipeline")
    try:
        return json.loads(found.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise PackageError(f"{path.name}: {manifest_member} is not valid JSON ({exc})") from None


# tarfile's extraction filters came with Python 3.12 and the security releases of 3.8 to 3.11 (3.9.17);
# Debian 11's 3.9.2 has none.
HAS_FILTERS = hasattr(tarfile, "data_filter")
FilterError = getattr(tarfile, "FilterError", ())  # `except ()` catches nothing


def extract(tar: tarfile.TarFile, dest: Path, members: list[tarfile.TarInfo]) -> None:
    """Extract `members` (each already checked by _check_member) with tarfile's "data" filter, or, on a
    Python without filters, with what that filter does beyond those checks: no owner taken from the
    archive, no setuid, setgid or sticky bit, no group or other write, files readable and writable by
    their owner."""
    if HAS_FILTERS:
        tar.extractall(dest, members=members, filter="data")
        return
    tar.extractall(dest, members=[data_member(m) for m in members], numeric_owner=True)


def data_member(m: tarfile.TarInfo) -> tarfile.TarInfo:
    """A copy of `m` with the attributes tarfile's "data" filter would give it (for Pythons without)."""
    m = copy.copy(m)
    m.uid, m.gid, m.uname, m.gname = os.geteuid(), os.getegid(), "", ""
    if m.isfile():
        mode = m.mode & 0o755
        if not mode & 0o100:
            mode &= ~0o111  # executable by nobody unless by its owner
        m.mode = mode | 0o600
    elif m.isdir():
        m.mode = 0o755
    return m


def _check_member(archive_name: str, m: tarfile.TarInfo) -> None:
    parts = Path(m.name).parts
    if not m.name or "\0" in m.name or any(ord(c) < 0x20 for c in m.name):
        raise PackageError(f"{archive_name}: member {m.name!r} has an empty name or control characters; "
                           "refusing the archive")
    if m.name.startswith("/") or ".." in parts:
        raise PackageError(f"{archive_name}: member {m.name!r} would be written outside the folder it is "
                           "unpacked into; refusing the archive")
    if not (m.isfile() or m.isdir() or m.issym()):
        kind = "a hard link" if m.islnk() else "a device or special file"
        raise PackageError(f"{archive_name}: member {m.name!r} is {kind}; packages hold only files, folders "
                           "and relative links")
    if m.issym():
        target = Path(m.name).parent / m.linkname
        if m.linkname.startswith("/") or ".." in Path(os.path.normpath(target)).parts:
            raise PackageError(f"{archive_name}: link {m.name!r} -> {m.linkname!r} leaves the package; "
                               "refusing the archive")


def check_files(root: Path, files, archive_name: str) -> list[str]:
    """Every file the manifest lists must be in `root` with its size and sha256 (links with their target);
    a file that is neither listed nor generated by packaging is a problem too. Returns the problems."""
    problems = []
    listed = set()
    for f in files:
        listed.add(f.path)
        if f.path.startswith("/") or ".." in Path(f.path).parts or "\0" in f.path:
            problems.append(f"{f.path}: the manifest lists a path outside the package")
            continue
        here = root / f.path
        if f.link is not None:
            if not here.is_symlink() or os.readlink(here) != f.link:
                problems.append(f"{f.path}: the manifest says it links to {f.link}, the archive differs")
            continue
        if f.sha256 is None:
            problems.append(f"{f.path}: the manifest records no sha256; nothing proves the file unchanged")
            continue
        if not here.is_file() or here.is_symlink():
            problems.append(f"{f.path}: listed in the manifest, missing from {archive_name}")
            continue
        if here.stat().st_size != f.size or file_sha256(here) != f.sha256:
            problems.append(f"{f.path}: differs from the manifest's sha256 (changed after packaging)")
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if rel not in listed and not rel.startswith(GENERATED_PREFIXES) and rel != PackageLayout.INSIDE:
                problems.append(f"{rel}: in {archive_name} but not in its manifest")
    return problems
