"""Run-time settings: where things go and what replaces the network. Not part of targets.toml,
because they describe the machine, not the build."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    targets_file: Path = PROJECT_ROOT / "targets.toml"
    patches_dir: Path = PROJECT_ROOT / "patches"
    templates_dir: Path = PROJECT_ROOT / "docker"
    dist: Path = PROJECT_ROOT / "dist"
    cache: Path = Path.home() / ".cache" / "ollama-pipeline"
    # Replaces every target's source.url: a git URL or a local repository (read in place).
    source: str | None = None
    # Debian mirror for base images and apt inside builders; None: the machine's apt sources.
    debian_mirror: str | None = None
    go_proxy: str | None = None
    # CA bundle handed to build containers, so downloads (Go modules) trust what this machine trusts:
    # behind a TLS-inspecting proxy the image's own bundle is not enough.
    ca_bundle: Path | None = None
    jobs: int = os.cpu_count() or 2
    keep_containers: bool = False
    image_prefix: str = "ollama-pipeline"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> Settings:
        env = dict(os.environ if env is None else env)
        values: dict = {}
        paths = {"targets_file": "PIPELINE_TARGETS", "dist": "PIPELINE_DIST", "cache": "PIPELINE_CACHE",
                 "patches_dir": "PIPELINE_PATCHES"}
        for field, var in paths.items():
            if env.get(var):
                values[field] = Path(env[var])
        if "PIPELINE_CACHE" not in env and env.get("XDG_CACHE_HOME"):
            values["cache"] = Path(env["XDG_CACHE_HOME"]) / "ollama-pipeline"
        if env.get("OLLAMA_SOURCE"):
            values["source"] = env["OLLAMA_SOURCE"]
        if env.get("PIPELINE_DEBIAN_MIRROR"):
            values["debian_mirror"] = env["PIPELINE_DEBIAN_MIRROR"]
        if env.get("GOPROXY"):
            values["go_proxy"] = env["GOPROXY"]
        ca = env.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
        if env.get("PIPELINE_HOST_CA", "1") != "0" and Path(ca).is_file():
            values["ca_bundle"] = Path(ca)
        if env.get("PIPELINE_JOBS"):
            values["jobs"] = int(env["PIPELINE_JOBS"])
        values["keep_containers"] = env.get("PIPELINE_KEEP_CONTAINERS", "") not in ("", "0")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


_DEB822_URI = re.compile(r"^URIs:\s*(\S+)", re.MULTILINE)
_ONE_LINE = re.compile(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", re.MULTILINE)


def machine_debian_mirror(etc: Path = Path("/etc/apt")) -> str | None:
    """The first Debian archive (not -security, not a third-party repo) in this machine's apt sources."""
    texts: list[str] = []
    for f in [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*"))]:
        if f.is_file() and f.suffix in ("", ".list", ".sources"):
            texts.append(f.read_text(errors="replace"))
    for text in texts:
        for url in _DEB822_URI.findall(text) + _ONE_LINE.findall(text):
            if url.rstrip("/").endswith("/debian"):
                return url.rstrip("/")
    return None
