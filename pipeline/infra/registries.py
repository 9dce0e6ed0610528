"""Where downloads of builder images come from, without the project naming any registry's host.

A download's URL in targets.toml may start with a placeholder that is filled in when the image is
built (never hashed: moving to another proxy or mirror does not change an image):

* `{go_proxy}`: the Go module proxy, the first URL of GOPROXY (settings), else of `go env GOPROXY` as
  this machine's Go reports it (Go's own default).
* `{pypi_files}`: where the Python package index serves files, as this machine's pip knows it
  (PIPELINE_PYPI_FILES overrides it for a mirror with the same layout).

Every download's sha256 is still checked in the image, wherever the bytes came from.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from pipeline.config.settings import Settings
from pipeline.errors import ConfigError

PLACEHOLDERS = ("{go_proxy}", "{pypi_files}")


def expand(url: str, settings: Settings) -> str:
    """`url` with its placeholder filled in; a URL without one is returned as it is."""
    if url.startswith("{go_proxy}"):
        return go_proxy(settings) + url.removeprefix("{go_proxy}")
    if url.startswith("{pypi_files}"):
        return pypi_files() + url.removeprefix("{pypi_files}")
    return url


def _first_url(value: str) -> str | None:
    for entry in value.replace("|", ",").split(","):
        entry = entry.strip().rstrip("/")
        if entry.startswith(("https://", "http://", "file://")):
            return entry
    return None


def go_proxy(settings: Settings) -> str:
    if settings.go_proxy and (found := _first_url(settings.go_proxy)):
        return found
    go = shutil.which("go")
    if go:
        try:
            out = subprocess.run([go, "env", "GOPROXY"], capture_output=True, text=True, timeout=30,
                                 check=False, env={**os.environ, "GOTOOLCHAIN": "local"}).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        if found := _first_url(out):
            return found
    raise ConfigError("no Go module proxy is known for the builder's Go toolchain download: set GOPROXY to "
                      "a proxy URL, or install Go (its `go env GOPROXY` names the default)")


def pypi_files() -> str:
    if override := os.environ.get("PIPELINE_PYPI_FILES"):
        return override.rstrip("/")
    try:
        from pip._internal.models.index import PyPI
    except ImportError:
        raise ConfigError("cannot tell where the Python package index serves files (pip is not "
                          "importable): set PIPELINE_PYPI_FILES to its file URL root") from None
    return f"https://{PyPI.file_storage_domain}"
