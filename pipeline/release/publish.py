"""Publish dist/release/ as the GitHub release of a tag, so that any step may fail and a re-run finishes.

    python -m pipeline publish TAG [FOLDER]        (nox -s publish -- TAG; FOLDER: dist/release)

1. draft    the release of TAG, as a draft: created when there is none, reused (title and notes
            refreshed) when an earlier attempt made it. A release already published is left alone when
            it holds exactly the folder's files, and refused otherwise. The title names the upstream
            Ollama versions of the folder's manifests ("v1.4.0: Ollama 0.12.5, 0.24.0"); a pre-release
            tag (v1.4.0-rc.1, names.is_prerelease) is drafted and published as a pre-release.
2. upload   every file of the folder with `gh release upload --clobber`, which replaces an asset of
            the same name; assets of an earlier attempt that the folder no longer has are deleted.
3. check    the draft's assets are exactly the folder's files, by name and size, each fully uploaded.
4. publish  `gh release edit --draft=false`; then the release is read back.

Nothing is published until every asset is in place, and a failure leaves a draft, which only
maintainers see. Every gh call goes through the command runner; tag and file names are passed after
`--`, never where gh could read them as options. Only regular files of the folder itself are
published: a symbolic link (which could point anywhere) is refused before gh is called. A gh call that
does not answer within its time (--gh-timeout, more for an upload by its size) is ended and tried
again, up to three times, each said in one line; on SIGTERM or Ctrl-C the running gh is ended too.
gh finds the repository from GH_REPO (the release workflow sets it) or the checkout's remote, and
authenticates with GH_TOKEN.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import names
from pipeline.errors import CommandError, PublishError
from pipeline.infra import runner
from pipeline.infra.log import Log
from pipeline.records import record
from pipeline.release import assemble

NOTES = "RELEASE_NOTES.md"
FIELDS = "tagName,isDraft,isPrerelease,assets,url"
# How long one gh call may take before it is ended and tried again, how often, and the slowest upload
# rate allowed on top for an asset (bytes per second).
TIMEOUT = 300.0
TRIES = 3
UPLOAD_RATE = 1 << 20


@record(positional=True)
class Remote:
    """A release as gh reports it."""

    tag: str
    draft: bool
    assets: dict[str, dict[str, Any]]  # name -> {"size": ..., "state": ...}
    url: str = ""
    prerelease: bool = False


class GitHub:
    """The gh commands publishing needs; `gh` is the executable (a fake one in the tests)."""

    def __init__(self, log: Log, gh: str = "gh", env: dict[str, str] | None = None, *,
                 timeout: float = TIMEOUT, tries: int = TRIES):
        self.log = log
        self.gh = gh
        self.env = env
        self.timeout = timeout
        self.tries = tries

    def _run(self, *args: str, capture: bool = False, check: bool = True, extra: float = 0.0,
             done: Callable[[], bool] | None = None):
        """One gh call; ended and tried again when it hangs. `done` says, before another try, whether
        the call that hung did its work after all (a create that is not safe to repeat)."""
        limit = self.timeout + extra
        what = f"gh {' '.join(args[:2])}"
        for attempt in range(1, self.tries + 1):
            try:
                return runner.run(self.log, [self.gh, *args], capture=capture, check=check, env=self.env,
                                  timeout=limit)
            except CommandError as exc:
                if exc.timeout is None:  # a failed gh call is a failed publish step: re-run to continue
                    raise PublishError(f"{exc}; re-run to continue where it stopped") from None
                if attempt == self.tries:
                    raise PublishError(f"{what} did not answer within {limit:.0f}s, {self.tries} times in a "
                                       "row; check the network and GitHub's status, then re-run to continue "
                                       "where it stopped") from None
                self.log.line(f"{what} did not answer within {limit:.0f}s (try {attempt} of {self.tries}): "
                              "ended it, trying again")
                if done is not None and done():
                    return None
        return None

    def view(self, tag: str) -> Remote | None:
        proc = self._run("release", "view", "--json", FIELDS, "--", tag, capture=True, check=False)
        if proc.returncode != 0:
            if b"release not found" in proc.stderr.lower():
                return None
            raise PublishError(f"`gh release view {tag}` failed (exit {proc.returncode}): "
                               f"{proc.stderr.decode(errors='replace').strip()}")
        try:
            data = json.loads(proc.stdout)
            assets = {a["name"]: {"size": int(a["size"]), "state": a.get("state", "uploaded")}
                      for a in data.get("assets") or []}
            return Remote(tag=data["tagName"], draft=bool(data["isDraft"]), assets=assets,
                          url=data.get("url", ""), prerelease=bool(data.get("isPrerelease", False)))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PublishError(f"`gh release view {tag}` printed what is not a release ({exc})") from None

    def create_draft(self, tag: str, notes: Path, title: str, prerelease: bool) -> None:
        self._run("release", "create", "--draft", "--verify-tag", "--title", title,
                  f"--prerelease={str(prerelease).lower()}", "--notes-file", str(notes), "--", tag,
                  done=lambda: self.view(tag) is not None)

    def edit_draft(self, tag: str, notes: Path, title: str, prerelease: bool) -> None:
        self._run("release", "edit", "--verify-tag", "--title", title,
                  f"--prerelease={str(prerelease).lower()}", "--notes-file", str(notes), "--", tag)

    def upload(self, tag: str, path: Path) -> None:
        self._run("release", "upload", "--clobber", "--", tag, str(path),
                  extra=path.stat().st_size / UPLOAD_RATE)

    def delete_asset(self, tag: str, name: str) -> None:
        self._run("release", "delete-asset", "--yes", "--", tag, name,
                  done=lambda: name not in getattr(self.view(tag), "assets", {}))

    def publish(self, tag: str) -> None:
        self._run("release", "edit", "--draft=false", "--", tag)


def local_assets(folder: Path) -> dict[str, Path]:
    """The folder's files to publish: its regular files, none through a symbolic link."""
    if not folder.is_dir():
        raise PublishError(f"{folder} is not a folder; assemble the release first: nox -s release")
    links = sorted(p.name for p in folder.iterdir() if p.is_symlink())
    if links:
        raise PublishError(f"{folder / links[0]} is a symbolic link: publish uploads only files inside "
                           f"{folder}; assemble the release again (nox -s release) instead of linking files")
    files = {p.name: p for p in sorted(folder.iterdir()) if p.is_file()}
    if NOTES not in files:
        raise PublishError(f"{folder} has no {NOTES}; assemble the release first: nox -s release")
    return files


def differences(remote: Remote, files: dict[str, Path]) -> list[str]:
    """What keeps the release from being exactly the folder: missing, extra, short or half-uploaded."""
    problems = []
    for name, path in files.items():
        asset = remote.assets.get(name)
        size = path.stat().st_size
        if asset is None:
            problems.append(f"{name}: missing")
        elif asset["size"] != size:
            problems.append(f"{name}: {asset['size']} bytes on GitHub, {size} here")
        elif asset["state"] != "uploaded":
            problems.append(f"{name}: upload not complete (state {asset['state']})")
    problems += [f"{name}: not in {next(iter(files.values())).parent}" for name in remote.assets
                 if name not in files]
    return problems


def publish(tag: str, folder: Path, github: GitHub, *, draft_only: bool = False) -> Remote:
    """Make the release of `tag` exactly `folder` and publish it; safe to run again after any failure."""
    log = github.log
    files = local_assets(folder)
    notes = files[NOTES]
    title = assemble.title(tag, assemble.folder_manifests(folder))
    prerelease = names.is_prerelease(tag)
    log.line(f"release {title!r}" + (" as a pre-release (the tag names one)" if prerelease else ""))

    with log.stage("draft") as stage:
        remote = github.view(tag)
        if remote is not None and not remote.draft:
            problems = differences(remote, files)
            if problems:
                raise PublishError(f"release {tag} is already published and differs from {folder}: "
                                   + "; ".join(problems) + ". A published release is not changed "
                                   "here: delete it or make it a draft first (gh release edit "
                                   f"{tag} --draft=true)")
            stage.cached(f"release {tag} is published with these {len(files)} assets")
            log.line(f"nothing to do: {remote.url or tag}")
            return remote
        if remote is None:
            github.create_draft(tag, notes, title, prerelease)
        else:
            stage.cached(f"draft of {tag} from an earlier attempt, {len(remote.assets)} asset(s)")
            github.edit_draft(tag, notes, title, prerelease)
            for name in sorted(set(remote.assets) - set(files)):
                log.line(f"{name}: left by an earlier attempt, not in {folder}; deleting it")
                github.delete_asset(tag, name)

    with log.stage("upload"):
        for i, path in enumerate(files.values(), 1):
            log.line(f"[{i}/{len(files)}] {path.name} ({path.stat().st_size} bytes)")
            github.upload(tag, path)

    with log.stage("check"):
        remote = github.view(tag)
        if remote is None:
            raise PublishError(f"the draft of {tag} disappeared while its assets were uploaded")
        if problems := differences(remote, files):
            raise PublishError(f"the draft of {tag} does not hold {folder} after the upload: "
                               + "; ".join(problems) + "; run again to upload again")
        log.line(f"{len(files)} asset(s) on the draft, every size as here")

    if draft_only:
        log.line(f"--draft-only: {tag} stays a draft")
        return remote

    with log.stage("publish"):
        github.publish(tag)
        remote = github.view(tag)
        if remote is None or remote.draft:
            raise PublishError(f"release {tag} is still a draft after `gh release edit --draft=false`")
        if remote.prerelease != prerelease:
            was, tag_says = ("as", "does not name") if remote.prerelease else ("not as", "names")
            raise PublishError(f"release {tag} was published {was} a pre-release, though its tag {tag_says} "
                               f"one; fix it with: gh release edit {tag} "
                               f"--prerelease={str(prerelease).lower()}")
        log.line(f"published{' as a pre-release' if prerelease else ''}: {remote.url or tag}")
    return remote
