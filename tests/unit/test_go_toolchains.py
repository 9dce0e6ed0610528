"""Go per upstream version: go.toolchains maps upstream versions to the oldest Go their go.mod accepts,
builders declare the Go toolchains they carry, and the plan puts the oldest fitting one first on PATH
for the go steps (builds run with GOTOOLCHAIN=local)."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.config import targets
from pipeline.config.targets import Builder
from pipeline.errors import ConfigError, SelectionError
from pipeline.upstream import layouts

from .conftest import TARGETS_FILE
from .test_targets import MINIMAL, edited, write

CARRIES = MINIMAL.replace('template = "t.j2"\n', 'template = "t.j2"\npath = ["/usr/local/go/bin", '
                                                 '"/opt/cmake/bin"]\n'
                          'go_toolchains = { "1.24.7" = "/usr/local/go/bin", "1.26.11" = "/opt/go1.26/bin", '
                          '"1.25.3" = "/opt/go1.25/bin" }\n', 1) + """
[defaults.go]
toolchains = { ">=0.23.1" = "1.26.0", ">=0.20.0" = "1.25.0" }
"""


@pytest.fixture
def matrix(tmp_path):
    return targets.load(write(tmp_path, CARRIES))


def at(matrix, tag):
    return dataclasses.replace(matrix.targets["one"], source=dataclasses.replace(
        matrix.targets["one"].source, tag=tag))


def go_steps_env(matrix, tag):
    target = at(matrix, tag)
    builder = matrix.builders[target.builder]
    steps = layouts.InTree().steps(target, (matrix.backends["cpu"],), builder, "1")
    envs = [dict(s.env) for s in steps if s.argv[0] == "go"]
    assert len(envs) == 2 and envs[0] == envs[1]
    return envs[0]


def test_a_version_no_rule_matches_keeps_the_image_path_and_default_go(matrix):
    assert go_steps_env(matrix, "v0.12.5") == {"CGO_ENABLED": "1"}


def test_the_oldest_toolchain_new_enough_goes_first_on_path(matrix):
    path = go_steps_env(matrix, "v0.24.0")["PATH"].split(":")
    assert path[:3] == ["/opt/go1.26/bin", "/usr/local/go/bin", "/opt/cmake/bin"]
    assert path[3:] == list(layouts.SYSTEM_PATH)
    assert go_steps_env(matrix, "v0.24.0")["CGO_ENABLED"] == "1"


def test_where_rules_overlap_the_newest_requirement_wins(matrix):
    assert go_steps_env(matrix, "v0.21.0")["PATH"].startswith("/opt/go1.25/bin:")
    assert go_steps_env(matrix, "v0.23.1")["PATH"].startswith("/opt/go1.26/bin:")


def test_prereleases_count_as_their_version(matrix):
    assert go_steps_env(matrix, "v0.30.0-rc1")["PATH"].startswith("/opt/go1.26/bin:")


def test_a_builder_without_a_new_enough_go_is_refused_naming_target_and_builder(matrix):
    target = at(matrix, "v0.24.0")
    old = Builder(template="t.j2", go_toolchains={"1.24.7": "/usr/local/go/bin"})
    with pytest.raises(ConfigError, match=r"target one at v0.24.0 \(builder b\).*needs Go >= 1.26.0.*1.24.7"):
        layouts.InTree().steps(target, (matrix.backends["cpu"],), old, "1")


def test_selection_picks_the_oldest_fit_not_the_first_listed():
    b = Builder(template="t.j2", go_toolchains={"1.27.1": "/c", "1.26.0": "/b", "1.24.7": "/a"})
    assert targets.go_toolchain(b, targets.go_version("1.26.0")) == "/b"
    assert targets.go_toolchain(b, targets.go_version("1.26.1")) == "/c"
    assert targets.go_toolchain(b, targets.go_version("go1.20")) == "/a"


@pytest.mark.parametrize("old, new, message", [
    ('">=0.23.1" = "1.26.0"', '"0.23.1+" = "1.26.0"',
     r"key 'toolchains': key '0.23.1\+' is not allowed \(not a version specifier"),
    ('">=0.23.1" = "1.26.0"', '">=0.23.1" = "one"', "key 'toolchains': '>=0.23.1' = 'one' is not allowed"),
    ('"1.26.11" = "/opt/go1.26/bin"', '"1.26.x" = "/opt/go1.26/bin"',
     r"\[builders.b\] key 'go_toolchains': key '1.26.x'"),
    ('"1.26.11" = "/opt/go1.26/bin"', '"1.26.11" = "opt/go1.26/bin"', "it is not an absolute folder"),
])
def test_bad_toolchain_tables_are_config_errors(tmp_path, old, new, message):
    with pytest.raises(ConfigError, match=message):
        targets.load(write(tmp_path, edited(old, new, CARRIES)))


def test_the_project_matrix_builds_v0_24_0_with_go_1_26_everywhere_and_v0_12_5_as_before():
    project_matrix = targets.load(TARGETS_FILE)
    for target in project_matrix.targets.values():
        builder = project_matrix.builders[target.builder]
        if target.admits("v0.12.5"):
            assert target.go.required("v0.12.5") is None
            assert "PATH" not in layouts.go_path(project_matrix.at(target, "v0.12.5"), builder)
        path = layouts.go_path(project_matrix.at(target, "v0.24.0"), builder)["PATH"]
        assert path.startswith("/opt/go1.26/bin:"), target.name


def test_the_planned_go_is_the_default_on_path_or_the_fitting_toolchain(matrix):
    b = matrix.builders["b"]
    assert b.default_go() == "1.24.7"
    assert targets.planned_go(matrix.targets["one"], b, "v0.12.5") == "1.24.7"
    assert targets.planned_go(matrix.targets["one"], b, "v0.24.0") == "1.26.11"


def test_track_names_the_targets_whose_go_is_older_than_go_mod(matrix, tmp_path):
    from pipeline.tools import track

    assert track.go_short(matrix, "v0.24.0", "1.26.0") == []
    assert track.go_short(matrix, "v0.12.5", "1.24.0") == []
    assert track.go_short(matrix, "v0.12.5", "1.25.0") == ["one: Go 1.24.7 < 1.25.0",
                                                           "two: Go 1.24.7 < 1.25.0"]
    assert track.go_short(matrix, "v0.12.5", "") == []
    no_rules = targets.load(write(tmp_path, CARRIES.split("[defaults.go]")[0]))
    assert track.go_short(no_rules, "v0.24.0", "1.26.0")[0] == "one: Go 1.24.7 < 1.26.0"


# ------------------------------------------------------------------ the llama/server layout (v0.30 on)

@pytest.fixture
def project_matrix():
    return targets.load(TARGETS_FILE)


def test_from_v0_30_targets_build_llama_server_from_the_supplied_llama_cpp(project_matrix):
    target = project_matrix.at(project_matrix.targets["gfx906"], "v0.30.0")
    assert layouts.for_tag("v0.30.0").name == "llama-server" and layouts.for_tag("v0.24.0").name == "in-tree"
    builder = project_matrix.builders[target.builder]
    backends = tuple(project_matrix.backends[b] for b in target.backends)
    steps = layouts.for_tag("v0.30.0").steps(target, backends, builder, "0.30.0+gfx906")
    argv = [" ".join(s.argv) for s in steps]
    # cpu first, then the one GPU preset, each configured from a fresh copy of the pinned llama.cpp
    configure = [a for a in argv if a.startswith("cmake -S llama/server")]
    assert [a.split(" --preset ")[1].split()[0] for a in configure] == ["cpu", "rocm_v7_2_user_arch"]
    assert all("-DFETCHCONTENT_SOURCE_DIR_LLAMA_CPP=/src/build/llama.cpp" in a for a in configure)
    assert argv.count("cp -a llama.cpp build/llama.cpp") == 2
    rocm = configure[1]
    assert "-DAMDGPU_TARGETS=gfx906" in rocm and "-DOLLAMA_RUNNER_DIR=rocm" in rocm
    # An empty CMAKE_HIP_FLAGS would get llama/server's -parallel-jobs=4, which Debian's clang refuses
    assert "-DCMAKE_HIP_FLAGS=-O3" in rocm and "-DCMAKE_HIP_FLAGS= " not in rocm + " "
    assert "cmake --build build/llama-server-rocm --target ggml-hip" in argv
    assert "cmake --install build/llama-server-rocm --component llama-server --prefix dist --strip" in argv
    assert argv[-1].startswith("go build ") and dict(steps[-1].env)["PATH"].startswith("/opt/go1.26/bin:")


def test_kepler_gets_a_cuda_v11_runner_from_the_cuda_12_preset_but_stays_before_v0_30(project_matrix):
    sm37 = project_matrix.targets["sm_37"]
    backends = tuple(project_matrix.backends[b] for b in sm37.backends)
    retagged = dataclasses.replace(sm37, source=dataclasses.replace(sm37.source, tag="v0.30.0"))
    argv = [" ".join(s.argv) for s in layouts.LlamaServer().steps(retagged, backends,
                                                                  project_matrix.builders[sm37.builder], "x")]
    cuda = next(a for a in argv if "--preset llama_cuda_v12_user_arch" in a)
    assert "-DOLLAMA_RUNNER_DIR=cuda_v11" in cuda and "-DCMAKE_CUDA_ARCHITECTURES=37-real" in cuda
    with pytest.raises(SelectionError, match=r"sm_37 builds upstream <0.30"):
        project_matrix.at(sm37, "v0.30.0")


def test_a_backend_without_a_llama_server_preset_is_refused_at_v0_30(project_matrix):
    target = project_matrix.at(project_matrix.targets["cpu"], "v0.30.0")
    bare = dataclasses.replace(project_matrix.backends["cpu"], server_preset="")
    with pytest.raises(ConfigError, match=r"no server_preset and server_targets"):
        layouts.LlamaServer().steps(target, (bare,), project_matrix.builders["debian-cpu"], "x")
