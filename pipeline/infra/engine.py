"""The Docker engine client (DOCKER_HOST is honoured, ssh:// and tcp:// included)."""

from __future__ import annotations

import contextlib
import functools
import grp
import os
import pwd
from collections.abc import Iterator

import docker.errors

import docker
from pipeline.errors import DockerError


def client() -> docker.DockerClient:
    """The client of the engine DOCKER_HOST names now (one per engine, made once)."""
    return _connect(os.environ.get("DOCKER_HOST", ""))


DEFAULT_SOCKET = "/var/run/docker.sock"


@functools.cache
def _connect(docker_host: str) -> docker.DockerClient:
    host = docker_host or "the local socket"
    try:
        c = docker.from_env(timeout=600, use_ssh_client=host.startswith("ssh://"))
        c.ping()
    except docker.errors.DockerException as exc:
        raise DockerError(f"cannot reach the Docker engine at {host}: {exc}. "
                          f"{advice(docker_host)}") from None
    return c


def socket_of(docker_host: str) -> str | None:
    """The local socket file DOCKER_HOST names (unset: Docker's default), or None for a remote engine."""
    if not docker_host:
        return DEFAULT_SOCKET
    if docker_host.startswith("unix://"):
        return docker_host[len("unix://"):]
    return None


def advice(docker_host: str) -> str:
    """What to do when the engine does not answer, from what the socket file says: permission
    (the docker group), no engine (start it), or a remote engine (DOCKER_HOST)."""
    path = socket_of(docker_host)
    if path is None:
        return "Check that the engine DOCKER_HOST names is running and reachable, or unset DOCKER_HOST"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ("No engine listens there: start it (`sudo systemctl start docker`, or `sudo ./bootstrap`), "
                "or set DOCKER_HOST")
    except OSError as exc:
        return f"Its socket {path} cannot be read ({exc.strerror}); or set DOCKER_HOST"
    if os.access(path, os.R_OK | os.W_OK):
        return ("The socket exists but no engine answers: start it (`sudo systemctl start docker`, or "
                "`sudo ./bootstrap`), or set DOCKER_HOST")
    return permission_advice(path, st.st_gid)


def permission_advice(path: str, gid: int) -> str:
    """The fix for a socket this user may not open: join its group (or be root)."""
    user = _user_name()
    try:
        group = grp.getgrgid(gid)
    except KeyError:
        return f"This user ({user}) may not use {path} (group id {gid}); run as root or ask for access"
    if gid in os.getgroups() or os.getegid() == gid:
        return f"This user ({user}) is in group {group.gr_name} but may not use {path}; check its permissions"
    if user in group.gr_mem:
        return (f"This user ({user}) was added to the {group.gr_name} group after this login started: log in "
                f"again, or run `newgrp {group.gr_name}` in this shell, then try again")
    return (f"This user ({user}) may not use {path}: add it to the {group.gr_name} group "
            f"(`sudo usermod -aG {group.gr_name} {user}`, which `sudo ./bootstrap` does), then log in again "
            f"or run `newgrp {group.gr_name}`; or run as root")


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


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
