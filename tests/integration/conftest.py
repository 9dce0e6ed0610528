"""Integration tier: the real Docker engine, real compilers, real git.

Without an engine these tests skip locally, saying why; in CI (CI=true) a missing engine is a failure,
so the Docker tier can never pass by being skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.config import loader
from pipeline.config import settings as settings_mod

from . import miniollama

PROJECT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session")
def engine():
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs a Docker engine and none answers: {exc}")
        pytest.skip(f"no Docker engine answers ({exc}); start dockerd to run the Docker tier")
    return client


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One pipeline cache for the whole run; builder images and the base image are shared by tag."""
    return tmp_path_factory.mktemp("pipeline-cache")


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else toml_value(key)


def dump_toml(doc: dict) -> str:
    """Tables of tables of values, and arrays of tables of values: all targets.toml needs."""
    lines = []
    for top, tables in doc.items():
        for name, table in tables.items():
            for entry in table if isinstance(table, list) else [table]:
                lines.append(f"[[{top}.{toml_key(name)}]]" if isinstance(table, list)
                             else f"[{top}.{toml_key(name)}]")
                lines.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in entry.items())
                lines.append("")
    return "\n".join(lines)


@pytest.fixture
def mini_project(tmp_path) -> tuple[Path, str]:
    return miniollama.create(tmp_path / "upstream")


def write_matrix(path: Path, repo: Path, commit: str, *, tag: str = "v1.2.3", name: str = "cpu",
                 release_build: bool = True, upstream: dict | None = None, **target_overrides) -> Path:
    """A targets.toml that builds the mini project with the project's own builders and backends and
    upstream's release build flags (unless `release_build` is false); the target takes the project's
    settings for `name` (builder, backends, GPU archs). The miniature's made-up versions build with the
    in-tree layout (v0.12 - v0.24's interface) unless `upstream` says otherwise ([upstream] tables:
    layouts, llama_cpp)."""
    project = loader.read(PROJECT / "targets.toml")
    own = project["targets"][name]
    target = {"description": f"mini project, {name}", "builder": own.get("builder", "debian-cpu"),
              "backends": own.get("backends", ["cpu"]),
              "source": {"url": str(repo), "tag": tag, "commit": commit,
                         "version_variable": f"{miniollama.MODULE}/version.Version"}}
    if "gpu_archs" in own:
        target["gpu_archs"] = own["gpu_archs"]
    target.update(target_overrides)
    doc = {
        "downloads": project["downloads"],
        "builders": project["builders"],
        "backends": project["backends"],
        "targets": {name: target},
        "upstream": dict(upstream or {"layouts": {"in-tree": ">=0"}}),
    }
    if release_build:
        doc["upstream"].setdefault("release_build", project["upstream"]["release_build"])
    path.write_text(dump_toml(doc))
    return path


@pytest.fixture
def settings_for(tmp_path, cache_dir):
    def make(matrix: Path, **overrides) -> settings_mod.Settings:
        values = {"targets_file": matrix, "dist": tmp_path / "dist", "cache": cache_dir,
                  "patches_dir": tmp_path / "patches"}
        values.update(overrides)
        # The fixture is the source here, whatever the environment says about upstream.
        env = {k: v for k, v in os.environ.items() if k != "OLLAMA_SOURCE" and not k.startswith("PIPELINE_")}
        return settings_mod.Settings.from_env(env, **values)

    return make
