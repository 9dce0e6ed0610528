"""Upstream's release build as data: [[upstream.release_build]] rules by upstream version reach the go
build (server mode, cgo -O3) and every backend's configure (LDFLAGS=-s), as upstream's release workflow
and Dockerfile set them; the plan's hashes follow them."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline import stages
from pipeline.config import targets
from pipeline.errors import ConfigError
from pipeline.upstream import layouts

from .conftest import TARGETS_FILE
from .test_targets import MINIMAL, edited, load_error, write

RULES = """
[[upstream.release_build]]
versions = ">=1.0"
go_ldflags = ["-X=example.invalid/server.mode=release"]
go_env = { CGO_CFLAGS = "-O3" }
cmake_env = { LDFLAGS = "-s" }

[[upstream.release_build]]
versions = ">=1.2"
go_env = { CGO_CFLAGS = "-O2", CGO_CXXFLAGS = "-O3" }
"""


def step(plan, label):
    (found,) = [s for s in plan.steps if s.label == label]
    return found


def test_project_builds_as_upstreams_release_at_each_pinned_version(matrix, settings):
    for tag in ("v0.12.5", "v0.24.0"):
        rule = matrix.release_build_at(tag)
        assert rule.go_ldflags == ("-X=github.com/ollama/ollama/server.mode=release",)
        assert dict(rule.go_env) == {"CGO_CFLAGS": "-O3", "CGO_CXXFLAGS": "-O3"}
        assert dict(rule.cmake_env) == {"LDFLAGS": "-s"}
    plan = stages.plan_for(matrix, matrix.targets["gfx1103"], settings)
    go = step(plan, "go build")
    assert go.argv[4].endswith("-X=github.com/ollama/ollama/server.mode=release")
    assert {"CGO_CFLAGS": "-O3", "CGO_CXXFLAGS": "-O3", "CGO_ENABLED": "1"}.items() <= dict(go.env).items()
    for preset in ("CPU", "ROCm 6"):
        assert dict(step(plan, f"configure {preset}").env) == {"CMAKE_GENERATOR": "Ninja", "LDFLAGS": "-s"}


def test_rules_apply_in_file_order_where_their_versions_admit_the_tag(tmp_path):
    matrix = targets.load(write(tmp_path, MINIMAL + RULES))
    assert matrix.release_build_at("v0.9.0") == targets.ReleaseBuild()
    early = matrix.release_build_at("v1.1.0")
    assert dict(early.go_env) == {"CGO_CFLAGS": "-O3"}
    late = matrix.release_build_at("v1.2.3")
    assert late.go_ldflags == ("-X=example.invalid/server.mode=release",)
    assert dict(late.go_env) == {"CGO_CFLAGS": "-O2", "CGO_CXXFLAGS": "-O3"}  # the later rule wins a key
    assert dict(late.cmake_env) == {"LDFLAGS": "-s"}


def test_a_build_at_another_tag_takes_that_versions_rules(tmp_path, settings):
    matrix = targets.load(write(tmp_path, MINIMAL + RULES))
    target = matrix.targets[next(iter(matrix.targets))]
    older = dataclasses.replace(target, source=dataclasses.replace(target.source, tag="v1.1.0"))
    builder = matrix.builders[target.builder]
    now = layouts.InTree().steps(target, (matrix.backends["cpu"],), builder, "1",
                                 matrix.release_build_at(target.source.tag))
    then = layouts.InTree().steps(older, (matrix.backends["cpu"],), builder, "1",
                                  matrix.release_build_at(older.source.tag))
    go_now, go_then = (dict(next(s for s in steps if s.label == "go build").env) for steps in (now, then))
    assert go_now["CGO_CFLAGS"] == "-O2" and go_then["CGO_CFLAGS"] == "-O3"
    assert "CGO_CXXFLAGS" not in go_then


def test_the_release_flags_are_part_of_the_build_hash_only(tmp_path, matrix, settings):
    text = TARGETS_FILE.read_text()
    rule = text[text.index("[[upstream.release_build]]"):text.index('cmake_env = { LDFLAGS = "-s" }\n')]
    plain = targets.load(write(tmp_path, edited(rule + 'cmake_env = { LDFLAGS = "-s" }\n', "")))
    assert plain.release_build == ()
    a = stages.plan_for(plain, plain.targets["cpu"], settings)
    b = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    assert a.hashes["build"] != b.hashes["build"]
    assert (a.hashes["source"], a.hashes["patches"], a.hashes["builder"]) == (
        b.hashes["source"], b.hashes["patches"], b.hashes["builder"])


@pytest.mark.parametrize("rule, message", [
    ('versions = "newer"', "key 'versions': 'newer' is not allowed (not a version specifier"),
    ('go_ldflags = ["-X=a.b=c d"]',
     "key 'go_ldflags' item 1: '-X=a.b=c d' is not allowed (it holds a space)"),
    ('go_ldflags = ["server.mode=release"]', "'server.mode=release' is not allowed (it is not an option"),
    ('go_env = { "cgo flags" = "-O3" }', "'cgo flags' is not allowed (it holds a space); use an environment "
                                         "variable name"),
    ('cmake_env = { LDFLAGS = "-s\\n-x" }', "holds a newline"),
    ('go_flags = ["-race"]', "unknown key 'go_flags'"),
])
def test_a_bad_rule_is_refused_naming_the_rule_and_key(tmp_path, rule, message):
    error = load_error(tmp_path, MINIMAL + f"\n[[upstream.release_build]]\n{rule}\n")
    assert "[[upstream.release_build]] #1" in str(error) or "[upstream.release_build #1]" in str(error)
    assert message in str(error)


def test_unknown_key_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError):
        targets.load(write(tmp_path, MINIMAL + '\n[[upstream.release_build]]\nversion = ">=1"\n'))
