"""Package a build into a reproducible tarball with a manifest, written atomically under dist/<target>/.

Layout follows upstream's release archives (bin/ollama, lib/ollama/...), so the Go code finds its
runners the same way. Entries are sorted, owned by 0:0, stamped with SOURCE_DATE_EPOCH and compressed
without a timestamp: the same build gives the same bytes.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import re
import stat
import tarfile
from pathlib import Path
from collections.abc import Callable
from typing import Any

import jinja2
import zstandard

from . import fsutil
from .errors import PackageError
from .log import Log, StageResult
from .closure import Closure
from .hashing import file_sha256
from .plan import RUNTIME_TEMPLATES, Plan

MANIFEST_IN_ARCHIVE = "lib/ollama/manifest.json"

MANIFEST_VERSION = 1


def manifest_path(plan: Plan, dist: Path) -> Path:
    return dist / plan.name / "manifest.json"


def run(plan: Plan, build_dir: Path, build_info: dict, dist: Path, log: Log, result: StageResult,
        libraries: Callable[[Path], Closure | None] | None = None,
        owners: Callable[[], dict[str, str]] | None = None) -> Path:
    """Write the target's archive and manifest; `libraries` resolves the shared-library closure of the
    build (pipeline.libraries.resolve), whose bundles join the archive."""
    outdir = dist / plan.name
    archive = outdir / plan.archive_name
    outer = manifest_path(plan, dist)
    if _is_current(archive, outer, plan):
        result.cached(f"{archive.name} matches package hash {plan.hashes['package'][:12]}")
        return archive

    root = build_dir / "dist"
    found = libraries(root) if libraries else None
    entries = _collect(root) + [(b.dest, b.source) for b in (found.bundles if found else ())]
    entries, pruned = prune_tensile(sorted(entries), plan.target.runtime.archs)
    if pruned:
        log.line(f"pruned {len(pruned)} Tensile files of archs the runtime never asks for "
                 f"({sum(p.stat().st_size for _, p in pruned) / 1e6:.0f} MB); serving "
                 f"{', '.join(plan.target.runtime.archs)}")
    if "bin/ollama" not in {e[0] for e in entries}:
        raise PackageError(f"the build produced no bin/ollama under {root}; see {log.path}")
    epoch = int(build_info["source_date_epoch"])
    manifest = _manifest(plan, build_info, root, entries)
    manifest["libraries"] = found.to_dict() if found else None
    # The floor the package states: the oldest system it starts on, and what it needs from it.
    manifest["floor"] = {"policy": found.policy.name, "suite": found.policy.suite,
                         "description": found.policy.description,
                         "max_versions": dict(found.policy.max_versions),
                         "needs": {k: v.version for k, v in sorted(found.max_versions.items())}} if found else None
    if found and owners:
        came_from = owners()
        manifest["library_packages"] = {b.soname: came_from.get(b.found_at, "?") for b in found.bundles}
    manifest["gpu_code_objects"] = build_info.get("code_objects", {})
    manifest["tensile"] = {"serves": list(plan.target.runtime.archs), "pruned_files": len(pruned),
                           "pruned_bytes": sum(p.stat().st_size for _, p in pruned)}
    inner = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    generated = {**runtime_files(plan), MANIFEST_IN_ARCHIVE: inner}

    log.line(f"writing {archive} ({len(entries)} entries, mtime {epoch})")
    with fsutil.atomic_file(archive) as f:
        _write_archive(f, entries, generated, epoch, plan.target.package)
    manifest["archive"] = {"name": archive.name, "size": archive.stat().st_size,
                           "sha256": file_sha256(archive)}
    fsutil.write_text(outer, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    fsutil.write_text(outdir / "SHA256SUMS", f"{manifest['archive']['sha256']}  {archive.name}\n")
    log.line(f"{archive.name}: {manifest['archive']['size'] / 1e6:.1f} MB, "
             f"sha256 {manifest['archive']['sha256']}")
    return archive


def _is_current(archive: Path, outer: Path, plan: Plan) -> bool:
    if not (archive.exists() and outer.exists()):
        return False
    try:
        recorded = json.loads(outer.read_text())
        return (recorded["hashes"]["package"] == plan.hashes["package"]
                and recorded["archive"]["size"] == archive.stat().st_size
                and recorded["archive"]["sha256"] == file_sha256(archive))
    except (ValueError, KeyError, TypeError):
        return False


# rocBLAS/hipBLASLt kernels per arch: ..._gfx906.co, Kernels.so-000-gfx906.hsaco, ..._gfx90a-xnack-.co.
_TENSILE_ARCH = re.compile(r"[-_](gfx[0-9a-f]+)(?:-xnack[+-])?\.[A-Za-z]+$")
_TENSILE_DIRS = ("rocblas", "hipblaslt")


def prune_tensile(entries: list[tuple[str, Path]], serves: tuple[str, ...]):
    """Drop Tensile kernel files for archs outside `serves`; arch-neutral files stay.

    Returns (kept, pruned). A Tensile folder without files for a served arch is an error: the package
    would load and then fail on the first matrix multiplication.
    """
    if not serves:
        return entries, []
    kept, pruned, seen = [], [], set()
    for rel, path in entries:
        parts = rel.split("/")
        m = _TENSILE_ARCH.search(parts[-1])
        if m and any(d in parts[:-1] for d in _TENSILE_DIRS) and "library" in parts[:-1]:
            seen.add(m[1])
            if m[1] not in serves:
                pruned.append((rel, path))
                continue
        kept.append((rel, path))
    missing = [a for a in serves if a not in seen]
    if seen and missing:
        raise PackageError(f"no rocBLAS Tensile files for {', '.join(missing)} in the build (found: "
                           f"{', '.join(sorted(seen))}); the runtime would fail on its first GEMM")
    return kept, pruned


def _collect(root: Path) -> list[tuple[str, Path]]:
    """Every path under root as (archive name, path), sorted; refuses links that leave the tree."""
    entries: list[tuple[str, Path]] = []
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                target = os.readlink(path)
                resolved = (path.parent / target).resolve()
                if os.path.isabs(target) or not resolved.is_relative_to(real_root):
                    raise PackageError(f"{rel} is a symlink to {target}, which leaves the package; "
                                       "only relative links inside the tree can be packaged")
            elif not (path.is_file() or path.is_dir()):
                raise PackageError(f"{rel} is neither a file, a folder nor a symlink; cannot package it")
            entries.append((rel, path))
    entries.sort()
    return entries


def _manifest(plan: Plan, build_info: dict, root: Path, entries: list[tuple[str, Path]]) -> dict[str, Any]:
    files = []
    for rel, path in entries:
        if path.is_symlink():
            files.append({"path": rel, "link": os.readlink(path)})
        elif path.is_file():
            files.append({"path": rel, "size": path.stat().st_size, "sha256": file_sha256(path),
                          "mode": "0755" if _executable(path) else "0644"})
    t = plan.target
    return {
        "manifest_version": MANIFEST_VERSION,
        "target": t.name,
        "description": t.description,
        "version": plan.version,
        "upstream": {"url": t.source.url, "tag": t.source.tag, "commit": t.source.commit,
                     "version": plan.upstream_version},
        "patches": [p.record() for p in plan.patches],
        "builder": {"name": plan.builder_name, "image": plan.image_tag, "image_id": build_info["image_id"],
                    "template": plan.builder.template, "suite": plan.builder.suite,
                    "packages": list(plan.builder.packages)},
        "backends": [b.preset for b in plan.backends],
        "gpu_archs": list(t.gpu_archs),
        "runtime_env": dict(t.runtime.env),
        "hashes": dict(plan.hashes),
        "source_date_epoch": build_info["source_date_epoch"],
        "files": files,
    }


def _executable(path: Path) -> bool:
    return bool(path.stat().st_mode & stat.S_IXUSR)


@contextlib.contextmanager
def _compressed(f, fmt: str, level: int):
    if fmt == "tar.zst":
        # zstd's multi-threaded output does not depend on the number of threads: reproducible anywhere.
        zstd = zstandard.ZstdCompressor(level=level, threads=-1, write_checksum=True)
        with zstd.stream_writer(f, closefd=False) as out:
            yield out
    else:
        # filename='' and mtime=0 keep the gzip header free of names and times.
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=level, mtime=0) as out:
            yield out


def open_archive(path: Path, scratch: Path) -> tarfile.TarFile:
    """A package archive opened for reading, whatever its compression (.tar.zst goes through scratch)."""
    if path.name.endswith(".tar.zst"):
        plain = scratch / (path.name[: -len(".zst")])
        with open(path, "rb") as src, open(plain, "wb") as dst:
            zstandard.ZstdDecompressor().copy_stream(src, dst)
        return tarfile.open(plain)
    return tarfile.open(path)


def runtime_files(plan: Plan) -> dict[str, bytes]:
    """share/ollama/: env file, systemd unit, install script and README, from pipeline/templates/runtime."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(RUNTIME_TEMPLATES)), keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return {f"share/ollama/{name.removesuffix('.j2')}":
            env.get_template(name).render(target=plan.target, version=plan.version,
                                          patches=plan.patches).encode()
            for name in sorted(t.name for t in RUNTIME_TEMPLATES.glob("*.j2"))}


def _write_archive(f, entries, generated: dict[str, bytes], epoch: int, options) -> None:
    """Files of the build plus generated ones (manifest, runtime files), sorted, owned by 0:0."""
    items = [(rel, path) for rel, path in entries if rel not in generated]
    items += [(rel, None) for rel in generated]
    with _compressed(f, options.format, options.level) as stream, \
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
                info.mode = 0o755 if _executable(path) else 0o644
                with open(path, "rb") as src:
                    tar.addfile(info, src)


