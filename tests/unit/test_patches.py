"""patches.py: patches made with real `git diff`, applied to plain exported trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import series
from pipeline.config.series import Patch
from pipeline.errors import PatchError
from pipeline.infra import git as gitops

from .conftest import git, make_repo, patch_text

ORIGINAL = {
    "llm/memory.go": "".join(f"line {i}\n" for i in range(1, 31)),
    "README.md": "# upstream\n",
}


def make_patch(tmp_path: Path, name: str, base: dict[str, str], change: dict[str, str]) -> Patch:
    """A patch taking `base` to `base` updated with `change`, written by `git diff`."""
    work = tmp_path / f"patch-work-{name}"
    make_repo(work, base)
    for rel, text in change.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    git(work, "add", "-A")
    diff = git(work, "diff", "--cached", "--no-color") + "\n"
    path = tmp_path / "patches" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(patch_text(name, diff))
    return series.parse(path)


def export_tree(tmp_path: Path, files: dict[str, str], name: str = "tree") -> Path:
    """A plain folder like source.export makes: no .git."""
    tree = tmp_path / name
    for rel, text in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    return tree


def snapshot(tree: Path) -> dict[str, bytes]:
    return {p.relative_to(tree).as_posix(): p.read_bytes() for p in sorted(tree.rglob("*")) if p.is_file()}


def edit_line(text: str, n: int, new: str) -> str:
    lines = text.splitlines(keepends=True)
    lines[n - 1] = new
    return "".join(lines)


def test_good_patch_applies(tmp_path, log):
    patched = edit_line(ORIGINAL["llm/memory.go"], 10, "line 10 patched\n")
    patch = make_patch(tmp_path, "0001-memory.patch", ORIGINAL,
                       {"llm/memory.go": patched, "llm/new.go": "package llm\n"})
    tree = export_tree(tmp_path, ORIGINAL)
    [gitops.apply(x, tree, log) for x in [patch]]
    assert (tree / "llm" / "memory.go").read_text() == patched
    assert (tree / "llm" / "new.go").read_text() == "package llm\n"
    assert f"applied 0001-memory.patch ({patch.sha256[:12]})" in log.path.read_text()


def test_conflicting_patch_names_patch_file_and_hunk_and_changes_nothing(tmp_path, log):
    memory = ORIGINAL["llm/memory.go"]
    # Two hunks: the first would apply, the second meets a line upstream changed.
    wanted = edit_line(edit_line(memory, 3, "line 3 patched\n"), 25, "line 25 patched\n")
    patch = make_patch(tmp_path, "0002-two-hunks.patch", ORIGINAL,
                       {"llm/memory.go": wanted, "README.md": "# patched\n"})
    tree = export_tree(tmp_path, {**ORIGINAL, "llm/memory.go": edit_line(memory, 25, "line 25 upstream\n")})
    before = snapshot(tree)
    with pytest.raises(PatchError) as info:
        gitops.apply(patch, tree, log, ref="v0.12.5")
    msg = str(info.value)
    assert "patch 0002-two-hunks.patch does not apply to v0.12.5" in msg
    assert "llm/memory.go, hunk at line 22" in msg
    assert "Nothing was changed" in msg
    assert info.value.exit_code == 4
    assert snapshot(tree) == before


def test_patch_for_a_missing_file_names_the_file(tmp_path, log):
    patch = make_patch(tmp_path, "0001-memory.patch", ORIGINAL,
                       {"llm/memory.go": edit_line(ORIGINAL["llm/memory.go"], 1, "first\n")})
    tree = export_tree(tmp_path, {"README.md": ORIGINAL["README.md"]})
    with pytest.raises(PatchError, match=r"0001-memory.patch does not apply: llm/memory.go \(No such file"):
        gitops.apply(patch, tree, log)


def test_series_applies_in_order(tmp_path, log):
    first_state = {**ORIGINAL, "llm/memory.go": edit_line(ORIGINAL["llm/memory.go"], 5, "line 5 by 0001\n")}
    second_state = {**first_state,
                    "llm/memory.go": edit_line(first_state["llm/memory.go"], 5, "line 5 by 0002\n")}
    p1 = make_patch(tmp_path, "0001-first.patch", ORIGINAL, first_state)
    p2 = make_patch(tmp_path, "0002-second.patch", first_state, second_state)

    tree = export_tree(tmp_path, ORIGINAL)
    [gitops.apply(x, tree, log) for x in [p1, p2]]
    assert snapshot(tree) == {k: v.encode() for k, v in second_state.items()}

    # The second patch depends on the first: alone, or before it, it does not apply.
    alone = export_tree(tmp_path, ORIGINAL, "alone")
    with pytest.raises(PatchError, match=r"0002-second.patch does not apply"):
        [gitops.apply(x, alone, log) for x in [p2, p1]]
    assert snapshot(alone) == {k: v.encode() for k, v in ORIGINAL.items()}


def test_tree_inside_another_repository_is_patched_relative_to_itself(tmp_path, log):
    patched = edit_line(ORIGINAL["llm/memory.go"], 7, "line 7 patched\n")
    patch = make_patch(tmp_path, "0001-memory.patch", ORIGINAL, {"llm/memory.go": patched})
    outer = make_repo(tmp_path / "outer", {"unrelated.txt": "x\n"})
    tree = export_tree(outer / "cache", ORIGINAL)
    [gitops.apply(x, tree, log) for x in [patch]]
    assert (tree / "llm" / "memory.go").read_text() == patched
    assert not (outer / "llm").exists()
