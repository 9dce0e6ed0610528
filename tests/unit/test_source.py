"""pipeline.infra.git (mirror, tag verification, export) against real git repositories made in tmp_path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pipeline.config.places import Places
from pipeline.errors import SourceError
from pipeline.infra import git as source_git

from .conftest import commit_files, git, make_repo

FILES = {"go.mod": "module example.invalid/ollama\n", "main.go": "package main\n",
         "llama/ggml.c": "int ggml(void) { return 0; }\n", "docs/README.md": "# docs\n"}


@pytest.fixture
def upstream(tmp_path) -> tuple[Path, str]:
    """A repository with a v1.0.0 tag on its first commit, one untracked and one ignored file."""
    repo = make_repo(tmp_path / "upstream", {**FILES, ".gitignore": "*.o\n"})
    git(repo, "tag", "-a", "v1.0.0", "-m", "release")
    (repo / "untracked.txt").write_text("not in the commit\n")
    (repo / "build.o").write_text("ignored\n")
    return repo, git(repo, "rev-parse", "HEAD")


def resolve(url: str, tag: str, commit: str, cache: Path, log) -> Path:
    """What the source stage does: the git directory holding `tag`, verified to point at `commit`."""
    gitdir = source_git.repository(url, [tag], Places(dist=cache.parent / "dist", cache=cache), log)
    source_git.verify_tag(gitdir, tag, commit, url, log)
    return gitdir


def tree_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_local_repository_is_read_in_place_and_tag_verified(upstream, tmp_path, log):
    repo, commit = upstream
    gitdir = resolve(str(repo), "v1.0.0", commit, tmp_path / "cache", log)
    assert gitdir == repo / ".git"
    assert not (tmp_path / "cache").exists()
    assert f"tag v1.0.0 -> {commit} (verified)" in log.path.read_text()


def test_pinned_commit_may_be_upper_case(upstream, tmp_path, log):
    repo, commit = upstream
    assert resolve(str(repo), "v1.0.0", commit.upper(), tmp_path / "cache", log) == repo / ".git"


def test_moved_tag_is_refused_naming_both_commits(upstream, tmp_path, log):
    repo, pinned = upstream
    moved_to = commit_files(repo, {"main.go": "package main // changed\n"}, "second")
    git(repo, "tag", "-f", "-a", "v1.0.0", "-m", "re-pointed")
    with pytest.raises(SourceError) as info:
        resolve(str(repo), "v1.0.0", pinned, tmp_path / "cache", log)
    msg = str(info.value)
    assert pinned in msg and moved_to in msg
    assert "moved" in msg
    assert info.value.exit_code == 3


def test_missing_tag_is_refused(upstream, tmp_path, log):
    repo, commit = upstream
    with pytest.raises(SourceError, match=r"tag v9.9.9 not found in"):
        resolve(str(repo), "v9.9.9", commit, tmp_path / "cache", log)


def test_branch_of_the_same_name_is_not_taken_for_the_tag(upstream, tmp_path, log):
    repo, commit = upstream
    git(repo, "branch", "v2.0.0")
    with pytest.raises(SourceError, match=r"tag v2.0.0 not found"):
        resolve(str(repo), "v2.0.0", commit, tmp_path / "cache", log)


def test_folder_that_is_not_a_repository_is_refused(tmp_path, log):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(SourceError, match="is not a git repository"):
        resolve(str(plain), "v1.0.0", "0" * 40, tmp_path / "cache", log)


def test_file_url_is_fetched_into_the_cache(upstream, tmp_path, log):
    repo, commit = upstream
    url = repo.as_uri()
    assert url.startswith("file://")
    assert source_git.is_local(url) is False
    assert source_git.is_local(str(repo)) is True
    gitdir = resolve(url, "v1.0.0", commit, tmp_path / "cache", log)
    assert gitdir.is_relative_to(tmp_path / "cache" / "git")
    assert git(tmp_path, "--git-dir", str(gitdir), "rev-parse", "v1.0.0^{commit}") == commit
    # A second resolve reuses the cache folder.
    assert resolve(url, "v1.0.0", commit, tmp_path / "cache", log) == gitdir


def test_unreachable_url_is_a_source_error(tmp_path, log):
    url = (tmp_path / "gone").as_uri()
    with pytest.raises(SourceError, match=f"could not fetch tag v1.0.0 from {url}"):
        resolve(url, "v1.0.0", "0" * 40, tmp_path / "cache", log)


def test_export_writes_exactly_the_tracked_files_of_the_commit(upstream, tmp_path, log):
    repo, commit = upstream
    commit_files(repo, {"later.txt": "after the tag\n"}, "after")
    dest = tmp_path / "tree"
    assert source_git.export(repo / ".git", commit, dest, log) == []
    assert tree_files(dest) == {*FILES, ".gitignore"}
    assert (dest / "llama" / "ggml.c").read_text() == FILES["llama/ggml.c"]
    assert not (tmp_path / "tree.tar").exists()


def test_export_from_a_fetched_cache(upstream, tmp_path, log):
    repo, commit = upstream
    gitdir = resolve(repo.as_uri(), "v1.0.0", commit, tmp_path / "cache", log)
    source_git.export(gitdir, commit, tmp_path / "tree", log)
    assert tree_files(tmp_path / "tree") == {*FILES, ".gitignore"}


def make_partial_clone(tmp_path: Path) -> tuple[Path, Path, str]:
    origin = make_repo(tmp_path / "origin", {**FILES, "models/big.bin": os.urandom(8192)})
    git(origin, "tag", "v1.0.0")
    git(origin, "config", "uploadpack.allowFilter", "true")
    clone = tmp_path / "partial.git"
    git(tmp_path, "clone", "-q", "--bare", "--filter=blob:limit=1k", "--no-local", origin.as_uri(),
        str(clone))
    return origin, clone, git(origin, "rev-parse", "HEAD")


def test_partial_clone_verifies_its_tag(tmp_path, log):
    _origin, clone, commit = make_partial_clone(tmp_path)
    assert resolve(str(clone), "v1.0.0", commit, tmp_path / "cache", log) == clone


def test_export_of_an_offline_partial_clone_leaves_absent_blobs_out(tmp_path, log):
    origin, clone, commit = make_partial_clone(tmp_path)
    shutil.rmtree(origin)  # no network: the promisor remote cannot be reached
    dest = tmp_path / "tree"
    assert source_git.export(clone, commit, dest, log) == ["models/big.bin"]
    assert tree_files(dest) == set(FILES)
    assert "models/big.bin is absent from the partial clone" in log.path.read_text()


def test_full_repository_with_a_lost_object_is_corrupt(tmp_path, log):
    repo = make_repo(tmp_path / "loose", FILES)
    commit = git(repo, "rev-parse", "HEAD")
    blob = git(repo, "rev-parse", "HEAD:llama/ggml.c")
    obj = repo / ".git" / "objects" / blob[:2] / blob[2:]
    assert obj.is_file(), "test setup: expected a loose object"
    obj.unlink()
    with pytest.raises(SourceError) as info:
        source_git.export(repo / ".git", commit, tmp_path / "tree", log)
    assert "corrupt" in str(info.value)
    assert "llama/ggml.c" in str(info.value)
