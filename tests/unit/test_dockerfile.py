"""Rendering docker/ templates: golden files make every change to a builder's Dockerfile a visible diff.

To accept an intended change, regenerate the golden files and review the diff:

    UPDATE_GOLDEN=1 python3 -m pytest tests/unit/test_dockerfile.py
    git diff tests/unit/golden/
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline import dockerfile, plan
from pipeline.errors import ConfigError
from pipeline.settings import Settings
from pipeline.targets import Builder, load

from .conftest import PROJECT, TARGETS_FILE

GOLDEN = Path(__file__).parent / "golden"
BUILDERS = list(load(TARGETS_FILE).builders)


@pytest.mark.parametrize("name", BUILDERS)
def test_rendered_dockerfile_matches_golden_file(matrix, name):
    builder = matrix.builders[name]
    rendered = dockerfile.render(PROJECT / "docker", builder,
                                 base_image=plan.base_image_name(Settings(), builder.suite))
    golden = GOLDEN / f"{name}.Dockerfile"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(rendered)
    assert golden.exists(), f"no golden file {golden}; create it with UPDATE_GOLDEN=1"
    assert rendered == golden.read_text(), (
        f"docker/{builder.template} renders differently for {name}; if intended, "
        "rerun with UPDATE_GOLDEN=1 and review the diff of tests/unit/golden/")


def test_every_golden_file_belongs_to_a_builder():
    assert sorted(p.name.removesuffix(".Dockerfile") for p in GOLDEN.glob("*.Dockerfile")) == sorted(BUILDERS)


def test_plan_carries_the_rendered_dockerfile(matrix, settings):
    p = plan.make(matrix, matrix.targets["sm_37"], settings)
    assert p.dockerfile == (GOLDEN / "debian-cuda11.Dockerfile").read_text()


def test_builder_fields_reach_the_dockerfile(tmp_path):
    (tmp_path / "t.j2").write_text("FROM {{ base_image }}\nRUN echo {{ builder.suite }} "
                                   "{{ builder.packages | join(',') }}\n")
    out = dockerfile.render(tmp_path, Builder(template="t.j2", suite="sid", packages=("a", "b")),
                            base_image="img:1")
    assert out == "FROM img:1\nRUN echo sid a,b\n"


def test_undefined_template_variable_is_a_config_error(tmp_path):
    (tmp_path / "t.j2").write_text("FROM {{ base_image }}\nRUN {{ builder.no_such_field }}\n")
    with pytest.raises(ConfigError) as info:
        dockerfile.render(tmp_path, Builder(template="t.j2"), base_image="img:1")
    assert "template t.j2" in str(info.value)
    assert "no_such_field" in str(info.value)


def test_undefined_top_level_name_is_a_config_error(tmp_path):
    (tmp_path / "t.j2").write_text("FROM {{ base_imag }}\n")
    with pytest.raises(ConfigError, match="base_imag"):
        dockerfile.render(tmp_path, Builder(template="t.j2"), base_image="img:1")


def test_missing_template_is_a_config_error_naming_the_folder(tmp_path):
    with pytest.raises(ConfigError) as info:
        dockerfile.render(tmp_path, Builder(template="gone.j2"), base_image="img:1")
    assert "'gone.j2' not found" in str(info.value)
    assert str(tmp_path) in str(info.value)
