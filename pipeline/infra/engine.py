"""The Docker engine client (DOCKER_HOST is honoured, ssh:// and tcp:// included)."""

from __future__ import annotations

import functools
import os

import docker.errors

import docker
from pipeline.errors import DockerError


@functools.cache
def client() -> docker.DockerClient:
    host = os.environ.get("DOCKER_HOST", "the local socket")
    try:
        c = docker.from_env(timeout=600, use_ssh_client=host.startswith("ssh://"))
        c.ping()
    except docker.errors.DockerException as exc:
        raise DockerError(f"cannot reach the Docker engine at {host}: {exc}. Start dockerd "
                          "(or `sudo ./bootstrap`), or set DOCKER_HOST") from None
    return c


def network_mode() -> str | None:
    """PIPELINE_DOCKER_NETWORK: the network of image builds and build containers, for an engine whose
    default network cannot reach out (`host` on an engine started with `--bridge=none`, as `bench --disk`
    starts its own); unset: the engine's default network."""
    return os.environ.get("PIPELINE_DOCKER_NETWORK") or None
