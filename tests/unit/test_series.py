"""series.py: patch file names and header blocks are validated; selection by target and version."""

from __future__ import annotations

import pytest

from pipeline.config import series
from pipeline.config.targets import tag_version
from pipeline.errors import ConfigError

from .conftest import SIMPLE_DIFF, TARGETS_FILE, patch_text

TARGETS = ("cpu", "gfx1103", "gfx906", "sm_37")


def write(tmp_path, name="0001-fix.patch", text=None, **header):
    d = tmp_path / "patches"
    d.mkdir(exist_ok=True)
    (d / name).write_text(text if text is not None else patch_text("fix things", SIMPLE_DIFF, **header))
    return d


def error(tmp_path, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        series.load(write(tmp_path, **kwargs), TARGETS)
    assert info.value.exit_code == 2
    return str(info.value)


def test_header_fields_are_read_into_a_patch(tmp_path):
    (p,) = series.load(write(tmp_path, targets="sm_37 gfx906", applies_to=">=0.12.4,<0.12.11",
                             status="Backport 0123abcd"), TARGETS)
    assert p.name == "0001-fix.patch" and p.subject == "fix things"
    assert p.targets == ("sm_37", "gfx906")
    assert p.admits("0.12.5") and not p.admits("0.12.11") and not p.admits("0.12.3")
    assert p.upstream_status == "Backport 0123abcd"
    assert p.record()["applies_to"] == "<0.12.11,>=0.12.4"
    assert len(p.sha256) == 64


@pytest.mark.parametrize("field", series.FIELDS)
def test_missing_header_field_is_refused_naming_file_and_field(tmp_path, field):
    text = "\n".join(line for line in patch_text("x", SIMPLE_DIFF).split("\n")
                     if not line.startswith(f"{field}:"))
    message = error(tmp_path, text=text)
    assert "0001-fix.patch" in message and repr(field) in message


def test_unknown_upstream_status_is_refused(tmp_path):
    assert "Upstream-Status must start with one of" in error(tmp_path, status="Maybe later")


def test_backport_without_a_commit_is_refused(tmp_path):
    assert "Backport needs a detail" in error(tmp_path, status="Backport")


def test_malformed_applies_to_is_refused(tmp_path):
    assert "Applies-To '>=0.12.4 and <1' is not a version specifier" in error(
        tmp_path, applies_to=">=0.12.4 and <1")


def test_unknown_target_is_refused(tmp_path):
    assert "'gfx1200'" in error(tmp_path, targets="cpu gfx1200")


def test_file_name_must_be_numbered_slug(tmp_path):
    assert "NNNN-slug.patch" in error(tmp_path, name="fix.patch")


def test_two_patches_with_one_number_are_refused(tmp_path):
    write(tmp_path, name="0001-a.patch")
    assert "also used by 0001-a.patch" in error(tmp_path, name="0001-b.patch")


def test_plain_diff_without_format_patch_header_is_refused(tmp_path):
    assert "not a `git format-patch` file" in error(tmp_path, text=SIMPLE_DIFF)


def test_folded_subject_is_joined(tmp_path):
    text = patch_text("x", SIMPLE_DIFF).replace("Subject: [PATCH] x\n",
                                                "Subject: [PATCH] a long subject\n that goes on\n")
    (p,) = series.load(write(tmp_path, text=text), TARGETS)
    assert p.subject == "a long subject that goes on"


def test_series_is_in_file_name_order_and_filtered_per_target(tmp_path):
    write(tmp_path, name="0002-b.patch", targets="cpu")
    write(tmp_path, name="0001-a.patch", targets="gfx906 cpu", applies_to="<0.12.5")
    write(tmp_path, name="0003-c.patch", targets="gfx906")
    loaded = series.load(tmp_path / "patches", TARGETS)
    assert [p.name for p in loaded] == ["0001-a.patch", "0002-b.patch", "0003-c.patch"]
    assert [p.name for p in series.for_target(loaded, "cpu", "0.12.4")] == ["0001-a.patch", "0002-b.patch"]
    assert [p.name for p in series.for_target(loaded, "cpu", "0.12.5")] == ["0002-b.patch"]


def test_release_candidates_are_versions_too():
    assert str(tag_version("v0.12.6-rc0")) == "0.12.6rc0"
    with pytest.raises(ConfigError, match="not a version"):
        tag_version("main")


def test_a_patch_naming_a_group_is_carried_by_its_targets(tmp_path):
    """A target joins a patch by joining a group of targets.toml: the patch's bytes stay as they are."""
    d = write(tmp_path, targets="memory sm_37")
    (p,) = series.load(d, TARGETS, {"memory": ("gfx906", "gfx1103")})
    assert p.targets == ("gfx906", "gfx1103", "sm_37")
    before = (d / "0001-fix.patch").read_bytes()
    (p,) = series.load(d, TARGETS, {"memory": ("gfx906", "gfx1103", "cpu")})
    assert "cpu" in p.targets and (d / "0001-fix.patch").read_bytes() == before
    assert [x.name for x in series.for_target([p], "cpu", "0.12.5")] == ["0001-fix.patch"]


def test_a_name_that_is_neither_target_nor_group_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"Targets names 'memroy', which is not a target or a group"):
        series.load(write(tmp_path, targets="memroy"), TARGETS, {"memory": ("gfx906",)})


def test_the_project_patches_name_groups_only(matrix):
    for p in matrix.patches(TARGETS_FILE.parent / "patches"):
        named = next(line for line in p.path.read_text().splitlines() if line.startswith("Targets: "))
        assert set(named.split()[1:]) <= set(matrix.groups), p.name
