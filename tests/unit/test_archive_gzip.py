"""The runtime image's build context carries the package as a gzip'd tar (what Docker's ADD unpacks),
made from the package archive in either format."""

from __future__ import annotations

import tarfile

import pytest

from pipeline.errors import PackageError
from pipeline.infra import archive


@pytest.mark.parametrize("fmt", ["tar.zst", "tar.gz"])
def test_the_package_becomes_a_gzip_tar_with_the_same_entries(tmp_path, fmt):
    src = tmp_path / "bin" / "ollama"
    src.parent.mkdir()
    src.write_bytes(b"\0" * (4 << 20) + b"elf")  # zeroed GPU code costs next to nothing gzip'd
    path = tmp_path / f"ollama-1.0-cpu.{fmt}"
    with open(path, "wb") as f:
        archive.write(f, [("bin/ollama", src)], {"share/ollama/install.sh": b"#!/bin/sh\n"}, epoch=1, fmt=fmt,
                      level=3)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    packed = archive.gzip_tar(path, scratch)
    assert packed == path if fmt == "tar.gz" else packed == scratch / "ollama-1.0-cpu.tar.gz"
    assert packed.read_bytes()[:2] == archive.GZIP_MAGIC
    assert packed.stat().st_size < 1 << 20
    with tarfile.open(packed) as tar:
        members = {m.name: m for m in tar}
        assert set(members) == {"bin/ollama", "share/ollama/install.sh"}
        assert tar.extractfile("bin/ollama").read() == src.read_bytes()
        assert members["share/ollama/install.sh"].mode & 0o111


def test_a_truncated_archive_is_one_error(tmp_path):
    path = tmp_path / "ollama-1.0-cpu.tar.zst"
    path.write_bytes(archive.ZSTD_MAGIC + b"\0\0")
    with pytest.raises(PackageError, match=r"ollama-1.0-cpu.tar.zst"):
        archive.gzip_tar(path, tmp_path)
    with pytest.raises(PackageError, match="not a package archive"):
        archive.gzip_tar(tmp_path / "ollama.zip", tmp_path)
