"""The upstream version as an axis: pins as data, --ref choosing a pinned tag, per-target version
ranges, and outputs kept apart by version."""

from __future__ import annotations

import json

import pytest

from pipeline import cli, stages
from pipeline.config import targets
from pipeline.config.settings import Settings
from pipeline.errors import ConfigError, SelectionError

from .conftest import TARGETS_FILE
from .test_targets import MINIMAL, write

PIN = "89abcdef0123456789abcdef0123456789abcdef"
PINNED = MINIMAL + f"""
[targets.late]
description = "needs 1.3"
versions = ">=1.3"
source.tag = "v1.3.0"
source.commit = "{PIN}"

[upstream.pins]
"v1.2.3" = "0123456789abcdef0123456789abcdef01234567"
"v1.3.0" = "{PIN}"
"""


@pytest.fixture
def matrix(tmp_path):
    return targets.load(write(tmp_path, PINNED))


def test_a_pinned_ref_replaces_tag_and_commit(matrix):
    one = matrix.at(matrix.targets["one"], "v1.3.0")
    assert (one.source.tag, one.source.commit) == ("v1.3.0", PIN)
    assert matrix.targets["one"].source.tag == "v1.2.3"


def test_an_unpinned_ref_is_refused_naming_how_to_pin_it(matrix):
    with pytest.raises(SelectionError, match=r'not pinned .*"v1.4.0" = "<commit>" under \[upstream.pins\]'):
        matrix.select_at(["one"], "v1.4.0")


def test_a_target_outside_its_versions_is_refused_by_name_and_left_out_of_all(matrix):
    with pytest.raises(SelectionError, match=r"late builds upstream >=1.3; v1.2.3 is outside"):
        matrix.select_at(["late"], "v1.2.3")
    assert [t.name for t in matrix.select_at(["--all"], "v1.2.3")] == ["one", "two"]
    assert [t.source.tag for t in matrix.select_at(["--all"], "v1.3.0")] == ["v1.3.0"] * 3


def test_a_default_tag_outside_the_versions_is_a_config_error(tmp_path):
    text = PINNED.replace('source.tag = "v1.3.0"', 'source.tag = "v1.2.3"').replace(
        f'source.commit = "{PIN}"', 'source.commit = "0123456789abcdef0123456789abcdef01234567"')
    with pytest.raises(ConfigError, match="outside the target's versions"):
        targets.load(write(tmp_path, text))


def test_a_pin_that_contradicts_a_target_commit_is_a_config_error(tmp_path):
    text = PINNED.replace('"v1.3.0" = "89abcdef', '"v1.3.0" = "99abcdef')
    with pytest.raises(ConfigError, match=r"differs from the pin of v1.3.0"):
        targets.load(write(tmp_path, text))


@pytest.mark.parametrize("pins, message", [
    ('"v1.2.3" = "abc"', "full 40-digit commit"),
    ('"-v1" = "0123456789abcdef0123456789abcdef01234567"', "tag"),
    ('"latest" = "0123456789abcdef0123456789abcdef01234567"', "not a version"),
])
def test_bad_pins_are_config_errors(tmp_path, pins, message):
    with pytest.raises(ConfigError, match=message):
        targets.load(write(tmp_path, MINIMAL + f"\n[upstream.pins]\n{pins}\n"))


def test_another_version_gets_its_own_output_folder_and_hashes(tmp_path):
    matrix = targets.load(TARGETS_FILE)
    settings = Settings(targets_file=matrix.path, dist=tmp_path / "dist", cache=tmp_path / "cache")
    own = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    other = stages.plan_for(matrix, matrix.at(matrix.targets["cpu"], "v0.24.0"), settings)
    assert own.out == "cpu" and other.out == "cpu@v0.24.0"
    assert other.archive_name.startswith("ollama-0.24.0-cpu.")
    assert own.hashes["source"] != other.hashes["source"]
    assert own.hashes["builder"] == other.hashes["builder"]


def test_project_pins_hold_every_default_tag():
    matrix = targets.load(TARGETS_FILE)
    for t in matrix.targets.values():
        assert matrix.pins[t.source.tag] == t.source.commit


def test_cli_plan_json_carries_the_version(capsys):
    assert cli.main(["plan", "cpu", "--ref", "v0.24.0", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["tag"], row["upstream_version"], row["out"]) == ("v0.24.0", "0.24.0", "cpu@v0.24.0")
    assert row["commit"] == "c28ddc0a7b273cd286b680a6db0bef0c17bc0ec0"


def test_cli_unpinned_ref_is_one_line_with_the_selection_exit_code(capsys):
    assert cli.main(["build", "cpu", "--ref", "v0.99.0"]) == SelectionError.exit_code
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "[upstream.pins]" in err


def test_vulkan_target_drops_the_loader_upstream_installs_and_its_policy_keeps_it_the_hosts(tmp_path):
    from pipeline.config.policy import load_policy

    matrix = targets.load(TARGETS_FILE)
    settings = Settings(targets_file=matrix.path, dist=tmp_path / "dist", cache=tmp_path / "cache")
    plan = stages.plan_for(matrix, matrix.targets["vulkan"], settings)
    drop = [s.argv for s in plan.steps if s.label.startswith("drop host libraries")]
    assert drop == [("find", "dist", "(", "-name", "libvulkan.so*", ")", "-print", "-delete")]
    policy = load_policy(matrix.builders["debian-vulkan"].policy)
    assert "libvulkan.so.1" in policy.never_bundle and policy.host_packages == ("libvulkan1",)
    with pytest.raises(SelectionError, match=r"vulkan builds upstream >=0.12.6"):
        matrix.select_at(["vulkan"], "v0.12.5")


def test_host_libraries_must_be_never_bundled_and_come_with_packages(tmp_path):
    from pipeline.config.policy import load_policy

    base = ('suite = "trixie"\ndescription = "x"\nprovided = ["libc.so.6"]\n{extra}\n[max_versions]\n'
            'GLIBC = "2.41"\n')
    bad = tmp_path / "bad.toml"
    bad.write_text(base.format(extra='host_libraries = ["libvulkan.so.1"]\nhost_packages = ["libvulkan1"]'))
    with pytest.raises(ConfigError, match="must also be in never_bundle"):
        load_policy(bad)
    bad.write_text(base.format(extra='never_bundle = ["libvulkan.so.1"]\n'
                                     'host_libraries = ["libvulkan.so.1"]'))
    with pytest.raises(ConfigError, match="go together"):
        load_policy(bad)
