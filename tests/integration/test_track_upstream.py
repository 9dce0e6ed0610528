"""Upstream tier: `track` over the real Ollama history (OLLAMA_SOURCE), every verdict and layout held
against what git itself says of each tag."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from packaging.version import Version

from pipeline.config import series, targets
from pipeline.config.settings import Settings
from pipeline.config.targets import tag_version
from pipeline.infra.log import Log
from pipeline.tools import track

from .conftest import PROJECT

pytestmark = [
    pytest.mark.upstream,
    pytest.mark.skipif(not os.environ.get("OLLAMA_SOURCE"),
                       reason="OLLAMA_SOURCE is unset: point it at a clone or mirror of Ollama to track "
                              "the real upstream tags"),
]


def git(gitdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "--git-dir", str(gitdir), *args], capture_output=True, check=check)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    settings = Settings.from_env(targets_file=PROJECT / "targets.toml", dist=tmp_path_factory.mktemp("dist"))
    matrix = targets.load(settings.targets_file)
    with Log("track", settings.dist / "track.log", console=open(os.devnull, "w")) as log:
        rep = track.report(matrix, settings, log)
    gitdir = Path(git(Path(settings.source), "rev-parse", "--absolute-git-dir").stdout.decode().strip()) \
        if (Path(settings.source) / ".git").exists() else Path(settings.source)
    return rep, gitdir, settings


def test_every_release_tag_from_v0_12_5_to_the_newest_is_listed_in_order(report):
    rep, gitdir, _ = report
    tags = git(gitdir, "tag", "--list", "v*").stdout.decode().split()
    expected = []
    for tag in tags:
        try:
            v = Version(tag[1:])
        except ValueError:
            continue
        if v >= Version("0.12.5") and not (v.is_prerelease or v.is_devrelease or v.is_postrelease or v.local):
            expected.append((v, tag))
    listed = [r["tag"] for r in rep["tags"]]
    assert listed == [t for _, t in sorted(expected)]
    assert listed[0] == "v0.12.5" and len(listed) >= 91


def test_layouts_are_what_each_tree_holds(report):
    rep, gitdir, _ = report
    for row in rep["tags"]:
        has_version_file = git(gitdir, "cat-file", "-e", f"{row['commit']}:LLAMA_CPP_VERSION",
                               check=False).returncode == 0
        assert row["layout"] == ("fetched" if has_version_file else "in-tree"), row["tag"]
        if has_version_file:
            shown = git(gitdir, "show", f"{row['commit']}:LLAMA_CPP_VERSION")
            assert row["llama_cpp"] == shown.stdout.decode().strip()
    rows = {r["tag"]: r for r in rep["tags"]}
    assert rows["v0.24.0"]["layout"] == "in-tree" and rows["v0.30.0"]["layout"] == "fetched"
    assert rows["v0.30.0"]["llama_cpp"] == "b9452"


def test_verdicts_match_git_apply_on_each_tags_tree(report):
    """Each patch in range for a target, applied in series order with plain `git apply` to an export of
    the tag: the report's "applies" / "conflicts" must be what git says, at every tag."""
    rep, gitdir, settings = report
    matrix = targets.load(settings.targets_file)
    patch_series = matrix.patches(settings.patches_dir)
    checked = 0
    for row in rep["tags"]:
        in_range = [p for p in patch_series if p.admits(tag_version(row["tag"]))]
        for patch in patch_series:
            verdict = row["patches"][patch.name]["verdict"]
            if patch not in in_range:
                assert verdict == "out of range", (row["tag"], patch.name, verdict)
        for target in matrix.targets:
            carried = series.for_target(patch_series, target, tag_version(row["tag"]))
            if not carried:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                _write_files(gitdir, row["commit"], carried, Path(tmp))
                for patch in carried:
                    ok = subprocess.run(["git", "apply", "--check", str(patch.path)], cwd=tmp,
                                        capture_output=True).returncode == 0
                    verdict = row["patches"][patch.name]["verdict"]
                    if ok:
                        subprocess.run(["git", "apply", str(patch.path)], cwd=tmp, capture_output=True,
                                       check=True)
                        assert verdict in ("applies", "already upstream"), (row["tag"], patch.name, verdict)
                    else:
                        assert verdict != "applies", (row["tag"], patch.name, verdict)
                    checked += 1
    assert checked >= 20  # v0.12.5 (0001-0005), v0.12.7-v0.12.10 (0006/0007), v0.24-v0.29 (0008/0009) ...
    rows = {r["tag"]: r for r in rep["tags"]}
    assert {n: p["verdict"] for n, p in rows["v0.24.0"]["patches"].items()
            if p["verdict"]
            != "out of range"} == {"0008-cmake-build-gfx906-and-gfx1103-v0.24.patch": "applies",
                                                   "0009-cuda-build-kepler-sm37-v0.24.patch": "applies"}
    assert all(p["verdict"] == "out of range" for p in rows["v0.30.0"]["patches"].values())
    gtt = rows["v0.14.0"]["patches"]["0005-discover-count-gtt-memory-of-amd-igpus.patch"]
    assert "upstream has it" in gtt["detail"]


def _write_files(gitdir: Path, commit: str, patches, root: Path) -> None:
    """The files the patches name, as the commit has them (a mirror may be a partial clone, so not
    `git archive` of the whole tree)."""
    for patch in patches:
        for line in patch.path.read_text().splitlines():
            if line.startswith("diff --git a/"):
                path = line.split(" b/", 1)[0].removeprefix("diff --git a/")
                blob = git(gitdir, "cat-file", "blob", f"{commit}:{path}", check=False)
                if blob.returncode == 0:
                    (root / path).parent.mkdir(parents=True, exist_ok=True)
                    (root / path).write_bytes(blob.stdout)
