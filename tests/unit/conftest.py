"""Shared fixtures of the unit tier: fast, no Docker engine, real files and real git in tmp_path."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import docker.client
import pytest

import docker
import pipeline.infra.engine
from pipeline.config import targets
from pipeline.config.settings import Settings
from pipeline.infra.log import Log

PROJECT = Path(__file__).resolve().parents[2]
TARGETS_FILE = PROJECT / "targets.toml"


class DockerEngineReached(AssertionError):
    """A unit test reached for the Docker engine; unit tests must not need one."""


class _Guard:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def trap(self, what: str):
        def refuse(*args, **kwargs):
            self.calls.append(what)
            raise DockerEngineReached(
                f"unit test reached for the Docker engine via {what}; unit tests run without Docker "
                "(move the test to tests/integration, or keep the engine out of the code path)")
        return refuse


@pytest.fixture(autouse=True)
def docker_guard(monkeypatch):
    """Fail any unit test that touches the engine, even if the code under test swallows the error."""
    guard = _Guard()
    monkeypatch.setattr(pipeline.infra.engine, "client", guard.trap("pipeline.infra.engine.client()"))
    for module in (docker, docker.client):
        monkeypatch.setattr(module, "from_env", guard.trap("docker.from_env()"))
        monkeypatch.setattr(module, "DockerClient", guard.trap("docker.DockerClient()"))
    monkeypatch.setattr(docker, "APIClient", guard.trap("docker.APIClient()"))
    yield guard
    if guard.calls:
        pytest.fail(f"unit test reached for the Docker engine: {', '.join(guard.calls)}", pytrace=False)


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch, tmp_path_factory):
    """Git and the pipeline see neither the user's configuration nor pipeline variables of the shell."""
    home = tmp_path_factory.mktemp("home")
    for var in ("PIPELINE_TARGETS", "PIPELINE_DIST", "PIPELINE_CACHE", "PIPELINE_PATCHES", "OLLAMA_SOURCE",
                "PIPELINE_DEBIAN_MIRROR", "GOPROXY", "PIPELINE_JOBS", "PIPELINE_KEEP_CONTAINERS",
                "PIPELINE_TRACEBACK", "XDG_CACHE_HOME", "SOURCE_DATE_EPOCH", "GIT_DIR", "GIT_WORK_TREE",
                "PIPELINE_DOCKER_NETWORK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Test")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "test@example.invalid")
        monkeypatch.setenv(f"GIT_{who}_DATE", "2025-01-02T03:04:05+00:00")


@pytest.fixture(autouse=True)
def restore_sigterm():
    """cli.main() installs a SIGTERM handler; put pytest's back."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def git(cwd: Path, *args: str, stdin: bytes | None = None) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, input=stdin, capture_output=True, check=False)
    if out.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}: {out.stderr.decode()}")
    return out.stdout.decode().strip()


def make_repo(path: Path, files: dict[str, str | bytes]) -> Path:
    """A git repository at path with one commit holding files."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    commit_files(path, files, "initial")
    return path


def commit_files(repo: Path, files: dict[str, str | bytes], message: str) -> str:
    for name, content in files.items():
        f = repo / name
        f.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            f.write_bytes(content)
        else:
            f.write_text(content)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def retagged(text: str, tag: str, commit: str) -> str:
    """targets.toml's text with the default upstream tag and commit replaced (a generated repository's
    v1.0.0, say) and the caps at v0.30 lifted: generated versions are numbered from 1.0."""
    text = text.replace('tag = "v0.12.5"', f'tag = "{tag}"')
    text = text.replace("3d32249c749c6f77c1dc8a7cb55ae74fc2f4c08b", commit)
    return re.sub(r'^versions = "<0\.30"\n', "", text, flags=re.M).replace(',<0.30"', '"')


@pytest.fixture
def matrix() -> targets.Matrix:
    return targets.load(TARGETS_FILE)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(targets_file=TARGETS_FILE, patches_dir=tmp_path / "patches",
                    templates_dir=PROJECT / "docker", dist=tmp_path / "dist", cache=tmp_path / "cache")


@pytest.fixture
def log(tmp_path):
    with Log("test", tmp_path / "logs" / "test.log", console=open(os.devnull, "w")) as lg:
        yield lg
        lg.console.close()


def patch_text(subject: str, diff: str, *, targets: str = "cpu", applies_to: str = ">=0.12.4",
               status: str = "Pending", description: str | None = None) -> str:
    """A patch in `git format-patch` form with the series header block."""
    return (
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        "From: Test <test@example.invalid>\n"
        "Date: Sun, 22 Nov 2026 00:00:00 +0000\n"
        f"Subject: [PATCH] {subject}\n\n"
        "Why the change is needed.\n\n"
        f"Description: {description or subject}\n"
        "Author: Test\n"
        "Origin: vendor\n"
        f"Upstream-Status: {status}\n"
        f"Applies-To: {applies_to}\n"
        f"Targets: {targets}\n"
        "---\n"
        f"{diff}"
    )


SIMPLE_DIFF = ("diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n")


def package_stage(the_plan, build_root: Path, dist: Path, log: Log, *, epoch: int = 1_700_000_000,
                  code_objects=None, image_id: str = "sha256:" + "ab" * 32):
    """Run the package stage on a fake build (`build_root`: bin/ollama, lib/ollama/...) into `dist`.

    The unit tier has no Docker engine, so the library closure (which copies libraries out of the
    builder image) is left out: the plan's builder names no policy. The Docker tier packages with it.
    Returns (Packaged, StageResult)."""
    import dataclasses

    from pipeline.infra.log import StageResult
    from pipeline.stages import package
    from pipeline.stages.plan import Context
    from pipeline.stages.results import BuilderImage, BuildResult

    plan = dataclasses.replace(the_plan, builder=dataclasses.replace(the_plan.builder, policy=""))
    image = BuilderImage(tag="ollama-pipeline/builder-test:0", id=image_id)
    build = BuildResult(root=build_root, image=image,
                        version=plan.version, source_date_epoch=epoch, seconds=0.0, steps=(),
                        code_objects=code_objects or {})
    handle = StageResult()
    ctx = Context(name="package", plan=plan, settings=Settings(dist=dist, cache=dist.parent / "cache"),
                  log=log, stage=handle)
    return package.run(ctx, build=build, host_builder=image), handle


def fake_ollama_prefix(tmp_path: Path, script: str) -> Path:
    """An installed prefix whose bin/ollama is `script` (a shell stand-in for the server and client), with
    a model file tiny.gguf beside it; returns the prefix."""
    root = tmp_path / "prefix"
    (root / "bin").mkdir(parents=True)
    ollama = root / "bin" / "ollama"
    ollama.write_text(script)
    ollama.chmod(0o755)
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    return root
