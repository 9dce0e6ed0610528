"""What every container that runs a toolchain gets: the invoking user's identity, the per-user compiler
and Go cache volumes, the host's CA bundle and the Go proxy setting. Builds, the maintainer tools and
benchmarks all take their mounts from here."""

from __future__ import annotations

import os

from docker.types import Mount

from pipeline.config.settings import Settings

HOST_CA = "/etc/ssl/host-ca-bundle.crt"
# Named volume -> where the builder images expect it (docker/_runtime.Dockerfile.j2 makes the folders).
VOLUMES = {"ccache": "/cache/ccache", "go-build": "/cache/go-build", "go-mod": "/cache/go-mod"}
# Where a source tree is mounted in a build or tool container.
SRC = "/src"


def user() -> str:
    """Containers run as the invoking user, so nothing they write is owned by root."""
    return f"{os.getuid()}:{os.getgid()}"


def volume_name(settings: Settings, cache: str) -> str:
    # One set per user: ccache and the Go module cache write files only their owner may change.
    return f"{settings.volume_prefix}-{cache}-u{os.getuid()}"


def mounts(settings: Settings) -> tuple[list[Mount], dict[str, str]]:
    """Mounts and environment of a toolchain container: the per-user cache volumes, the host's CA bundle
    (downloads through a TLS-inspecting proxy) and the Go proxy setting."""
    out = [Mount(path, volume_name(settings, name), type="volume") for name, path in VOLUMES.items()]
    env = {}
    if settings.ca_bundle:
        out.append(Mount(HOST_CA, str(settings.ca_bundle.resolve()), type="bind", read_only=True))
        env["SSL_CERT_FILE"] = HOST_CA
    if settings.go_proxy:
        env["GOPROXY"] = settings.go_proxy
    return out, env
