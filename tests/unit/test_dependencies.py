"""The Python the tool runs on and what it installs: requires-python, every package pinned in
constraints.txt for every supported Python (one line per Python, environment markers where releases
differ), the installed versions equal to the pins, and every dependency explained in the README."""

from __future__ import annotations

import importlib.metadata
import re
import sys

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipeline.config import loader

from .conftest import PROJECT

CONSTRAINTS = PROJECT / "constraints.txt"
PYPROJECT = loader.read(PROJECT / "pyproject.toml")
# The Pythons the tool supports: requires-python's floor up to the newest the pins were checked on.
PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13", "3.14")


def pins() -> list[Requirement]:
    return [Requirement(line) for line in CONSTRAINTS.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def applies(req: Requirement, python: str) -> bool:
    env = {**default_environment(), "python_version": python, "python_full_version": f"{python}.0"}
    return req.marker is None or req.marker.evaluate(env)


def test_the_tool_runs_on_python_3_9_and_newer():
    assert PYPROJECT["project"]["requires-python"] == ">=3.9"
    assert PYPROJECT["tool"]["ruff"]["target-version"] == "py39"  # lint refuses what 3.9 lacks
    assert "B905" not in PYPROJECT["tool"]["ruff"]["lint"].get("ignore", [])


def test_tomli_only_where_the_standard_library_has_no_tomllib():
    tomli = [Requirement(d) for d in PYPROJECT["project"]["dependencies"] if d.startswith("tomli")]
    assert len(tomli) == 1 and tomli[0].marker is not None
    assert [p for p in PYTHONS if applies(tomli[0], p)] == ["3.9", "3.10"]


def test_every_pin_is_one_exact_version_for_each_supported_python():
    by_name: dict[str, list[Requirement]] = {}
    for req in pins():
        (spec,) = req.specifier
        assert spec.operator == "==" and re.fullmatch(r"\d+(\.\w+)*", spec.version), str(req)
        by_name.setdefault(canonicalize_name(req.name), []).append(req)
    for name, reqs in by_name.items():
        for python in PYTHONS:
            assert len([r for r in reqs if applies(r, python)]) == 1, f"{name} on Python {python}"
    assert {"nox", "ruff", "zizmor", "pytest", "pyyaml", "docker", "jinja2", "gguf", "numpy", "tqdm",
            "tomli", "setuptools"} <= set(by_name)


def requirement_closure() -> dict[str, importlib.metadata.Distribution]:
    """Every distribution the installed project needs here (with its test extra), by name."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [(Requirement("ollama-pipeline[test]"), ())]
    while todo:
        req, extras = todo.pop()
        env = {"extra": ""}
        if req.marker is not None and not any(req.marker.evaluate({**env, "extra": e})
                                              for e in (*extras, "")):
            continue
        name = canonicalize_name(req.name)
        if name in found:
            continue
        try:
            dist = importlib.metadata.distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{req.name} is required here but not installed")
        found[name] = dist
        todo += [(Requirement(r), tuple(req.extras)) for r in dist.requires or []]
    return found


def test_everything_the_project_installs_is_pinned_and_installed_at_its_pin():
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    pinned = {canonicalize_name(r.name): r for r in pins() if applies(r, here)}
    closure = requirement_closure()
    closure.pop("ollama-pipeline")
    assert {"gguf", "numpy", "tqdm", "docker", "zstandard"} <= set(closure)
    for name, dist in closure.items():
        assert name in pinned, f"{name} {dist.version} is installed for the project, not in constraints.txt"
        assert dist.version in pinned[name].specifier, \
            f"{name}: installed {dist.version}, constraints.txt says {pinned[name].specifier}"


def test_the_readme_explains_every_dependency():
    readme = (PROJECT / "README.md").read_text()
    section = readme.split("## Dependencies and why", 1)[1].split("\n## ", 1)[0]
    project = PYPROJECT["project"]
    named = [*project["dependencies"], *project["optional-dependencies"]["test"], "nox", "ruff", "zizmor"]
    for dep in named:
        name = Requirement(dep).name
        assert f"`{name}`" in section, f"{name} is not in the README's Dependencies and why"
