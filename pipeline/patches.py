"""Apply a target's patch series to an exported tree: in order, exactly (no fuzz), all or nothing.

The tree is a private copy that only becomes the build's tree once every patch applied, so a failure
never leaves a half-patched tree behind.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from . import runner
from .errors import CommandError, PatchError
from .log import Log
from .series import Patch

_FAILED_AT = re.compile(r"patch failed: (?P<file>.+):(?P<line>\d+)")
_NOT_APPLY = re.compile(r"error: (?P<file>.+): (?P<why>patch does not apply|does not exist in index|"
                        r"No such file or directory|already exists in working directory)")


def apply_series(series: Sequence[Patch], tree: Path, log: Log, *, ref: str = "") -> None:
    for patch in series:
        apply_one(patch, tree, log, ref=ref)


def apply_one(patch: Patch, tree: Path, log: Log, *, ref: str = "") -> None:
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
