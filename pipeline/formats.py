"""What a package is by name: its archive formats and file name, and the layout inside it.

    ollama-<version>-<target>.tar.zst   (or .tar.gz)

The layout is upstream's release archives' (bin/ollama, lib/ollama/..., share/ollama/), so the Go code
finds its runners where it looks for them. This module is on the ground, beside errors.py: the
configuration checks formats, packaging writes them, verification and releases read them.
"""

from __future__ import annotations

from pathlib import Path

# format: (lowest level, highest level, default level)
FORMATS = {"tar.gz": (1, 9, 9), "tar.zst": (1, 22, 12)}
SUFFIXES = tuple(f".{fmt}" for fmt in FORMATS)
PREFIX = "ollama"


def archive_name(version: str, target: str, fmt: str) -> str:
    """The archive's file name: ollama-0.12.5-gfx1103.tar.zst."""
    return f"{PREFIX}-{version}-{target}.{fmt}"


def is_archive_name(filename: str) -> bool:
    return (Path(filename).name == filename and filename.startswith(f"{PREFIX}-")
            and filename.endswith(SUFFIXES))


def archive_glob(target: str) -> list[str]:
    """Glob patterns matching the archives of `target` (any version, any format)."""
    return [f"{PREFIX}-*-{target}{suffix}" for suffix in SUFFIXES]


class PackageLayout:
    """Paths inside a package, and the manifest's file names inside and beside the archive."""

    BIN = "bin/ollama"
    LIBDIR = "lib/ollama"
    # Files packaging generates into every package (env file, systemd unit, install script, README).
    SHARE = "share/ollama"
    MANIFEST = "manifest.json"
    # The manifest inside the archive, and the one beside it in dist/<target>/ (with the archive's sha256).
    INSIDE = f"{LIBDIR}/{MANIFEST}"
    BESIDE = MANIFEST
    # Beside the archive too: its sha256, in `sha256sum` form.
    SUMS = "SHA256SUMS"
