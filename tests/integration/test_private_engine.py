"""The disk benchmark's private dockerd, started for real beside the machine's engine: the machine's
engine and its default bridge (docker0) must come through untouched. A dockerd started with
--bridge=none deletes docker0, which cut every later container of the machine's engine off its
network; this is the test that would have caught it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from pipeline.tools import bench


def _link(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("dockerd") or not shutil.which("ip"),
                    reason="starts a dockerd of its own: needs root, dockerd and ip")
def test_the_private_engine_leaves_the_machines_engine_and_bridge_alone(engine, tmp_path):
    if not _link("docker0"):
        pytest.skip("the machine's engine has no docker0 bridge to protect")
    # Short: the engine's sockets live under it.
    root = Path(tempfile.mkdtemp(prefix="opdt-"))
    try:
        with bench.PrivateEngine(root / "engine", root / "docker", tmp_path / "dockerd.log") as eng:
            assert _link(eng.bridge)
            assert bench.docker.DockerClient(base_url=eng.host).version()["Version"]
            assert _link("docker0"), "the private engine deleted the machine's docker0"
        assert not _link(eng.bridge)
    finally:
        bench._remove_tree(root)
    assert _link("docker0")
    engine.ping()
    # The machine's engine still gets containers onto its default network.
    out = engine.containers.run(_any_image(engine), ["cat", "/sys/class/net/eth0/operstate"], remove=True)
    assert out.strip() == b"up"


def _any_image(engine) -> str:
    for image in engine.images.list():
        for tag in image.tags:
            if tag.startswith("ollama-pipeline/debian:"):
                return tag
    pytest.skip("no base image on the machine's engine yet")
