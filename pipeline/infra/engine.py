"""The Docker engine client (DOCKER_HOST is honoured, ssh:// and tcp:// included)."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

import docker.errors

import docker
from pipeline.errors import DockerError


def client() -> docker.DockerClient:
    """The client of the engine DOCKER_HOST names now (one per engine, made once)."""
    return _connect(os.environ.get("DOCKER_HOST", ""))


@functools.cache
def _connect(docker_host: str) -> docker.DockerClient:
    host = docker_host or "the local socket"
    try:
        c = docker.from_env(timeout=600, use_ssh_client=host.startswith("ssh://"))
        c.ping()
    except docker.errors.DockerException as exc:
        raise DockerError(f"cannot reach the Docker engine at {host}: {exc}. Start dockerd "
                          "(or `sudo ./bootstrap`), or set DOCKER_HOST") from None
    return c


@contextlib.contextmanager
def using(host: str, network: str | None = None) -> Iterator[None]:
    """Talk to the engine at `host` (and build on `network`) inside the block, then to the one before."""
    saved = {k: os.environ.get(k) for k in ("DOCKER_HOST", "PIPELINE_DOCKER_NETWORK")}
    os.environ["DOCKER_HOST"] = host
    if network:
        os.environ["PIPELINE_DOCKER_NETWORK"] = network
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def network_mode() -> str | None:
    """PIPELINE_DOCKER_NETWORK: the network of image builds and build containers, for an engine whose
    default network cannot reach out (`host` on the engines `bench` starts: their bridge has no NAT
    rules); unset: the engine's default network."""
    return os.environ.get("PIPELINE_DOCKER_NETWORK") or None
