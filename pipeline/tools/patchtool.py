"""Maintainer tooling for the patch series: check, apply, refresh, test.

* check:   for each patch x upstream ref: applies / conflicts (file, hunk) / already upstream /
           out of range, per the targets that carry the patch;
* apply:   a git work tree with one commit per patch, to edit with ordinary git;
* refresh: that work tree back into patches/ (commits matched to files by the identity trailer
           `apply` writes), headers kept, commit ids zeroed, unchanged files
           left byte-identical;
* test:    apply, then `go vet` and `go test` on the Go packages the patches touch, in the Go builder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from pipeline.config import series
from pipeline.config.settings import Settings
from pipeline.config.targets import Matrix, tag_version
from pipeline.errors import CommandError, ConfigError, PatchError, SourceError
from pipeline.infra import fsutil, git, owner, runner
from pipeline.infra.git import conflict_location
from pipeline.infra.log import Log
from pipeline.records import record
from pipeline.tools import gobox
from pipeline.upstream import llamacpp

# Fixed identity and dates keep the work tree's commits, and so the refreshed files, reproducible.
IDENTITY = {"GIT_AUTHOR_NAME": "ollama-pipeline", "GIT_AUTHOR_EMAIL": "maintainers@ollama-pipeline.invalid",
            "GIT_COMMITTER_NAME": "ollama-pipeline",
            "GIT_COMMITTER_EMAIL": "maintainers@ollama-pipeline.invalid",
            "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z"}
FORMAT_PATCH = ("format-patch", "--zero-commit", "--no-signature", "--full-index", "--no-stat", "-N",
                "--no-numbered")
STATE_FILE = "pipeline-series.json"
# The stable identity of a work-tree commit: `apply` writes this trailer into each patch's commit, and
# `refresh` maps commits back to files by it (never by subject), then leaves it out of the file. A
# reworded, edited or reordered commit keeps its file name and number.
TRAILER = "Pipeline-Patch"
_TRAILER_LINE = re.compile(rf"^{TRAILER}:[ \t]*(?P<name>\S*)[ \t]*$", re.MULTILINE)
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_DIFF_FILE = re.compile(r"^diff --git a/(\S+) b/(\S+)$", re.MULTILINE)


@record(positional=True)
class Verdict:
    patch: str
    ref: str
    # applies | conflicts | already upstream | out of range | not carried | blocked (it does not apply
    # where an earlier patch of the series already conflicts: a conflict of that one, not proven its own)
    verdict: str
    detail: str = ""
    targets: tuple[str, ...] = ()
    # With check(probe=True), for a patch out of range: what it would do on its own to the pristine tree
    # ("applies", "already upstream" or "conflicts (FILE, hunk at line N)").
    probe: str = ""


def repository(matrix: Matrix, settings: Settings, refs: Sequence[str], log: Log) -> Path:
    url = settings.source or next(iter(matrix.targets.values())).source.url
    gitdir = git.repository(url, list(refs), settings.places, log)
    for ref in refs:
        if not git.commit_of(gitdir, ref, log):
            raise SourceError(f"tag {ref} not found in {url}")
    return gitdir


def default_refs(matrix: Matrix) -> list[str]:
    return list(dict.fromkeys(t.source.tag for t in matrix.targets.values()))


def series_paths(patch_series: Sequence[series.Patch]) -> set[str]:
    """Every file the series' diffs read or write: all `git apply` needs of a tree."""
    paths: set[str] = set()
    for p in patch_series:
        for a, b in _DIFF_FILE.findall(p.path.read_text(errors="replace")):
            paths.update((a, b))
    return paths


def check(matrix: Matrix, settings: Settings, refs: Sequence[str], log: Log, *, probe: bool = False,
          gitdir: Path | None = None) -> list[Verdict]:
    """Every patch against every ref, applied per target in series order as a build would.

    Only the files the series touches are exported (all `git apply` reads). With `probe`, a patch out of
    range is also tried on its own against the pristine tree (Verdict.probe)."""
    patch_series = matrix.patches(settings.patches_dir)
    refs = list(refs) or default_refs(matrix)
    gitdir = gitdir or repository(matrix, settings, refs, log)
    paths = series_paths(patch_series)
    verdicts: list[Verdict] = []
    owner.claim(settings.places)  # its scratch folder lies in the cache
    with fsutil.scratch_dir(settings.places.scratch, "patches-check") as tmp:
        for ref in refs:
            version = tag_version(ref)
            pristine = Path(tmp) / ref / "upstream"
            commit = git.commit_of(gitdir, ref, log)
            git.export(gitdir, commit, pristine, log, paths=paths)
            # A version that fetches llama.cpp: the series' llama.cpp files come from the pinned source
            # (only when the series touches any, so checking needs no llama.cpp otherwise).
            tag = llamacpp.tag_in(gitdir, commit, log)
            if tag and any(p.startswith(f"{llamacpp.DIR}/") for p in paths):
                llamacpp.supply(pristine, tag, ref, matrix.llama_cpp, settings, log, paths=paths)
            per_patch: dict[str, dict[str, tuple[str, str]]] = {p.name: {} for p in patch_series}
            for target in matrix.targets:
                carried = series.for_target(patch_series, target, version)
                if not carried:
                    continue
                tree = Path(tmp) / ref / target
                shutil.copytree(pristine, tree, symlinks=True)
                blocker = ""
                for patch in carried:
                    found = _try(patch, tree, log)
                    if found[0] == "conflicts":
                        if blocker:
                            found = ("blocked", f"after {blocker}, which conflicts")
                        else:
                            blocker = patch.name
                    per_patch[patch.name][target] = found
            for patch in patch_series:
                verdict = _collapse(patch, ref, version, per_patch[patch.name])
                if verdict.verdict == "out of range" and _backport_in(patch, gitdir, commit, log):
                    verdict = dataclasses.replace(verdict, detail=f"{verdict.detail}; upstream has it: the "
                                                  "backported commit "
                                                  f"{patch.upstream_status.split()[1][:12]} is in {ref}")
                if probe and verdict.verdict == "out of range":
                    alone = _try(patch, pristine, log, dry=True)
                    probed = alone[0] + (f" ({alone[1]})" if alone[1] else "")
                    verdict = dataclasses.replace(verdict, probe=probed)
                verdicts.append(verdict)
            shutil.rmtree(Path(tmp) / ref)
    return verdicts


def _backport_in(patch: series.Patch, gitdir: Path, commit: str, log: Log) -> bool:
    """A Backport patch whose upstream commit is in the history of `commit`."""
    parts = patch.upstream_status.split()
    return parts[0] == "Backport" and len(parts) > 1 and git.contains(gitdir, parts[1].lower(), commit, log)


def _try(patch: series.Patch, tree: Path, log: Log, dry: bool = False) -> tuple[str, str]:
    env = {"GIT_CEILING_DIRECTORIES": str(tree.parent)}
    forward = runner.run(log, ["git", "apply", "--check", "-v", patch.path.resolve()], cwd=tree, env=env,
                         capture=True, quiet=True, check=False)
    if forward.returncode == 0:
        if dry:
            return "applies", ""
        runner.run(log, ["git", "apply", patch.path.resolve()], cwd=tree, env=env, quiet=True, capture=True)
        return "applies", ""
    reverse = runner.run(log, ["git", "apply", "--check", "--reverse", patch.path.resolve()], cwd=tree,
                         env=env, capture=True, quiet=True, check=False)
    if reverse.returncode == 0:
        return "already upstream", ""
    return "conflicts", conflict_location(forward.stderr.decode(errors="replace"))


def _collapse(patch: series.Patch, ref: str, version, by_target: dict[str, tuple[str, str]]) -> Verdict:
    if not patch.admits(version):
        return Verdict(patch.name, ref, "out of range", f"Applies-To {patch.applies_to}")
    if not by_target:
        return Verdict(patch.name, ref, "not carried", "no target carries it")
    order = ["applies", "already upstream", "blocked", "conflicts"]
    worst = max(by_target.values(), key=lambda v: order.index(v[0]))
    targets = tuple(t for t, v in by_target.items() if v == worst)
    return Verdict(patch.name, ref, worst[0], worst[1], targets)


def failed(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """Conflicts inside a patch's own range are errors; the rest is information."""
    return [v for v in verdicts if v.verdict == "conflicts"]


def table(verdicts: Sequence[Verdict]) -> str:
    refs = list(dict.fromkeys(v.ref for v in verdicts))
    names = list(dict.fromkeys(v.patch for v in verdicts))
    cell = {(v.patch, v.ref): v.verdict + (f" ({v.detail})" if v.verdict in ("conflicts", "blocked") else "")
            + (" (upstream has it)" if "upstream has it" in v.detail else "") for v in verdicts}
    rows = [("patch", *refs)] + [(n, *(cell[(n, r)] for r in refs)) for n in names]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def in_range(matrix: Matrix, settings: Settings, ref: str, targets: Sequence[str] = ()) -> list[series.Patch]:
    """The patches `apply` tries on `ref`, in order: in range of its version, carried by one of `targets`
    (default: any target)."""
    version = tag_version(ref)
    wanted = set(targets) or set(matrix.targets)
    return [p for p in matrix.patches(settings.patches_dir) if p.admits(version)
            and wanted & set(p.targets)]


def apply(matrix: Matrix, settings: Settings, ref: str, into: Path, log: Log,
          targets: Sequence[str] = ()) -> list[str]:
    """Export `ref` into a new git work tree and commit each patch in range on top (git am).

    The tree is made in a staging folder beside `into` that becomes `into` only when every patch is
    committed (or, at a conflict, with `git am` stopped there for the maintainer): a refusal, a full
    disk, Ctrl-C or kill -9 leave no half tree, and the next run removes what a killed one left. A
    second run on the work tree a finished one made for the same ref and patches does nothing."""
    chosen = in_range(matrix, settings, ref, targets)
    if into.exists() or into.is_symlink():
        if done := _made_by_apply(into, ref, chosen):
            log.line(f"{into}: already the work tree of {ref} with {', '.join(done) or 'no patch'}")
            return done
        if into.is_symlink() or not into.is_dir() or any(into.iterdir()):
            raise ConfigError(f"{into} exists and is not empty; pick a new folder for the work tree")
    gitdir = repository(matrix, settings, [ref], log)
    commit = git.commit_of(gitdir, ref, log)
    stopped: PatchError | None = None
    with fsutil.staging_dir(into) as work:
        try:
            applied = _apply_into(work, into, gitdir, commit, matrix, settings, ref, chosen, log)
        except PatchError as exc:
            stopped = exc  # the tree moves into place with `git am` stopped at the conflict
    if stopped is not None:
        raise stopped
    return applied


def _made_by_apply(into: Path, ref: str, chosen: Sequence[series.Patch]) -> list[str] | None:
    """The patches of the work tree a finished `apply` made at `into` for `ref`, when it would apply the
    same ones again (names and files unchanged since); else None."""
    try:
        state = json.loads((into / ".git" / STATE_FILE).read_text(encoding="utf-8"))
        names = [p["name"] for p in state["patches"]]
        if state["ref"] != ref or not isinstance(names, list):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    wanted = {p.name: p for p in chosen}
    if not set(names) <= set(wanted) or state.get("sha256") != {n: wanted[n].sha256 for n in names}:
        return None
    return names


def _apply_into(into: Path, final: Path, gitdir: Path, commit: str, matrix: Matrix, settings: Settings,
                ref: str, chosen: Sequence[series.Patch], log: Log) -> list[str]:
    """The work of `apply` in the staging folder `into`, which becomes `final`."""
    git.export(gitdir, commit, into, log)
    if tag := llamacpp.tag_in(gitdir, commit, log):
        llamacpp.supply(into, tag, ref, matrix.llama_cpp, settings, log)
    env = {**IDENTITY, "GIT_CEILING_DIRECTORIES": str(into.parent)}
    gitc = ["git", "-C", into, "-c", "core.autocrlf=false", "-c", "commit.gpgsign=false"]
    runner.run(log, [*gitc, "init", "--quiet", "--initial-branch=patched"], env=env)
    runner.run(log, [*gitc, "add", "--all", "--force"], env=env, quiet=True)
    runner.run(log, [*gitc, "commit", "--quiet", "--no-verify", "-m", f"upstream {ref} ({commit})"], env=env)
    base = runner.run(log, [*gitc, "rev-parse", "HEAD"], capture=True, quiet=True).stdout.decode().strip()
    applied = []
    for patch in chosen:
        upstream = runner.run(log, [*gitc, "apply", "--check", "--reverse", patch.path.resolve()], env=env,
                              capture=True, quiet=True, check=False)
        if upstream.returncode == 0:
            log.line(f"skipping {patch.name}: already upstream in {ref}")
            continue
        applied.append(patch)
        try:
            runner.run(log, [*gitc, "am", "--quiet", "--keep-cr", "--committer-date-is-author-date",
                             patch.path.resolve()], env=env)
        except CommandError:
            raise PatchError(f"patch {patch.name} does not apply to {ref}; run `patches check --ref {ref}` "
                             f"for the file and hunk (work tree left at {final}, `git am --abort` there)") \
                from None
        # What `commit --amend --trailer` does, by its parts: git before 2.32 (Debian 11's 2.30) lacks it.
        message = runner.run(log, [*gitc, "log", "-1", "--format=%B"], capture=True, quiet=True).stdout
        message = runner.run(log, [*gitc, "interpret-trailers", "--trailer", f"{TRAILER}: {patch.name}"],
                             stdin=message, capture=True, quiet=True).stdout
        runner.run(log, [*gitc, "commit", "--quiet", "--amend", "--no-verify", "--file", "-"], stdin=message,
                   env=env, quiet=True)
    # Refresh rewrites only these: patches skipped or out of range stay as they are.
    state = {"ref": ref, "base": base, "patches": [{"name": p.name, "subject": p.subject} for p in applied],
             "sha256": {p.name: p.sha256 for p in applied}}
    fsutil.write_text(into / ".git" / STATE_FILE, json.dumps(state, indent=2) + "\n")
    return [p.name for p in applied]


def _state(work: Path, patches_dir: Path) -> dict:
    """The work tree's record of `apply`, checked: a hand-edited or hostile one writes nothing."""
    state_path = work / ".git" / STATE_FILE
    if not state_path.is_file():
        raise ConfigError(f"{work} is not a work tree made by `patches apply` (no .git/{STATE_FILE})")
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        base, recorded = state["base"], [p["name"] for p in state["patches"]]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise ConfigError(f"{state_path}: damaged; make the work tree again with `patches apply`") from None
    if not isinstance(base, str) or not _HEX40.match(base):
        raise ConfigError(f"{state_path}: base {base!r} is not a commit id; make the work tree again")
    for name in recorded:
        if not isinstance(name, str) or not series.NAME.match(name):
            raise ConfigError(f"{state_path}: {name!r} is not a patch name of {patches_dir}; make the work "
                              "tree again with `patches apply`")
    return {"base": base, "names": recorded}


def _split_message(text: str) -> tuple[str, str]:
    """(mail header and message, the rest from the diffstat's `---` or the first diff on)."""
    ends = [i for i in (text.find("\n---\n"), text.find("\ndiff --git ")) if i >= 0]
    cut = min(ends) if ends else len(text)
    return text[:cut], text[cut:]


def identity(text: str) -> str | None:
    """The patch file name a work-tree commit carries in its trailer (None for a new commit)."""
    head = _split_message(text)[0]
    found = _TRAILER_LINE.findall(head)
    return found[-1] if found else None


def without_trailer(data: bytes) -> bytes:
    """The format-patch text less the identity trailer, as the file had it before `apply`."""
    text = data.decode("utf-8", "surrogateescape")
    head, rest = _split_message(text)
    if not _TRAILER_LINE.search(head):
        return data
    kept = "\n".join(line for line in head.split("\n") if not _TRAILER_LINE.match(line))
    # format-patch puts one blank line between the message and the first diff (none before `---`).
    head = kept.rstrip("\n") + ("\n" if rest.startswith("\ndiff") else "")
    return (head + rest).encode("utf-8", "surrogateescape")


def _slug(format_patch_name: str) -> str:
    slug = re.sub(r"[^a-z0-9.-]+", "-", format_patch_name[5:].removesuffix(".patch").lower()).strip("-.")
    return f"{slug[:52].strip('-.') or 'patch'}.patch"


def refresh(matrix: Matrix, settings: Settings, work: Path, log: Log) -> dict[str, list[str]]:
    """Write the work tree's commits back into patches/; files whose bytes do not change are untouched.

    Commits are matched to files by the identity trailer `apply` wrote, so rewording, editing or
    reordering a commit keeps its file; a commit without one (new) gets the next free number. Only
    files of patches/ named like patches are written or removed."""
    state = _state(work, settings.patches_dir)
    existing = {p.name for p in series.load(settings.patches_dir)}
    used_numbers = {int(name[:4]) for name in existing | set(state["names"])}
    changes: dict[str, list[str]] = {"unchanged": [], "updated": [], "added": [], "removed": []}
    owner.claim(settings.places)
    with fsutil.scratch_dir(settings.places.scratch, "patches-refresh") as tmp:
        runner.run(log, ["git", "-C", work.resolve(), *FORMAT_PATCH, "-o", tmp, f"{state['base']}..HEAD",
                         "--"],
                   capture=True, quiet=True)
        produced = sorted(Path(tmp).glob("*.patch"))
        kept: set[str] = set()
        new_files: dict[str, bytes] = {}
        for path in produced:
            raw = path.read_bytes()
            name = identity(raw.decode("utf-8", "replace"))
            if name is not None and (not series.NAME.match(name) or name not in state["names"]):
                raise ConfigError(f"{path.name[5:]}: its {TRAILER} trailer names {name!r}, which this work "
                                  "tree did not apply; remove the trailer line from the commit message")
            if name is None or name in kept:
                number = max(used_numbers | {0}) + 1
                if number > 9999:
                    raise ConfigError(f"{settings.patches_dir}: no free patch number left")
                used_numbers.add(number)
                name = f"{number:04d}-{_slug(path.name)}"
            kept.add(name)
            new_files[name] = without_trailer(raw)
        # Validate before writing anything: a refresh that would break the series writes nothing.
        for name, data in new_files.items():
            probe = Path(tmp) / "probe" / name
            probe.parent.mkdir(exist_ok=True)
            probe.write_bytes(data)
            series.parse(probe, matrix.targets, matrix.groups)
        for name, data in new_files.items():
            dest = settings.patches_dir / name
            if dest.exists() and dest.read_bytes() == data:
                changes["unchanged"].append(name)
                continue
            changes["added" if not dest.exists() else "updated"].append(name)
            with fsutil.atomic_file(dest) as f:
                f.write(data)
        for name in state["names"]:
            if name not in kept:
                (settings.patches_dir / name).unlink(missing_ok=True)
                changes["removed"].append(name)
    return changes


def touched_go_packages(patches: Sequence[series.Patch]) -> list[str]:
    dirs = set()
    for p in patches:
        for _a, b in _DIFF_FILE.findall(p.path.read_text(errors="replace")):
            if b.endswith(".go"):
                dirs.add("./" + (os.path.dirname(b) or "."))
    return sorted(dirs)


def test(matrix: Matrix, settings: Settings, ref: str, log: Log, go_target: str = "cpu") -> list[str]:
    """Apply the series for `ref`, then go vet and go test the touched packages in the Go builder."""
    owner.claim(settings.places)
    with fsutil.scratch_dir(settings.places.scratch, "patches-test") as tmp:
        work = Path(tmp) / "tree"
        applied = apply(matrix, settings, ref, work, log)
        patch_series = [p for p in matrix.patches(settings.patches_dir) if p.name in applied]
        packages = touched_go_packages(patch_series)
        if not packages:
            log.line("no patch in range touches Go code; nothing to test")
            return []
        with gobox.go_container(matrix, settings, log, work, go_target, ref=ref) as box:
            box.exec(["go", "vet", *packages])
            box.exec(["go", "test", "-count=1", *packages])
        return packages
