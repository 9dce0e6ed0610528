"""Upstream source: fetch into a cache, verify the pinned tag, export a clean tree.

A URL is mirrored into the cache and only the pinned tag is fetched. A local repository is read in
place, so a mirror made with `git clone --mirror` (or a partial clone) works without network.
"""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

from . import runner
from .errors import CommandError, SourceError
from .log import Log


def is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("git@") and Path(url).expanduser().exists()


def resolve(url: str, tag: str, commit: str, cache: Path, log: Log, *, fetch: bool = True) -> Path:
    """The git directory holding `tag`, verified to point at `commit`."""
    if is_local(url):
        gitdir = _local_gitdir(Path(url).expanduser(), log)
    else:
        gitdir = cache / "git" / (hashlib.sha256(url.encode()).hexdigest()[:16] + ".git")
        if fetch:
            _fetch_tag(url, tag, gitdir, log)
    verify(gitdir, tag, commit, url, log)
    return gitdir


def _local_gitdir(path: Path, log: Log) -> Path:
    try:
        out = runner.run(log, ["git", "-C", path, "rev-parse", "--absolute-git-dir"], capture=True, quiet=True)
    except CommandError:
        raise SourceError(f"{path} is not a git repository; point --source / OLLAMA_SOURCE at a clone "
                          "or mirror of Ollama") from None
    return Path(out.stdout.decode().strip())


def _fetch_tag(url: str, tag: str, gitdir: Path, log: Log) -> None:
    if not (gitdir / "HEAD").exists():
        gitdir.parent.mkdir(parents=True, exist_ok=True)
        runner.run(log, ["git", "init", "--quiet", "--bare", gitdir])
    try:
        runner.run(log, ["git", "--git-dir", gitdir, "fetch", "--force", "--no-tags", "--depth", "1", url,
                         f"+refs/tags/{tag}:refs/tags/{tag}"])
    except CommandError as exc:
        raise SourceError(f"could not fetch tag {tag} from {url} (exit code {exc.returncode}); without "
                          "network, point --source / OLLAMA_SOURCE at a local mirror") from None


def verify(gitdir: Path, tag: str, commit: str, url: str, log: Log) -> None:
    """The tag must exist and still point at the pinned commit: a re-pointed tag is an error."""
    out = runner.run(log, ["git", "--git-dir", gitdir, "rev-parse", "--verify", "--quiet",
                           f"refs/tags/{tag}^{{commit}}"], capture=True, quiet=True, check=False)
    found = out.stdout.decode().strip()
    if out.returncode != 0 or not found:
        raise SourceError(f"tag {tag} not found in {url}; fetch tags into the mirror "
                          "(git fetch --tags) or fix source.tag in targets.toml")
    if found != commit.lower():
        raise SourceError(f"tag {tag} in {url} points at {found}, but targets.toml pins {commit}: the tag "
                          "was moved. Check the new commit, then update source.commit in targets.toml")
    log.line(f"tag {tag} -> {found} (verified)")


def missing_blobs(gitdir: Path, commit: str, log: Log) -> list[str]:
    """Paths whose blobs a partial clone never fetched. In a full clone a missing blob is corruption."""
    listing = runner.run(log, ["git", "--git-dir", gitdir, "ls-tree", "-r", "-z", "--full-tree", commit],
                         capture=True, quiet=True).stdout
    blobs: dict[str, str] = {}
    for entry in listing.split(b"\0"):
        if not entry:
            continue
        meta, path = entry.split(b"\t", 1)
        _mode, kind, sha = meta.split()
        if kind == b"blob":
            blobs[sha.decode()] = path.decode("utf-8", "surrogateescape")
    check = runner.run(log, ["git", "--git-dir", gitdir, "cat-file", "--batch-check"],
                       stdin="\n".join(blobs).encode() + b"\n", capture=True, quiet=True).stdout
    missing = [line.split()[0].decode() for line in check.splitlines() if line.endswith(b" missing")]
    if not missing:
        return []
    paths = sorted(blobs[sha] for sha in missing)
    if not _is_partial(gitdir):
        raise SourceError(f"repository {gitdir} is corrupt: {len(paths)} file(s) of {commit[:12]} have no "
                          f"data ({', '.join(paths[:5])}); re-clone it")
    return paths


def _is_partial(gitdir: Path) -> bool:
    if any((gitdir / "objects" / "pack").glob("*.promisor")):
        return True
    text = (gitdir / "config").read_text(errors="replace") if (gitdir / "config").exists() else ""
    return "partialclone" in text.lower() or "promisor" in text.lower()


def export(gitdir: Path, commit: str, dest: Path, log: Log) -> list[str]:
    """Write the tree of `commit` into the empty folder dest; returns the paths left out."""
    skipped = missing_blobs(gitdir, commit, log)
    for path in skipped:
        log.line(f"warning: {path} is absent from the partial clone; left out of the tree")
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest.with_name(dest.name + ".tar")
    excludes = [f":(top,literal,exclude){p}" for p in skipped]
    try:
        runner.run(log, ["git", "--git-dir", gitdir, "archive", "--format=tar", "-o", archive, commit,
                         "--", ".", *excludes],
                   capture=True, quiet=bool(excludes))
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    finally:
        archive.unlink(missing_ok=True)
    return skipped
