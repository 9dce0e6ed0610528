"""The whole pipeline on a generated mini project: build -> tarball -> unpack -> run the binary."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from docker.types import Mount

from pipeline import orchestrate, stages
from pipeline.config import targets
from pipeline.errors import CommandError, ModelRunError, PatchError, VerifyError
from pipeline.infra import archive as archives
from pipeline.infra import baseimage, container
from pipeline.infra.log import Log
from pipeline.stages import verify

from . import miniollama
from .conftest import PROJECT, write_matrix


def build(matrix_file: Path, settings):
    matrix = targets.load(matrix_file)
    plan = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    return plan, orchestrate.build_target(plan, settings)


def unpack(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        archives.extract(tar, dest, tar.getmembers())
    return dest


def run_packaged(engine, settings, root: Path, *args: str) -> str:
    """Run the packaged binary in a clean container of the base image: no toolchain, no build tree."""
    out = engine.containers.run(
        baseimage.name(settings.image_prefix, "trixie"), ["/opt/ollama/bin/ollama", *args], remove=True,
        mounts=[Mount("/opt/ollama", str(root), type="bind", read_only=True)],
    )
    return out.decode()


def leftover_containers(engine, settings) -> list:
    """Containers of this test's builds (others may run side by side)."""
    log = settings.dist / "cpu" / "build.log"
    return engine.containers.list(all=True, filters={"label": f"{container.LOG_LABEL}={log}"})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_mini_project_builds_into_a_tarball_whose_binary_reports_the_stamped_version(
        engine, mini_project, settings_for, tmp_path):
    repo, commit = mini_project
    settings = settings_for(write_matrix(tmp_path / "targets.toml", repo, commit))
    _plan, outcome = build(settings.targets_file, settings)

    assert outcome.archive == settings.dist / "cpu" / "ollama-1.2.3-cpu.tar.gz"
    assert [name for name, _, _ in outcome.stages] == [s.name for s in stages.select(stages.STAGES)]
    with tarfile.open(outcome.archive) as tar:
        names = tar.getnames()
        assert all(m.uid == 0 and m.gid == 0 for m in tar.getmembers())
    assert names == sorted(names)
    for expected in ("bin/ollama", "lib/ollama/libggml-base.so", "lib/ollama/libggml-cpu.so",
                     "lib/ollama/manifest.json"):
        assert expected in names

    root = unpack(outcome.archive, tmp_path / "unpacked")
    assert run_packaged(engine, settings, root, "--version").strip() == "ollama version is 1.2.3+cpu"
    # The binary finds its backend through the package layout, as Ollama does.
    assert run_packaged(engine, settings, root, "backends").strip() == "backend cpu"

    log = outcome.log.read_text()
    chosen = [s.name for s in stages.select(stages.STAGES)]
    assert f"] ==> stage {chosen.index('build') + 1}/{len(chosen)} build\n" in log
    assert "+ cmake --preset CPU" in log and "<== package: done" in log
    assert (settings.dist / "cpu" / "manifest.json").exists()
    assert leftover_containers(engine, settings) == []


def test_second_build_with_nothing_changed_reuses_every_stage(engine, mini_project, settings_for, tmp_path):
    repo, commit = mini_project
    settings = settings_for(write_matrix(tmp_path / "targets.toml", repo, commit))
    _, first = build(settings.targets_file, settings)
    digest = sha256(first.archive)

    _, second = build(settings.targets_file, settings)

    assert [(name, state) for name, state, _ in second.stages] == [
        (s.name, "cached") for s in stages.select(stages.STAGES)]
    assert sha256(second.archive) == digest
    assert "cached (" in second.log.read_text()


def test_outputs_belong_to_the_invoking_user(engine, mini_project, settings_for, tmp_path):
    repo, commit = mini_project
    settings = settings_for(write_matrix(tmp_path / "targets.toml", repo, commit))
    plan, _ = build(settings.targets_file, settings)
    built = settings.cache / "builds" / f"cpu-{plan.hashes['build'][:24]}"
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in built.rglob("*")}
    assert owners == {(os.getuid(), os.getgid())}


def test_failed_build_keeps_the_last_good_archive_and_removes_its_container(
        engine, mini_project, settings_for, tmp_path):
    repo, commit = mini_project
    matrix = write_matrix(tmp_path / "targets.toml", repo, commit)
    settings = settings_for(matrix)
    _, good = build(matrix, settings)
    good_digest = sha256(good.archive)

    (repo / "main.go").write_text((repo / "main.go").read_text() + "\nthis is not Go\n")
    broken = miniollama.commit_files(repo, "break the build", tag="v1.2.3")
    write_matrix(matrix, repo, broken)

    with pytest.raises(CommandError) as failure:
        build(matrix, settings)

    assert "go build" in str(failure.value) and "build.log" in str(failure.value)
    assert sha256(good.archive) == good_digest
    assert not list(settings.dist.rglob("*.partial"))
    assert leftover_containers(engine, settings) == []
    assert "<== build: failed" in (settings.dist / "cpu" / "build.log").read_text()


HEADER = """

Description: {description}
Author: Fixture
Origin: vendor
Upstream-Status: Pending
Applies-To: >=1.2
Targets: cpu
"""


def test_patch_series_is_applied_before_the_build(engine, mini_project, settings_for, tmp_path):
    repo, commit = mini_project
    main_go = repo / "main.go"
    main_go.write_text(main_go.read_text().replace("ollama version is", "patched ollama version is"))
    patched = miniollama.commit_files(repo, "say patched" + HEADER.format(description="say it"))
    (tmp_path / "patches").mkdir()
    miniollama.git(repo, "format-patch", "--zero-commit", "--no-signature", "--full-index", "-N", "-1",
                   patched, "-o", str(tmp_path / "patches"))
    miniollama.git(repo, "reset", "--hard", "--quiet", "v1.2.3")

    settings = settings_for(write_matrix(tmp_path / "targets.toml", repo, commit))
    plan, outcome = build(settings.targets_file, settings)

    assert [p.name for p in plan.patches] == ["0001-say-patched.patch"]
    root = unpack(outcome.archive, tmp_path / "unpacked")
    assert run_packaged(engine, settings, root, "--version").strip() == \
        "patched ollama version is 1.2.3+cpu"
    manifest = json.loads((settings.dist / "cpu" / "manifest.json").read_text())
    assert manifest["patches"][0]["name"] == "0001-say-patched.patch"
    assert manifest["patches"][0]["upstream_status"] == "Pending"


def test_patch_that_does_not_apply_stops_before_any_build(engine, mini_project, settings_for, tmp_path):
    repo, commit = mini_project
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "0001-stale.patch").write_text(
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        "From: Fixture <fixture@example.invalid>\nSubject: [PATCH] stale"
        + HEADER.format(description="stale") + "---\n"
        "diff --git a/main.go b/main.go\n--- a/main.go\n+++ b/main.go\n"
        "@@ -1,3 +1,3 @@\n-package nothere\n+package main\n \n /*\n")
    settings = settings_for(write_matrix(tmp_path / "targets.toml", repo, commit))
    matrix = targets.load(settings.targets_file)
    plan = stages.plan_for(matrix, matrix.targets["cpu"], settings)

    with pytest.raises(PatchError, match=r"0001-stale.patch does not apply.*main.go"):
        orchestrate.build_target(plan, settings)

    trees = settings.cache / "trees"
    patched = f"patched-{plan.hashes['patches'][:24]}"
    assert not any(p.name.startswith((patched, f".{patched}")) for p in trees.iterdir()), \
        "no patched tree and no staging folder of it is left"
    assert (trees / f"source-{plan.hashes['source'][:24]}").is_dir()
    assert not (settings.dist / "cpu" / "ollama-1.2.3-cpu.tar.gz").exists()


def test_interrupted_build_removes_its_container_and_leaves_no_archive(
        engine, mini_project, settings_for, tmp_path):
    repo, _commit = mini_project
    # A slow step makes sure the interrupt lands while the container runs.
    (repo / "CMakeLists.txt").write_text(miniollama.CMAKE + 'execute_process(COMMAND sleep 120)\n')
    slow = miniollama.commit_files(repo, "slow configure", tag="v1.2.3")
    settings = settings_for(write_matrix(tmp_path / "targets.toml", repo, slow))
    env = {k: v for k, v in os.environ.items() if k != "OLLAMA_SOURCE"}
    env.update(PIPELINE_CACHE=str(settings.cache), PIPELINE_PATCHES=str(settings.patches_dir))
    # Ctrl-C as a terminal sends it: SIGINT at its default, whatever this test runner inherited (a
    # runner started in the background has SIGINT ignored, and so would the build).
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "build", "cpu", "--targets-file", str(settings.targets_file),
         "--dist", str(settings.dist)], cwd=PROJECT, env=env, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = settings.dist / "cpu" / "build.log"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (log.exists() and "+ cmake --preset" in log.read_text()):
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.5)
    assert leftover_containers(engine, settings), "the build container should be running"

    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)

    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert leftover_containers(engine, settings) == []
    assert not (settings.dist / "cpu" / "ollama-1.2.3-cpu.tar.gz").exists()
    assert not list(settings.dist.rglob("*.partial"))


def test_verify_names_a_library_missing_from_the_package(engine, mini_project, settings_for, tmp_path):
    repo, commit = mini_project
    settings = settings_for(write_matrix(tmp_path / "targets.toml", repo, commit))
    _, outcome = build(settings.targets_file, settings)
    root = unpack(outcome.archive, tmp_path / "unpacked")
    (root / "lib/ollama/libggml-base.so").unlink()
    # The manifest inside agrees (a package built without it): the file check passes, the library
    # resolution in the clean container must name what is missing.
    inner = root / "lib/ollama/manifest.json"
    doc = json.loads(inner.read_text())
    doc["files"] = [f for f in doc["files"] if f["path"] != "lib/ollama/libggml-base.so"]
    inner.write_text(json.dumps(doc))
    broken = tmp_path / "broken" / outcome.archive.name
    broken.parent.mkdir()
    with tarfile.open(broken, "w:gz") as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=path.relative_to(root).as_posix(), recursive=False)

    with pytest.raises(VerifyError, match=r"libggml-cpu.so: does not load .*: libggml-base.so: cannot"), \
            Log("verify", tmp_path / "verify.log") as log:
        verify.verify_archive(broken, settings, log)


def test_a_binary_linked_without_upstreams_release_flags_fails_verify_in_gins_debug_mode(
        engine, mini_project, settings_for, tmp_path):
    repo, commit = mini_project
    # The project's own matrix links server.mode=release (the first test's build passes verify); here
    # the [[upstream.release_build]] rules are left out, as the pipeline built before them.
    settings = settings_for(write_matrix(tmp_path / "targets.toml", repo, commit, release_build=False))
    matrix = targets.load(settings.targets_file)
    plan = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    assert "server.mode=release" not in " ".join(plan.steps[-1].argv)

    with pytest.raises(ModelRunError) as failure:
        orchestrate.build_target(plan, settings)
    assert failure.value.step == "serve"
    assert "the server runs in gin's debug mode ([GIN-debug] [WARNING] Running in \"debug\" mode." in str(
        failure.value)


def test_the_release_flags_reach_the_binary_and_the_backends(engine, mini_project, settings_for, tmp_path):
    repo, commit = mini_project
    # A cache of its own: the build runs (another test's build of the same hash would be reused).
    settings = settings_for(write_matrix(tmp_path / "targets.toml", repo, commit), cache=tmp_path / "cache")
    plan, outcome = build(settings.targets_file, settings)
    go = next(s for s in plan.steps if s.label == "go build")
    assert "-X=github.com/ollama/ollama/server.mode=release" in go.argv[4]
    assert {"CGO_CFLAGS": "-O3", "CGO_CXXFLAGS": "-O3"}.items() <= dict(go.env).items()
    configure = next(s for s in plan.steps if s.argv[:2] == ("cmake", "--preset"))
    assert ("LDFLAGS", "-s") in configure.env
    log = outcome.log.read_text()
    # Configured for Ninja (its counter in the log), and the backends linked with upstream's LDFLAGS=-s.
    assert "[4/4 100%] Linking C shared library lib/ollama/libggml-cpu.so" in log
    # verify's model run served without gin's debug lines: it fails a server that writes them (above).
    assert "verify" in outcome.results
    root = unpack(outcome.archive, tmp_path / "unpacked")
    assert "ollama version is 1.2.3+cpu" in run_packaged(engine, settings, root, "--version")
