"""Git, as the pipeline uses it: a cached mirror of an upstream URL (or a local repository read in place),
pinned tags verified against their commits, trees exported without touching the network, and patches
applied exactly. Every git command goes through the runner; user values never reach git as options
(refs are checked, paths are absolute, `--` ends the options where git takes paths).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.config import names
from pipeline.config.places import Places
from pipeline.config.series import Patch
from pipeline.errors import CommandError, PatchError, SourceError
from pipeline.infra import owner, runner
from pipeline.infra.log import Log
from pipeline.records import record


def is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("git@") and Path(url).expanduser().exists()


# Transports git may use for a fetch: never ext:: or fd:: (they run commands), whatever the user's config.
SAFE_PROTOCOLS = {"GIT_ALLOW_PROTOCOL": "https:http:ssh:git:file", "GIT_TERMINAL_PROMPT": "0"}


def _checked(url: str, tags: list[str]) -> None:
    """A last check where values meet git: config and settings check them where they are read."""
    if problem := names.url_problem(url):
        raise SourceError(f"source {url!r} is not allowed: {problem}")
    for tag in tags:
        if problem := names.ref_problem(tag):
            raise SourceError(f"tag {tag!r} is not a valid git tag ({problem})")


# What a message tells the user to set for a repository (Ollama's or llama.cpp's).
OLLAMA = ("--source / OLLAMA_SOURCE", "Ollama")


def repository(url: str, tags: list[str], places: Places, log: Log, *,
               origin: tuple[str, str] = OLLAMA) -> Path:
    """A git directory holding `tags`: a local repository itself, or the cache's mirror of a URL.
    `origin`: the setting that names the repository and the project it holds, for messages."""
    _checked(url, tags)
    if is_local(url):
        return _local_gitdir(Path(url).expanduser(), log, origin)
    owner.claim(places)  # only a URL's mirror is written into the cache
    if names.local_form(url):
        raise SourceError(f"{url}: no such folder (a local path, not a URL); point {origin[0]} at a clone or "
                          f"mirror of {origin[1]}, or fix the URL in targets.toml")
    gitdir = places.mirror(hashlib.sha256(url.encode()).hexdigest()[:16])
    for tag in tags:
        _fetch_tag(url, tag, gitdir, log, origin)
    return gitdir


def commit_of(gitdir: Path, tag: str, log: Log) -> str | None:
    if names.ref_problem(tag):
        return None
    out = runner.run(log, ["git", "--git-dir", gitdir, "rev-parse", "--verify", "--quiet", "--end-of-options",
                           f"refs/tags/{tag}^{{commit}}"], capture=True, quiet=True, check=False)
    return out.stdout.decode().strip() or None


def _local_gitdir(path: Path, log: Log, origin: tuple[str, str] = OLLAMA) -> Path:
    try:
        out = runner.run(log, ["git", "-C", path.resolve(), "rev-parse", "--absolute-git-dir"], capture=True,
                         quiet=True)
    except CommandError:
        raise SourceError(f"{path} is not a git repository; point {origin[0]} at a clone "
                          f"or mirror of {origin[1]}") from None
    return Path(out.stdout.decode().strip())


def _fetch_tag(url: str, tag: str, gitdir: Path, log: Log, origin: tuple[str, str] = OLLAMA) -> None:
    if not (gitdir / "HEAD").exists():
        gitdir.parent.mkdir(parents=True, exist_ok=True)
        runner.run(log, ["git", "init", "--quiet", "--bare", gitdir])
    try:
        runner.run(log, ["git", "--git-dir", gitdir, "fetch", "--force", "--no-tags", "--depth", "1", "--",
                         url, f"+refs/tags/{tag}:refs/tags/{tag}"], env=SAFE_PROTOCOLS)
    except CommandError as exc:
        raise SourceError(f"could not fetch tag {tag} from {url} (exit code {exc.returncode}); without "
                          f"network, point {origin[0]} at a local mirror") from None


def verify_tag(gitdir: Path, tag: str, commit: str, url: str, log: Log, *,
               pin: str = "source.tag / source.commit") -> None:
    """The tag must exist and still point at the pinned commit: a re-pointed tag is an error. `pin`
    names the setting of targets.toml that holds the tag and commit."""
    found = commit_of(gitdir, tag, log)
    if not found:
        raise SourceError(f"tag {tag} not found in {url}; fetch tags into the mirror "
                          f"(git fetch --tags) or fix {pin} in targets.toml")
    if found != commit.lower():
        raise SourceError(f"tag {tag} in {url} points at {found}, but targets.toml pins {commit}: the tag "
                          f"was moved. Check the new commit, then update {pin} in targets.toml")
    log.line(f"tag {tag} -> {found} (verified)")


def _tree_entries(gitdir: Path, commit: str, log: Log) -> list[tuple[str, str, str]]:
    """(mode, sha, path) of every file and symlink of the commit; submodules are not followed."""
    listing = runner.run(log, ["git", "--git-dir", gitdir, "ls-tree", "-r", "-z", "--full-tree", commit],
                         capture=True, quiet=True).stdout
    entries = []
    for entry in listing.split(b"\0"):
        if entry:
            meta, path = entry.split(b"\t", 1)
            mode, kind, sha = meta.decode().split()
            if kind == "blob":
                entries.append((mode, sha, path.decode("utf-8", "surrogateescape")))
    return entries


def _missing(gitdir: Path, commit: str, log: Log) -> set[str]:
    # rev-list reports absent objects without fetching them; cat-file would try the promisor remote.
    out = runner.run(log, ["git", "--git-dir", gitdir, "rev-list", "--objects", "--no-walk",
                           "--missing=print", commit], capture=True, quiet=True).stdout
    return {line[1:].decode() for line in out.splitlines() if line.startswith(b"?")}


def _is_partial(gitdir: Path) -> bool:
    if any((gitdir / "objects" / "pack").glob("*.promisor")):
        return True
    text = (gitdir / "config").read_text(errors="replace") if (gitdir / "config").exists() else ""
    return "partialclone" in text.lower() or "promisor" in text.lower()


def export(gitdir: Path, commit: str, dest: Path, log: Log, paths: set[str] | None = None) -> list[str]:
    """Write the tree of `commit` into dest; returns the paths left out.

    Files a partial clone never fetched (Ollama's large test data, say) are left out and listed; in
    a full clone a missing file is corruption and stops the export. Nothing here touches the network.
    With `paths`, only those files are written (what `git apply --check` of a series needs).
    """
    entries = _tree_entries(gitdir, commit, log)
    if paths is not None:
        entries = [e for e in entries if e[2] in paths]
    missing = _missing(gitdir, commit, log)
    skipped = sorted(path for _, sha, path in entries if sha in missing)
    if skipped and not _is_partial(gitdir):
        raise SourceError(f"repository {gitdir} is corrupt: {len(skipped)} file(s) of {commit[:12]} have "
                          f"no data ({', '.join(skipped[:5])}); re-clone it")
    for path in skipped:
        log.line(f"warning: {path} is absent from the partial clone; left out of the tree")
    present = [(mode, sha, path) for mode, sha, path in entries if sha not in missing]
    shas = "".join(f"{sha}\n" for sha in dict.fromkeys(sha for _, sha, _ in present))
    blob = runner.run(log, ["git", "--git-dir", gitdir, "cat-file", "--batch"], stdin=shas.encode(),
                      capture=True, quiet=True).stdout
    data = _parse_batch(blob)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    for mode, sha, path in present:
        target = dest / path
        if ".." in Path(path).parts or not (root / path).resolve().parent.is_relative_to(root):
            raise SourceError(f"{commit[:12]} has a path that leaves the tree: {path!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        if mode == "120000":
            link = data[sha].decode("utf-8", "surrogateescape")
            if link.startswith("/") or not (target.parent / link).resolve().is_relative_to(root):
                raise SourceError(f"{commit[:12]}: symlink {path} -> {link} leaves the tree")
            target.symlink_to(link)
        else:
            target.write_bytes(data[sha])
            target.chmod(0o755 if mode == "100755" else 0o644)
    return skipped


def _parse_batch(out: bytes) -> dict[str, bytes]:
    """Parse `git cat-file --batch` output: '<sha> <type> <size>\\n<content>\\n' per object."""
    data: dict[str, bytes] = {}
    pos = 0
    while pos < len(out):
        header_end = out.index(b"\n", pos)
        sha, _kind, size = out[pos:header_end].decode().split()
        start = header_end + 1
        data[sha] = out[start:start + int(size)]
        pos = start + int(size) + 1
    return data


@record
class Checkout:
    """The project's own checkout, as its images name it: a web URL of the repository ("" when unknown),
    the commit ("" outside a git checkout) and whether tracked files differ from it."""

    url: str
    commit: str
    modified: bool


def checkout(root: Path, log: Log, url: str | None = None) -> Checkout:
    """The checkout at `root`; `url` (a setting) wins over the remote `origin`, which is read as a web
    URL (git@host:owner/repo.git and ssh:// forms become https://host/owner/repo; credentials dropped)."""
    def git(*args: str) -> str:
        out = runner.run(log, ["git", "-C", root, *args], capture=True, quiet=True, check=False)
        return out.stdout.decode("utf-8", "replace").strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    modified = bool(commit and git("status", "--porcelain", "--untracked-files=no"))
    return Checkout(url=url or web_url(git("remote", "get-url", "origin")), commit=commit, modified=modified)


def web_url(remote: str) -> str:
    """The https:// address of a git remote on a forge, or "" for what is not one (a local path)."""
    scp = re.fullmatch(r"(?:[^@/:]+@)?([A-Za-z0-9-]+\.[A-Za-z0-9.-]+):(?!//)([^\s]+)", remote)
    if scp and not remote.startswith("/"):
        host, path = scp.groups()
    else:
        parts = urlsplit(remote)
        if parts.scheme not in ("https", "http", "ssh", "git") or not parts.hostname:
            return ""
        host, path = parts.hostname, parts.path
    path = path.strip("/").removesuffix(".git")
    if not path or _CONTROL.search(path) or not re.fullmatch(r"[A-Za-z0-9.-]+", host):
        return ""
    return f"https://{host}/{path}"


_CONTROL = re.compile(r"[\x00-\x20\x7f\"\\]")


_FAILED_AT = re.compile(r"patch failed: (?P<file>.+):(?P<line>\d+)")
_NOT_APPLY = re.compile(r"error: (?P<file>.+): (?P<why>patch does not apply|does not exist in index|"
                        r"No such file or directory|already exists in working directory)")


def apply(patch: Patch, tree: Path, log: Log, *, ref: str = "") -> None:
    """Apply one patch to a plain tree, exactly (no fuzz); a failure changes nothing and names the hunk."""
    # The ceiling stops git from finding a repository above the tree and applying relative to it.
    env = {"GIT_CEILING_DIRECTORIES": str(tree.resolve().parent)}
    cmd = ["git", "apply", "--whitespace=nowarn", "-p1", patch.path.resolve()]
    try:
        runner.run(log, [*cmd[:2], "--check", *cmd[2:]], cwd=tree, env=env, capture=True, quiet=True)
    except CommandError:
        raise PatchError(_explain(patch, tree, env, log, ref)) from None
    runner.run(log, cmd, cwd=tree, env=env)
    log.line(f"applied {patch.name} ({patch.sha256[:12]})")


def _explain(patch: Patch, tree: Path, env: dict, log: Log, ref: str) -> str:
    out = runner.run(log, ["git", "apply", "--check", "-v", patch.path.resolve()], cwd=tree, env=env,
                     capture=True, quiet=True, check=False)
    text = out.stderr.decode(errors="replace") + out.stdout.decode(errors="replace")
    location = conflict_location(text)
    where = f": {location}" if location else ""
    against = f" to {ref}" if ref else ""
    return (f"patch {patch.name} does not apply{against}{where}. Nothing was changed; refresh the patch "
            f"against this version or narrow its range")


def conflict_location(git_apply_output: str) -> str:
    """'FILE, hunk at line N' (or 'FILE (reason)') from what `git apply --check -v` printed."""
    if m := _FAILED_AT.search(git_apply_output):
        return f"{m['file']}, hunk at line {m['line']}"
    if m := _NOT_APPLY.search(git_apply_output):
        return f"{m['file']} ({m['why']})"
    return ""


def local_tags(gitdir: Path, log: Log) -> dict[str, str]:
    """tag -> commit of every tag of a git directory that names a commit (annotated tags peeled); a tag
    of a tree or a blob is left out, and said in the log."""
    out = runner.run(log, ["git", "--git-dir", gitdir, "for-each-ref", "--format=%(refname:strip=2) "
                           "%(objecttype) %(objectname) %(*objecttype) %(*objectname)", "refs/tags"],
                     capture=True, quiet=True)
    tags = {}
    for line in out.stdout.decode("utf-8", "replace").splitlines():
        name, kind, obj, *peeled = line.split()
        if peeled:
            kind, obj = peeled[0], peeled[-1]
        if kind == "commit":
            tags[name] = obj
        else:
            log.line(f"tag {name} names a {kind}, not a commit: left out")
    return tags


def remote_tags(url: str, log: Log) -> dict[str, str]:
    """tag -> commit of every tag a remote advertises (`git ls-remote`, no objects fetched)."""
    _checked(url, [])
    try:
        out = runner.run(log, ["git", "ls-remote", "--tags", "--", url], capture=True, quiet=True,
                         env=SAFE_PROTOCOLS)
    except CommandError as exc:
        raise SourceError(f"could not list the tags of {url} (exit code {exc.returncode}); without network, "
                          "point --source / OLLAMA_SOURCE at a local mirror") from None
    tags: dict[str, str] = {}
    for line in out.stdout.decode().splitlines():
        sha, ref = line.split("\t", 1)
        name = ref.removeprefix("refs/tags/")
        if name.endswith("^{}"):
            tags[name[:-3]] = sha
        else:
            tags.setdefault(name, sha)
    return tags


def read_blob(gitdir: Path, commit: str, path: str, log: Log) -> bytes | None:
    """The bytes of `path` at `commit`, or None when the commit has no such file."""
    out = runner.run(log, ["git", "--git-dir", gitdir, "cat-file", "blob", f"{commit}:{path}"],
                     capture=True, quiet=True, check=False, env={"GIT_NO_LAZY_FETCH": "1"})
    return out.stdout if out.returncode == 0 else None


def has_path(gitdir: Path, commit: str, path: str, log: Log) -> bool:
    """Whether `path` (a file or folder) exists at `commit`; nothing is read or fetched."""
    out = runner.run(log, ["git", "--git-dir", gitdir, "ls-tree", "--name-only", commit, "--", path],
                     capture=True, quiet=True, check=False)
    return out.returncode == 0 and bool(out.stdout.strip())


def contains(gitdir: Path, ancestor: str, commit: str, log: Log) -> bool:
    """Whether `ancestor` (a commit id) is in the history of `commit`; False when it is unknown here."""
    if not re.fullmatch(r"[0-9a-f]{7,40}", ancestor):
        return False
    out = runner.run(log, ["git", "--git-dir", gitdir, "merge-base", "--is-ancestor", ancestor, commit],
                     capture=True, quiet=True, check=False, env={"GIT_NO_LAZY_FETCH": "1"})
    return out.returncode == 0


def commit_time(gitdir: Path, commit: str, log: Log) -> int:
    """The committer time of `commit` (seconds since the epoch): the default SOURCE_DATE_EPOCH."""
    out = runner.run(log, ["git", "--git-dir", gitdir, "show", "-s", "--format=%ct", commit],
                     capture=True, quiet=True)
    return int(out.stdout.decode().strip())
