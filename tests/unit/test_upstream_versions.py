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
    assert policy.driver_packages == ("mesa-vulkan-drivers",)
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
    bad.write_text(base.format(extra='driver_packages = ["mesa-vulkan-drivers"]'))
    with pytest.raises(ConfigError, match="'driver_packages' needs host_packages"):
        load_policy(bad)
    bad.write_text(base.format(extra='never_bundle = ["libvulkan.so.1"]\n'
                                     'host_libraries = ["libvulkan.so.1"]\nhost_packages = ["libvulkan1"]\n'
                                     'driver_packages = ["Mesa Drivers"]'))
    with pytest.raises(ConfigError, match="'driver_packages': 'Mesa Drivers' is not a Debian package name"):
        load_policy(bad)


# ------------------------------------------------------------------ release tags and TARGET@TAG

RELEASED = PINNED.replace('[targets.late]', '''[targets.one.releases]
"v1.2.3" = "the version known to work"
"v1.3.0" = "current upstream"

[targets.late]''')


def test_a_target_is_released_at_each_of_its_release_tags_own_first(tmp_path):
    matrix = targets.load(write(tmp_path, RELEASED))
    released = matrix.releases(matrix.targets.values())
    assert [(t.name, t.source.tag) for t in released] == [
        ("one", "v1.2.3"), ("one", "v1.3.0"), ("two", "v1.2.3"), ("late", "v1.3.0")]
    assert [matrix.selector(t) for t in released] == ["one", "one@v1.3.0", "two", "late"]
    assert [t.release_note for t in released] == ["the version known to work", "current upstream", "", ""]


def test_target_at_tag_selects_one_target_at_one_pinned_tag(tmp_path):
    matrix = targets.load(write(tmp_path, RELEASED))
    chosen = matrix.select_at(["one", "one@v1.3.0", "two"], None)
    assert [(t.name, t.source.tag) for t in chosen] == [("one", "v1.2.3"), ("two", "v1.2.3"),
                                                        ("one", "v1.3.0")]
    assert matrix.select_at(["one@v1.3.0", "one@v1.3.0"], None)[0].source.commit == PIN
    with pytest.raises(SelectionError,
                       match=r"one@v1.3.0 names upstream v1.3.0, but --ref .* asks for v1.2.3"):
        matrix.select_at(["one@v1.3.0"], "v1.2.3")
    with pytest.raises(SelectionError, match=r"unknown target 'on' in 'on@v1.3.0' \(did you mean 'one'\?\)"):
        matrix.select_at(["on@v1.3.0"], None)
    with pytest.raises(SelectionError, match=r"late builds upstream >=1.3; v1.2.3 is outside"):
        matrix.select_at(["late@v1.2.3"], None)
    with pytest.raises(SelectionError, match="not pinned"):
        matrix.select_at(["one@v9.9.9"], None)


@pytest.mark.parametrize("releases, message", [
    ('"v1.3.0" = "current"', r"releases lacks the target's own tag v1.2.3"),
    ('"v1.2.3" = "ok"\n"v9.0.0" = "later"', r"releases v9.0.0: not pinned"),
    ('"v1.2.3" = "  "', r"releases v1.2.3: say why"),
    ('"v1.2.3" = "ok"\n"-x" = "bad"', r"releases': key '-x' is not allowed \(it starts with '-'\)"),
])
def test_bad_release_tags_are_config_errors(tmp_path, releases, message):
    text = PINNED.replace('[targets.late]', f'[targets.one.releases]\n{releases}\n\n[targets.late]')
    with pytest.raises(ConfigError, match=message):
        targets.load(write(tmp_path, text))
    text = PINNED.replace('description = "needs 1.3"', 'description = "needs 1.3"\nreleases = { "v1.3.0" = '
                          '"x", "v1.2.3" = "too old" }')
    with pytest.raises(ConfigError, match=r"\[targets.late\] releases v1.2.3: outside the target's versions"):
        targets.load(write(tmp_path, text))


def test_runtime_environment_follows_the_upstream_version(tmp_path):
    text = PINNED.replace('[targets.late]', '''[targets.one.runtime]
env = { A = "1" }
env_versions = { ">=1.3" = { B = "2", A = "3" }, "<1.3" = { C = "4" } }

[targets.late]''')
    matrix = targets.load(write(tmp_path, text))
    one = matrix.targets["one"]
    assert one.runtime_env == {"A": "1", "C": "4"}
    assert matrix.at(one, "v1.3.0").runtime_env == {"A": "3", "B": "2"}
    with pytest.raises(ConfigError, match=r"env_versions': key '1.3' is not allowed \(not a version spec"):
        targets.load(write(tmp_path, text.replace('">=1.3" = {', '"1.3" = {')))


def test_project_vulkan_is_switched_on_where_ollama_gates_it():
    matrix = targets.load(TARGETS_FILE)
    vulkan = matrix.targets["vulkan"]
    assert matrix.at(vulkan, "v0.24.0").runtime_env.get("OLLAMA_VULKAN") == "1"
    assert "OLLAMA_VULKAN" not in matrix.at(vulkan, "v0.30.0").runtime_env
    assert matrix.at(matrix.targets["gfx1103"], "v0.30.0").runtime_env["OLLAMA_IGPU_ENABLE"] == "1"
    assert "OLLAMA_IGPU_ENABLE" not in matrix.targets["gfx1103"].runtime_env
