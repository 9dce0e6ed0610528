"""Package archives: the one owner of their formats, names, writing and reading.

    ollama-<version>-<target>.tar.zst   (or .tar.gz)

Written reproducibly: entries sorted, owned by 0:0 with empty owner names, mtimes from
SOURCE_DATE_EPOCH, ordinary modes (0755 executables, 0644 the rest), and compressed without names or
times in the header; zstd's multi-threaded output does not depend on the thread count.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import zstandard

from pipeline.errors import PackageError

# format: (lowest level, highest level, default level)
FORMATS = {"tar.gz": (1, 9, 9), "tar.zst": (1, 22, 12)}
SUFFIXES = tuple(f".{fmt}" for fmt in FORMATS)
PREFIX = "ollama"


def name(version: str, target: str, fmt: str) -> str:
    """The archive's file name: ollama-0.12.5-gfx1103.tar.zst."""
    return f"{PREFIX}-{version}-{target}.{fmt}"


def is_archive_name(filename: str) -> bool:
    return Path(filename).name == filename and filename.startswith(f"{PREFIX}-") and filename.endswith(SUFFIXES)


def find(folder: Path, target: str) -> list[Path]:
    """The archives of `target` in `folder` (any version, any format), sorted."""
    if not folder.is_dir():
        return []
    return sorted(p for suffix in SUFFIXES for p in folder.glob(f"{PREFIX}-*-{target}{suffix}") if p.is_file())


def unpack_command(filename: str, dest: str = "/usr/local") -> str:
    """The shell command that unpacks an archive of this name (for notes and READMEs)."""
    flag = "--zstd -xf" if filename.endswith(".tar.zst") else "-xzf"
    return f"tar -C {dest} {flag} {filename}"


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


def plain_tar(path: Path, scratch: Path) -> Path:
    """An uncompressed copy of a package archive in `scratch`, decompressed with a bound (see `bound`).
    A file that is not an archive of a known format, or is truncated, is one PackageError naming it."""
    if not path.name.endswith(SUFFIXES):
        raise PackageError(f"{path.name}: not a package archive (expected {' or '.join(SUFFIXES)})")
    plain = scratch / (path.name.rsplit(".", 1)[0])
    limit = bound(path)
    try:
        with open(path, "rb") as src, open(plain, "wb") as dst:
            if path.name.endswith(".tar.zst"):
                reader = zstandard.ZstdDecompressor().stream_reader(src)
            else:
                reader = gzip.GzipFile(fileobj=src, mode="rb")
            written = 0
            while block := reader.read(1 << 20):
                written += len(block)
                if written > limit:
                    raise PackageError(f"{path.name}: decompresses to more than {limit} bytes, far more than "
                                       "a package of this size holds; refusing it (a broken or hostile archive)")
                dst.write(block)
    except zstandard.ZstdError as exc:
        raise PackageError(f"{path.name}: not a valid zstd stream ({exc}); the archive is damaged") from None
    except (gzip.BadGzipFile, EOFError, OSError) as exc:
        raise PackageError(f"{path.name}: cannot decompress ({exc}); the archive is damaged or of another "
                           "format") from None
    return plain


def open_archive(path: Path, scratch: Path) -> tarfile.TarFile:
    """A package archive opened for reading, through an uncompressed copy in `scratch`."""
    plain = plain_tar(path, scratch)
    try:
        return tarfile.open(plain)
    except (tarfile.TarError, OSError) as exc:
        raise PackageError(f"{path.name}: not a tar archive inside ({exc}); the archive is damaged") from None


def bound(path: Path) -> int:
    """The most bytes a compressed package may expand to: packages compress 2-5x; 40x is refused."""
    return 40 * path.stat().st_size + (256 << 20)


# Files packaging generates into every archive besides those the manifest lists.
GENERATED_PREFIXES = ("share/ollama/",)


def unpack(path: Path, dest: Path, scratch: Path, manifest_member: str = "lib/ollama/manifest.json") -> dict:
    """Unpack a package archive into `dest`, refusing unsafe members by name (absolute paths, `..`,
    links that leave the tree, devices, hard links), and return the manifest inside it (parsed JSON).
    Every problem is one PackageError naming the archive and the member."""
    import json

    with open_archive(path, scratch) as tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise PackageError(f"{path.name}: truncated or damaged archive ({exc})") from None
        for m in members:
            _check_member(path.name, m)
        try:
            tar.extractall(dest, members=members, filter="data")
        except tarfile.FilterError as exc:
            raise PackageError(f"{path.name}: unsafe member {getattr(exc, 'tarinfo', None) and exc.tarinfo.name!r} "
                               f"({exc}); refusing the archive") from None
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise PackageError(f"{path.name}: cannot unpack ({exc}); the archive is damaged") from None
    found = dest / manifest_member
    if not found.is_file():
        raise PackageError(f"{path.name}: no {manifest_member}; not a package made by this pipeline")
    try:
        return json.loads(found.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise PackageError(f"{path.name}: {manifest_member} is not valid JSON ({exc})") from None


def _check_member(archive_name: str, m: tarfile.TarInfo) -> None:
    parts = Path(m.name).parts
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
    from pipeline.infra.hashing import file_sha256

    problems = []
    listed = set()
    for f in files:
        listed.add(f.path)
        here = root / f.path
        if f.link is not None:
            if not here.is_symlink() or os.readlink(here) != f.link:
                problems.append(f"{f.path}: the manifest says it links to {f.link}, the archive differs")
            continue
        if f.sha256 is None:
            continue  # a folder
        if not here.is_file() or here.is_symlink():
            problems.append(f"{f.path}: listed in the manifest, missing from {archive_name}")
            continue
        if here.stat().st_size != f.size or file_sha256(here) != f.sha256:
            problems.append(f"{f.path}: differs from the manifest's sha256 (changed after packaging)")
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if rel not in listed and not rel.startswith(GENERATED_PREFIXES) and rel != "lib/ollama/manifest.json":
                problems.append(f"{rel}: in {archive_name} but not in its manifest")
    return problems
