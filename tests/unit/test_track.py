"""The tracking report on a generated upstream: tags from a version on, verdicts as git gives them,
layouts read from the tree, markdown and JSON. Real git; no Docker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.config import targets
from pipeline.config.settings import Settings
from pipeline.tools import patchtool, track

from .conftest import PROJECT, git, retagged
from .test_patchtool import HEADER, commit

CMAKE = "cmake_minimum_required(VERSION 3.21)\n" + "".join(f"# line {i}\n" for i in range(1, 21))


def presets(*names: str, rocm_targets: str = "gfx1100") -> str:
    return json.dumps({"version": 3, "configurePresets": [
        {"name": n, "cacheVariables": {"AMDGPU_TARGETS": rocm_targets} if n.startswith("ROCm") else {}}
        for n in names]}, indent=2) + "\n"


@pytest.fixture
def upstream(tmp_path) -> Path:
    """v1.0.0 (ggml in tree, Go 1.24), v1.1.0-rc0 and v1.1.0 (Vulkan, CMake edited where patch 0001
    looks, llm/memory.go gone), v2.0.0 (llama.cpp fetched, Go 1.26) and tags that are not versions."""
    repo = tmp_path / "upstream"
    repo.mkdir()
    git(repo, "init", "--quiet", "--initial-branch=main")
    (repo / "ml/backend/ggml/ggml/src").mkdir(parents=True)
    (repo / "llm").mkdir()
    base = {"CMakeLists.txt": CMAKE, "go.mod": "module example.invalid/o\n\ngo 1.24.0\n",
            "CMakePresets.json": presets("CPU", "ROCm 6"), "ml/backend/ggml/ggml/src/ggml.c": "int x;\n",
            "llm/memory.go": "package llm\n"}
    commit(repo, "base", base, tag="v0.9.0")
    commit(repo, "v1", {"README": "one\n"}, tag="v1.0.0")
    git(repo, "tag", "nightly")
    commit(repo, "rc", {"CMakePresets.json": presets("CPU", "ROCm 6", "Vulkan",
                                                     rocm_targets="gfx906;gfx1100")}, tag="v1.1.0-rc0")
    git(repo, "rm", "--quiet", "llm/memory.go")
    commit(repo, "v1.1", {"CMakeLists.txt": CMAKE.replace("# line 5\n", "# upstream five\n")}, tag="v1.1.0")
    git(repo, "rm", "--quiet", "-r", "ml")
    commit(repo, "v2", {"LLAMA_CPP_VERSION": "b1234\n", "go.mod": "module example.invalid/o\n\ngo 1.26.0\n",
                        "CMakePresets.json": presets("Default")}, tag="v2.0.0")
    return repo


@pytest.fixture
def env(tmp_path, upstream):
    work = tmp_path / "author"
    git(tmp_path, "clone", "--quiet", str(upstream), str(work))
    git(work, "checkout", "--quiet", "v1.0.0")
    commit(work, HEADER.format(subject="edit five", status="Pending", applies_to=">=1.0,<1.1", targets="cpu"),
           {"CMakeLists.txt": CMAKE.replace("# line 5\n", "# ours five\n")})
    commit(work, HEADER.format(subject="add notes", status="Pending", applies_to=">=1.0", targets="cpu"),
           {"NOTES": "n\n"})
    v11 = git(upstream, "rev-parse", "v1.1.0")
    commit(work, HEADER.format(subject="backport", status=f"Backport {v11}", applies_to="<1.1",
                               targets="cpu"), {"BACKPORT": "b\n"})
    patches = tmp_path / "patches"
    git(work, *patchtool.FORMAT_PATCH, "-o", str(patches), "v1.0.0..HEAD")
    v1 = git(upstream, "rev-parse", "v1.0.0")
    text = retagged((PROJECT / "targets.toml").read_text(), "v1.0.0", v1)
    text = text.replace('"v0.24.0" = "c28ddc0a7b273cd286b680a6db0bef0c17bc0ec0"',
                        f'"v2.0.0" = "{git(upstream, "rev-parse", "v2.0.0")}"\n"v1.1.0" = '
                        f'"{"0" * 40}"\n"v1.0.0" = "{v1}"')
    matrix_file = tmp_path / "targets.toml"
    matrix_file.write_text(text)
    settings = Settings(targets_file=matrix_file, patches_dir=patches, dist=tmp_path / "dist",
                        cache=tmp_path / "cache", source=str(upstream))
    return targets.load(matrix_file), settings


def test_versions_from_a_tag_on_skip_rc_and_tags_that_are_not_versions():
    tags = ["nightly", "v0.9.0", "v1.1.0", "v1.0.0", "v1.1.0-rc0", "v0.12.7-citest0", "v2.0.0", "x1"]
    assert track.versions(tags, "v1.0.0") == ["v1.0.0", "v1.1.0", "v2.0.0"]
    assert track.versions(tags, "v1.0.0", rc=True) == ["v1.0.0", "v1.1.0-rc0", "v1.1.0", "v2.0.0"]


def test_report_verdicts_match_git_and_layouts_come_from_the_tree(env, log):
    matrix, settings = env
    rep = track.report(matrix, settings, log, since="v1.0.0")
    rows = {r["tag"]: r for r in rep["tags"]}
    assert list(rows) == ["v1.0.0", "v1.1.0", "v2.0.0"]
    verdict = {t: {n: p["verdict"] for n, p in r["patches"].items()} for t, r in rows.items()}
    assert verdict["v1.0.0"] == {"0001-edit-five.patch": "applies", "0002-add-notes.patch": "applies",
                                 "0003-backport.patch": "applies"}
    assert verdict["v1.1.0"] == {"0001-edit-five.patch": "out of range", "0002-add-notes.patch": "applies",
                                 "0003-backport.patch": "out of range"}
    assert rows["v1.1.0"]["patches"]["0001-edit-five.patch"]["probe"] == \
        "conflicts (CMakeLists.txt, hunk at line 3)"
    first = rows["v1.0.0"]
    assert (first["layout"], first["go"], first["memory_go"]) == ("in-tree", "1.24.0", True)
    assert rows["v1.1.0"]["presets"] == ["ROCm 6", "Vulkan"] and rows["v1.1.0"]["rocm_archs"] == ["gfx906"]
    assert rows["v1.1.0"]["memory_go"] is False
    assert (rows["v2.0.0"]["layout"], rows["v2.0.0"]["llama_cpp"], rows["v2.0.0"]["go"]) == \
        ("fetched", "b1234", "1.26.0")
    assert rows["v2.0.0"]["presets"] == []
    assert rows["v2.0.0"]["llama_cpp_pinned"] is False and rows["v1.0.0"]["llama_cpp_pinned"] is False
    assert [rows[t]["pinned"] for t in rows] == ["yes", "moved", "yes"]
    assert rep["summary"]["layouts"] == {"in-tree": 2, "fetched": 1}
    assert rep["summary"]["verdicts"] == {"applies": 5, "out of range": 4}
    assert "upstream has it" not in rows["v1.0.0"]["patches"]["0003-backport.patch"]["detail"]
    assert "upstream has it" in rows["v1.1.0"]["patches"]["0003-backport.patch"]["detail"]
    text = track.render(rep)
    assert "- `0003-backport.patch`: from v1.1.0 on" in text


def test_build_is_asked_only_for_pinned_tags(env, log):
    matrix, settings = env
    asked = []
    rep = track.report(matrix, settings, log, since="v1.0.0", build_target="cpu",
                       build=lambda tag: asked.append(tag) or {"result": "builds and verifies", "detail": ""})
    assert asked == ["v1.0.0", "v2.0.0"]
    assert [r["build"]["result"] for r in rep["tags"]] == ["builds and verifies", "refused: tag moved",
                                                          "builds and verifies"]
    assert "| build cpu |" in track.render(rep)


def test_cli_track_writes_markdown_and_json(env, tmp_path, capsys, monkeypatch):
    matrix, settings = env
    monkeypatch.setenv("PIPELINE_CACHE", str(settings.cache))
    monkeypatch.setenv("PIPELINE_DIST", str(settings.dist))
    monkeypatch.setenv("PIPELINE_PATCHES", str(settings.patches_dir))
    md, js = tmp_path / "out" / "track.md", tmp_path / "out" / "track.json"
    assert cli.main(["track", "--targets-file", str(matrix.path), "--source", settings.source, "--since",
                     "v1.0.0", "--rc", "--markdown", str(md), "--json", str(js)]) == 0
    text = md.read_text()
    assert text.startswith("# Upstream tracking: 4 tags from v1.0.0")
    assert "| v2.0.0 | fetched | b1234 (not pinned) | 1.26.0 | - | - | no | yes | c | A | B |" in text
    assert [r["tag"] for r in json.loads(js.read_text())["tags"]] == ["v1.0.0", "v1.1.0-rc0", "v1.1.0",
                                                                      "v2.0.0"]
    assert capsys.readouterr().out == text + "\n"


def test_cli_track_since_a_tag_after_every_version_is_one_line(env, capsys):
    matrix, settings = env
    code = cli.main(["track", "--targets-file", str(matrix.path), "--source", settings.source, "--since",
                     "v9.0.0", "--json", str(settings.dist / "t.json"), "--markdown",
                     str(settings.dist / "t.md")])
    assert code == 11 and "no upstream tag from v9.0.0 on" in capsys.readouterr().err


def test_tags_of_a_blob_or_a_tree_are_left_out_not_the_whole_report(env, upstream, log):
    """A tag may name any object: v1.5.0 a blob (lightweight), v1.6.0 an annotated tag of a tree. The
    report lists the other tags, and the log says which were left out."""
    matrix, settings = env
    blob = git(upstream, "hash-object", "-w", "--stdin", stdin=b"not a commit\n")
    git(upstream, "tag", "v1.5.0", blob)
    tree = git(upstream, "rev-parse", "v1.0.0^{tree}")
    git(upstream, "tag", "-a", "-m", "a tree", "v1.6.0", tree)
    rep = track.report(matrix, settings, log, since="v1.0.0")
    assert [r["tag"] for r in rep["tags"]] == ["v1.0.0", "v1.1.0", "v2.0.0"]
    text = log.path.read_text()
    assert "tag v1.5.0 names a blob, not a commit: left out" in text
    assert "tag v1.6.0 names a tree, not a commit: left out" in text
