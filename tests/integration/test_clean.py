"""`clean` against the real engine: a running build's container survives it (and is named), a container
whose owner has ended goes, an image a kept container uses stays; nothing outside its image prefix is
touched. The decoys run under a prefix of this test's own, so the machine's other images, containers
and volumes are never candidates."""

from __future__ import annotations

import contextlib
import re
import secrets
import subprocess
import sys

import docker.errors
import pytest

from pipeline import cli
from pipeline.infra import owner
from pipeline.infra.container import LABEL

BASE = "ollama-pipeline/debian:bullseye"


@pytest.fixture
def decoys(engine, tmp_path, monkeypatch):
    """Under prefix harden-clean-<token>: an image tag, a container of a live owner (a process of this
    test) running `sleep`, and one whose owner has ended."""
    try:
        engine.images.get(BASE)
    except docker.errors.ImageNotFound:
        pytest.skip(f"{BASE} is not here (a build makes it); the decoys run from it")
    prefix = f"harden-clean-{secrets.token_hex(4)}"
    image = f"{prefix}/debian:decoy"
    engine.images.get(BASE).tag(image)
    owner_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True)
    made = []
    try:
        for name, pid in (("live", owner_proc.pid), ("ended", int(ended.stdout))):
            made.append(engine.containers.run(
                image, ["sleep", "600"], detach=True, name=f"{prefix}-{name}",
                labels={LABEL: "cpu", owner.PID_LABEL: str(pid), owner.HOST_LABEL: owner.host()}))
        cache = tmp_path / "cache"
        owner.claim_cache(cache, ())
        monkeypatch.setenv("PIPELINE_CACHE", str(cache))
        monkeypatch.setenv("PIPELINE_DOCKER_PREFIX", prefix)
        yield {"prefix": prefix, "image": image, "live": made[0], "ended": made[1], "pid": owner_proc.pid}
    finally:
        owner_proc.kill()
        owner_proc.wait()
        for box in made:
            with contextlib.suppress(docker.errors.APIError):
                box.remove(force=True)
        with contextlib.suppress(docker.errors.APIError):
            engine.images.remove(image)


def test_a_running_builds_container_survives_clean(engine, decoys, capsys):
    assert cli.main(["clean"]) == 0
    out = capsys.readouterr().out
    live, ended = decoys["live"], decoys["ended"]
    live.reload()
    assert live.status == "running"
    assert re.search(rf"^keeping +container +{live.name} ", out, re.M), out
    assert f"its owner, pid {decoys['pid']} on this host, is running: left alone" in out
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(ended.id)
    assert re.search(rf"^removed +container +{ended.name} .*has ended", out, re.M), out
    # The image the kept container runs stays, named
    assert engine.images.get(decoys["image"]) is not None
    assert "used by a container that is kept" in out
    # Under this prefix only: no line names anything else
    named = [line for line in out.splitlines() if line.startswith(("removed", "keeping"))
             and (" container " in line or " image " in line or " volume " in line)]
    assert all(decoys["prefix"] in line for line in named), named
