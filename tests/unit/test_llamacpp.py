"""llama.cpp for the upstream versions that fetch it: the source stage and the patch tooling supply the
pinned llama.cpp into the tree, on generated repositories shaped like Ollama's v0.30 and llama.cpp."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline import orchestrate, stages
from pipeline.cli import main
from pipeline.config import loader, targets
from pipeline.errors import SourceError
from pipeline.tools import patchtool
from pipeline.upstream import llamacpp

from .conftest import TARGETS_FILE, commit_files, git, make_repo, patch_text

LLAMA_FILES = {"CMakeLists.txt": "project(llama.cpp)\n", "ggml/src/ggml.c": "int ggml_version = 1;\n",
               "src/llama.cpp": "int llama(void) { return 0; }\n"}


@pytest.fixture
def repos(tmp_path):
    """An Ollama-like repository whose v1.0.0 names llama.cpp b100, and a llama.cpp with tag b100."""
    llama = make_repo(tmp_path / "llama.cpp-mirror", LLAMA_FILES)
    git(llama, "tag", "b100")
    llama_commit = git(llama, "rev-parse", "HEAD")
    ollama = make_repo(tmp_path / "ollama", {"go.mod": "module example.invalid/ollama\n\ngo 1.26.0\n",
                                             "LLAMA_CPP_VERSION": "b100\n", "main.go": "package main\n"})
    git(ollama, "tag", "v1.0.0")
    return ollama, git(ollama, "rev-parse", "HEAD"), llama, llama_commit


def fetched_matrix(commit: str, llama_pins: dict[str, str]) -> targets.Matrix:
    doc = loader.read(TARGETS_FILE)
    doc["defaults"]["source"].update(tag="v1.0.0", commit=commit)
    doc["defaults"].pop("versions", None)
    for t in doc["targets"].values():
        t.pop("versions", None)
    doc["upstream"]["pins"] = {"v1.0.0": commit}
    doc["upstream"]["llama_cpp"]["pins"] = llama_pins
    return targets.parse(doc, TARGETS_FILE)


def source_of(matrix, settings, log):
    plan = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    return orchestrate.results_of(plan, settings, log, ["source"])["source"]


def test_the_source_stage_writes_the_pinned_llama_cpp_into_the_tree(repos, settings, log):
    ollama, commit, llama, llama_commit = repos
    settings = dataclasses.replace(settings, source=str(ollama), llama_cpp_source=str(llama))
    tree = source_of(fetched_matrix(commit, {"b100": llama_commit}), settings, log)
    assert tree.llama_cpp == ("b100", llama_commit)
    assert (tree.path / llamacpp.DIR / "ggml/src/ggml.c").read_text() == LLAMA_FILES["ggml/src/ggml.c"]
    assert (tree.path / "main.go").is_file()
    assert f"llama.cpp b100 -> {llama_commit} supplied from {llama}" in log.path.read_text()
    # Cached: the same tree, with its llama.cpp, and nothing fetched again.
    again = source_of(fetched_matrix(commit, {"b100": llama_commit}), settings, log)
    assert again == tree


def test_an_unpinned_llama_cpp_tag_is_refused_saying_how_to_pin_it(repos, settings, log):
    ollama, commit, llama, _ = repos
    settings = dataclasses.replace(settings, source=str(ollama), llama_cpp_source=str(llama))
    with pytest.raises(SourceError, match=r'builds llama.cpp b100 .* add "b100" = "<commit>" under '
                                          r"\[upstream.llama_cpp.pins\]"):
        source_of(fetched_matrix(commit, {}), settings, log)
    assert not list((settings.cache / "trees").glob("source-*"))  # nothing half-written is kept


def test_a_moved_llama_cpp_tag_is_refused(repos, settings, log):
    ollama, commit, llama, llama_commit = repos
    moved = commit_files(llama, {"src/llama.cpp": "int llama(void) { return 1; }\n"}, "moved")
    git(llama, "tag", "-f", "b100")
    settings = dataclasses.replace(settings, source=str(ollama), llama_cpp_source=str(llama))
    with pytest.raises(SourceError, match=rf"tag b100 in .* points at {moved}.*\[upstream.llama_cpp.pins\]"):
        source_of(fetched_matrix(commit, {"b100": llama_commit}), settings, log)


def test_without_a_llama_cpp_source_the_message_names_the_variable(repos, settings, log):
    ollama, commit, _, llama_commit = repos
    matrix = fetched_matrix(commit, {"b100": llama_commit})
    matrix = dataclasses.replace(matrix, llama_cpp=dataclasses.replace(matrix.llama_cpp, url=""))
    settings = dataclasses.replace(settings, source=str(ollama))
    with pytest.raises(SourceError, match=r"set LLAMA_CPP_SOURCE to a clone or mirror of llama.cpp"):
        source_of(matrix, settings, log)


def test_a_llama_cpp_source_that_is_no_repository_is_refused(repos, settings, log, tmp_path):
    ollama, commit, _, llama_commit = repos
    (tmp_path / "plain").mkdir()
    settings = dataclasses.replace(settings, source=str(ollama), llama_cpp_source=str(tmp_path / "plain"))
    with pytest.raises(SourceError, match=r"is not a git repository; point LLAMA_CPP_SOURCE at a clone or "
                                          r"mirror of llama.cpp"):
        source_of(fetched_matrix(commit, {"b100": llama_commit}), settings, log)


def test_a_version_file_that_is_no_tag_is_refused(repos, log):
    ollama, _, _, _ = repos
    bad = commit_files(ollama, {"LLAMA_CPP_VERSION": "--upload-pack=evil\n"}, "bad")
    with pytest.raises(SourceError, match="is not a git tag"):
        llamacpp.tag_in(ollama / ".git", bad, log)


def test_in_tree_versions_need_no_llama_cpp(log, tmp_path):
    repo = make_repo(tmp_path / "o", {"ml/backend/ggml/ggml/src/ggml.c": "int x;\n"})
    assert llamacpp.tag_in(repo / ".git", git(repo, "rev-parse", "HEAD"), log) is None


LLAMA_DIFF = """\
diff --git a/llama.cpp/ggml/src/ggml.c b/llama.cpp/ggml/src/ggml.c
--- a/llama.cpp/ggml/src/ggml.c
+++ b/llama.cpp/ggml/src/ggml.c
@@ -1 +1 @@
-int ggml_version = 1;
+int ggml_version = 2;
"""


def test_patches_check_and_apply_reach_llama_cpp_files(repos, settings, log, tmp_path):
    ollama, commit, llama, llama_commit = repos
    settings.patches_dir.mkdir()
    (settings.patches_dir / "0001-ggml-version.patch").write_text(
        patch_text("ggml: version 2", LLAMA_DIFF, applies_to=">=1.0"))
    settings = dataclasses.replace(settings, source=str(ollama), llama_cpp_source=str(llama))
    matrix = fetched_matrix(commit, {"b100": llama_commit})
    verdicts = patchtool.check(matrix, settings, ["v1.0.0"], log)
    assert [(v.patch, v.verdict) for v in verdicts] == [("0001-ggml-version.patch", "applies")]
    into = tmp_path / "work"
    assert patchtool.apply(matrix, settings, "v1.0.0", into, log) == ["0001-ggml-version.patch"]
    assert (into / "llama.cpp/ggml/src/ggml.c").read_text() == "int ggml_version = 2;\n"
    assert (into / "llama.cpp/src/llama.cpp").is_file()  # the whole llama.cpp, to write patches against


def test_patches_check_of_a_fetching_version_needs_no_llama_cpp_when_no_patch_touches_it(repos, settings,
                                                                                            log):
    ollama, commit, _, _ = repos
    settings.patches_dir.mkdir()
    diff = ("diff --git a/main.go b/main.go\n--- a/main.go\n+++ b/main.go\n@@ -1 +1 @@\n-package main\n"
            "+package main // x\n")
    (settings.patches_dir / "0001-main.patch").write_text(patch_text("main: comment", diff,
                                                                      applies_to=">=1.0"))
    settings = dataclasses.replace(settings, source=str(ollama))  # no LLAMA_CPP_SOURCE, no pins
    verdicts = patchtool.check(fetched_matrix(commit, {}), settings, ["v1.0.0"], log)
    assert [v.verdict for v in verdicts] == ["applies"]


def test_llama_cpp_pins_are_checked_like_upstream_pins(tmp_path):
    doc = loader.read(TARGETS_FILE)
    doc["upstream"]["llama_cpp"]["pins"] = {"b100": "abc"}
    with pytest.raises(Exception,
                       match=r"\[upstream.llama_cpp\] key 'pins': 'b100' = 'abc' is not allowed \(it is not "
                             "a full 40-digit commit id"):
        targets.parse(doc, TARGETS_FILE)
    doc["upstream"]["llama_cpp"]["pins"] = {"-b100": "a" * 40}
    with pytest.raises(Exception, match="key '-b100' is not allowed \\(it starts with '-'\\); use a git tag"):
        targets.parse(doc, TARGETS_FILE)


def test_a_version_that_fetches_llama_cpp_plans_the_llama_server_layout_and_kepler_stays_out(capsys):
    assert main(["plan", "cpu", "--ref", "v0.30.0"]) == 0
    out = capsys.readouterr().out
    assert "cmake -S llama/server -B build/llama-server-cpu --preset cpu" in out
    assert main(["plan", "sm_37", "--ref", "v0.30.0"]) != 0
    assert "target sm_37 builds upstream <0.30; v0.30.0 is outside" in capsys.readouterr().err


def test_llama_cpp_source_is_checked_where_it_is_read(capsys, monkeypatch):
    monkeypatch.setenv("LLAMA_CPP_SOURCE", "--upload-pack=evil")
    assert main(["plan", "cpu"]) != 0
    err = capsys.readouterr().err
    assert "LLAMA_CPP_SOURCE" in err and "Traceback" not in err
