"""Assemble a release from built targets into dist/release/: the stage after package, before publishing.

    dist/<target>/ollama-<version>-<target>.tar.gz + manifest.json   (what `nox -s build` wrote)
        ─▶ dist/release/ollama-<version>-<target>.tar.gz               (or .part-000, .part-001, ...)
           dist/release/ollama-<version>-<target>.tar.gz.manifest.json
           dist/release/SHA256SUMS, RELEASE_NOTES.md, JOIN.md (only when an archive was split)

Every archive is checked against the sha256 its manifest records before it is copied, and the copied
bytes are hashed again on the way. Everything is written to a staging folder beside dist/release that
replaces it only when complete, so a failure keeps the previous release. Publishing is not done here:
the release workflow runs `nox -s publish` (publish.py) with the files of dist/release.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import shlex
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from pipeline import formats, orchestrate
from pipeline import stages as stage_table
from pipeline.config.names import is_prerelease
from pipeline.config.paths import TEMPLATES
from pipeline.config.places import release_folder, target_folder
from pipeline.errors import PackageError
from pipeline.formats import PackageLayout
from pipeline.hashing import file_sha256
from pipeline.infra import archive as archives
from pipeline.infra import fsutil, templates
from pipeline.infra.log import size as log_size
from pipeline.records import record
from pipeline.stages.manifest import Manifest

# GitHub refuses release assets of 2 GiB and more; larger archives are published in parts.
ASSET_LIMIT = 2**31 - 1
NOTES_TEMPLATE = "release-notes.md.j2"
SUMS = PackageLayout.SUMS
NOTES = "RELEASE_NOTES.md"
JOIN = "JOIN.md"
BLOCK = 1 << 20

@record
class Build:
    """One built target to release: its name, its folder under dist/ (TARGET, or TARGET@TAG at another
    upstream tag than its own) and why it is released at that upstream version (targets.toml releases)."""

    target: str
    folder: str
    note: str = ""


@record
class Asset:
    """One file of the release folder."""

    name: str
    size: int
    sha256: str


@record
class Entry:
    """One target of the release: its archive as published (whole or in parts) and its manifest."""

    target: str
    source: Path
    manifest: Manifest
    archive: Asset
    parts: tuple[Asset, ...]
    manifest_asset: Asset
    # What other stages left for the release beside the archive (Stage.artifacts), published as they are.
    extras: tuple[Asset, ...] = ()
    # Why the target is released at this upstream version (manifest.upstream.version), from targets.toml.
    note: str = ""

    @property
    def split(self) -> bool:
        return bool(self.parts)


@record
class Release:
    folder: Path
    entries: tuple[Entry, ...]
    # Every file of the folder is uploaded (`nox -s publish -- TAG`); the notes are also
    # the release's body.
    assets: tuple[Path, ...]
    limit: int


def build_command(target: str) -> str:
    return f"nox -s build -- {target}"


def built(dist: Path, names: Iterable[str | Build]) -> list[str | Build]:
    """Those of `names` (targets of the matrix, in its order, or Builds) with an archive in their folder."""
    found = [n for n in names if _archives(target_folder(dist, _build(n).folder), _build(n).target)]
    if not found:
        raise PackageError(f"no target has a built archive in {dist}/<target>/; build one first: "
                           f"{build_command('TARGET')} (or --all)")
    return found


def _archives(folder: Path, target: str) -> list[Path]:
    return archives.find(folder, target)


def _build(item: str | Build) -> Build:
    return item if isinstance(item, Build) else Build(target=item, folder=item)


def locate(dist: Path, target: str, folder_name: str = "") -> tuple[Path, Manifest]:
    """The archive of a built target (in dist/<folder_name>, default dist/<target>) and its manifest,
    refused unless the two agree."""
    folder = target_folder(dist, folder_name or target)
    manifest_file = folder / PackageLayout.BESIDE
    if not _archives(folder, target):
        raise PackageError(f"target {target!r} has no built archive in {folder}/ "
                           f"(ollama-<version>-{target}.tar.gz); build it with: {build_command(target)}")
    if not manifest_file.is_file():
        raise PackageError(f"target {target!r}: {manifest_file} is missing, so its archive cannot be "
                           f"verified; rebuild with: {build_command(target)}")
    manifest = Manifest.load(manifest_file)
    if manifest.target != target:
        raise PackageError(f"{manifest_file}: the manifest is for target {manifest.target!r}, not {target!r}")
    if manifest.archive is None or not formats.is_archive_name(manifest.archive.name):
        raise PackageError(f"{manifest_file}: no archive name, or not an archive file name "
                           f"({formats.archive_name('VERSION', target, 'tar.zst')}); rebuild with: "
                           f"{build_command(target)}")
    archive = folder / manifest.archive.name
    if not archive.is_file():
        raise PackageError(f"target {target!r}: {manifest_file} names {archive.name}, which is not in "
                           f"{folder}/; build it with: {build_command(target)}")
    return archive, manifest


def verify(archive: Path, manifest: Manifest, target: str) -> None:
    """The archive is what its manifest says: size and sha256."""
    recorded = manifest.archive
    size = archive.stat().st_size
    if size != recorded.size:
        raise PackageError(f"{archive}: {size} bytes, but its manifest records {recorded.size}; "
                           f"the archive changed after the build. Rebuild with: {build_command(target)}")
    actual = file_sha256(archive)
    if actual != recorded.sha256:
        raise PackageError(f"{archive}: sha256 {actual} does not match its manifest's {recorded.sha256}; "
                           f"the archive changed after the build. Rebuild with: {build_command(target)}")


def assemble(targets: Sequence[str | Build], dist: Path, *, out: Path | None = None, limit: int | None = None,
             table: Sequence[stage_table.Stage] | None = None) -> Release:
    """Verify, copy (splitting what exceeds `limit`) with what the stages of `table` left for the release,
    write SHA256SUMS and notes; then swap into `out`. `targets`: names (dist/<target>) or Builds (a
    target's folder at another upstream tag, with the note of why it is released there)."""
    if not targets:
        raise PackageError(f"no target to release; build one first: {build_command('TARGET')}")
    limit = ASSET_LIMIT if limit is None else limit
    out = release_folder(dist) if out is None else out
    builds = [_build(t) for t in targets]
    notes = {b.folder: b.note for b in builds}
    # Everything is checked before anything is copied: a bad last target costs no copying.
    located = [(b.target, *locate(dist, b.target, b.folder)) for b in builds]
    names = [m.archive.name for _, _, m in located]
    if len(set(names)) != len(names):
        raise PackageError(f"two targets have the same archive name: {', '.join(sorted(names))}")
    for target, archive, manifest in located:
        verify(archive, manifest, target)
    table = stage_table.STAGES if table is None else table
    extras = {archive.parent: stage_artifacts(table, archive.parent, manifest) for _, archive, manifest
              in located}
    every = [*names, *(f"{a.name}.manifest.json" for _, a, _ in located),
             *(p.name for found in extras.values() for p in found)]
    if len(set(every)) != len(every):
        raise PackageError(f"two files of the release would have the same name: {', '.join(sorted(every))}")

    with fsutil.staging_dir(out) as stage:
        entries = tuple(dataclasses.replace(_copy(target, archive, manifest, stage, limit,
                                                  extras[archive.parent]),
                                            note=notes.get(archive.parent.name, ""))
                        for target, archive, manifest in located)
        if any(e.split for e in entries):
            _write(stage / JOIN, render_join(entries))
        _write(stage / NOTES, render_notes(entries, limit))
        _write(stage / SUMS, sha256sums(entries, stage))
    return Release(folder=out, entries=entries, assets=tuple(sorted(out.iterdir())), limit=limit)


def stage_artifacts(table: Sequence[stage_table.Stage], folder: Path, manifest: Manifest) -> list[Path]:
    """The files the stages of `table` left in a target's folder for the release (Stage.artifacts), as
    their records of the hashes this archive was built with list them: a file of an earlier build, or
    of a stage that did not run for this archive, is not released."""
    found = []
    for stage in table:
        if stage.artifacts is None or stage.where is None or stage.name not in manifest.hashes:
            continue  # the package's own archive and manifest are the entry itself
        for path in orchestrate.recorded_artifacts(stage, folder, manifest.hashes[stage.name]):
            if not path.is_file():
                raise PackageError(f"{path}: the {stage.name} stage's record lists it, but it is missing; "
                                   f"rebuild with: {build_command(manifest.target)}")
            found.append(path)
    return found


def _copy(target: str, archive: Path, manifest: Manifest, stage: Path, limit: int,
          extras: Sequence[Path] = ()) -> Entry:
    """Copy the archive in one pass, whole or in parts of at most `limit` bytes, hashing what is written."""
    size = manifest.archive.size
    count = max(1, -(-size // limit))
    names = [archive.name] if count == 1 else [f"{archive.name}.part-{i:03d}" for i in range(count)]
    whole = hashlib.sha256()
    written: list[Asset] = []
    with open(archive, "rb") as src:
        for i, name in enumerate(names):
            want = min(limit, size - i * limit) if count > 1 else size
            part = hashlib.sha256()
            with open(stage / name, "wb") as dst:
                left = want
                while left:
                    block = src.read(min(BLOCK, left))
                    if not block:
                        break
                    dst.write(block)
                    part.update(block)
                    whole.update(block)
                    left -= len(block)
            if left or (i == count - 1 and src.read(1)):
                raise PackageError(f"{archive} changed while it was copied; rebuild with: "
                                   f"{build_command(target)}")
            written.append(Asset(name=name, size=want, sha256=part.hexdigest()))
    if whole.hexdigest() != manifest.archive.sha256:
        raise PackageError(f"{archive} changed while it was copied (sha256 {whole.hexdigest()}, manifest "
                           f"{manifest.archive.sha256}); rebuild with: {build_command(target)}")
    manifest_name = f"{archive.name}.manifest.json"
    shutil.copyfile(archive.parent / PackageLayout.BESIDE, stage / manifest_name)
    manifest_asset = Asset(name=manifest_name, size=(stage / manifest_name).stat().st_size,
                           sha256=file_sha256(stage / manifest_name))
    whole_asset = Asset(name=archive.name, size=size, sha256=manifest.archive.sha256)
    copied = []
    for path in extras:
        shutil.copyfile(path, stage / path.name)
        copied.append(Asset(name=path.name, size=(stage / path.name).stat().st_size,
                            sha256=file_sha256(stage / path.name)))
    return Entry(target=target, source=archive, manifest=manifest, archive=whole_asset,
                 parts=tuple(written) if count > 1 else (), manifest_asset=manifest_asset,
                 extras=tuple(copied))


def sha256sums(entries: Sequence[Entry], stage: Path) -> str:
    """`sha256sum` format, sorted by name: every file of the folder, and each split archive as joined."""
    sums = {e.archive.name: e.archive.sha256 for e in entries}
    for e in entries:
        for asset in (*e.parts, e.manifest_asset, *e.extras):
            sums[asset.name] = asset.sha256
    for path in stage.iterdir():
        if path.name not in sums and path.name != SUMS:
            sums[path.name] = file_sha256(path)
    return "".join(f"{sums[name]}  {name}\n" for name in sorted(sums))


def render_notes(entries: Sequence[Entry], limit: int = ASSET_LIMIT) -> str:
    return templates.render(TEMPLATES, NOTES_TEMPLATE, filters={"size": human_size}, entries=entries,
                            sums=SUMS, join=JOIN, limit=limit, any_split=any(e.split for e in entries),
                            versions=upstream_versions([e.manifest for e in entries]))


MANIFEST_SUFFIX = ".manifest.json"


def folder_manifests(folder: Path) -> list[Manifest]:
    """The manifests of an assembled release folder (<archive>.manifest.json), read as the package
    stage wrote them."""
    return [Manifest.load(p) for p in sorted(folder.glob(f"*{MANIFEST_SUFFIX}"))
            if p.is_file() and not p.is_symlink()]


def upstream_versions(manifests: Iterable[Manifest]) -> dict[str, list[str]]:
    """The upstream Ollama versions the assets carry, oldest first, each with its targets."""
    found: dict[str, list[str]] = {}
    for m in manifests:
        found.setdefault(m.upstream.version, []).append(m.target)
    def key(version: str) -> tuple:
        return tuple(int(n) for n in re.findall(r"\d+", version)), version
    return {v: sorted(found[v]) for v in sorted(found, key=key)}


def title(tag: str, manifests: Iterable[Manifest]) -> str:
    """The release's title: the tag and the upstream versions it carries ("v1.4.0: Ollama 0.12.5, 0.24.0")."""
    versions = upstream_versions(manifests)
    return f"{tag}: Ollama {', '.join(versions)}" if versions else tag


def render_join(entries: Sequence[Entry]) -> str:
    lines = ["# Joining split archives", "",
             "GitHub refuses release assets of 2 GiB or more, so these archives are published in parts.",
             f"Download every part and {SUMS}, then:", "", "```sh"]
    lines += [join_command(e) for e in entries if e.split]
    lines += ["```", "",
              f"(`sha256sum -c --ignore-missing {SUMS}` when you downloaded only some assets.)", ""]
    return "\n".join(lines)


def join_command(entry: Entry) -> str:
    name = entry.archive.name
    return f"cat {name}.part-* > {name} && sha256sum -c {SUMS}"


def human_size(n: int) -> str:
    return log_size(n, exact=True)


def summary(release: Release, *, dry_run: bool, tag: str | None = None) -> str:
    """What is in dist/release and, for --dry-run, the publish command the workflow would run."""
    lines = [f"{release.folder}: {len(release.entries)} target(s), {len(release.assets)} asset(s)"]
    for e in release.entries:
        how = f"{len(e.parts)} parts" if e.split else "whole"
        lines.append(f"  {e.target:10} {e.archive.name} ({e.archive.size} bytes, {how}) "
                     f"sha256 {e.archive.sha256}")
    if dry_run:
        tag = tag or os.environ.get("GITHUB_REF_NAME") or "TAG"
        lines.append("dry run: nothing is published; the release workflow would run:")
        lines.append(f"  nox -s publish -- {tag} {_relative(release.folder)}")
        pre = "true" if is_prerelease(tag) else "false"
        named = shlex.quote(title(tag, (e.manifest for e in release.entries)))
        lines.append(f"  (gh release create --draft --verify-tag --title {named} --prerelease={pre} "
                     f"--notes-file {_relative(release.folder / NOTES)} -- {tag}; "
                     f"gh release upload --clobber -- {tag} FILE for each file; "
                     f"gh release edit --draft=false -- {tag})")
        for p in release.assets:
            lines.append(f"    {p.name:60} {human_size(p.stat().st_size)}")
    return "\n".join(lines)


def _relative(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def _write(path: Path, text: str) -> None:
    path.write_text(text)
