"""Download URLs name no registry host: placeholders are filled from the settings or the tools' own
defaults when a builder image is built."""

from __future__ import annotations

import pytest

from pipeline.config.settings import Settings
from pipeline.errors import ConfigError
from pipeline.infra import registries


def test_go_proxy_placeholder_takes_the_first_proxy_url_of_goproxy():
    s = Settings(go_proxy="https://goproxy.example/mod,direct")
    assert registries.expand("{go_proxy}/golang.org/toolchain/@v/x.zip", s) == \
        "https://goproxy.example/mod/golang.org/toolchain/@v/x.zip"


def test_without_goproxy_the_machines_go_names_its_default(monkeypatch, tmp_path):
    fake = tmp_path / "go"
    fake.write_text("#!/bin/sh\necho 'https://fallback.example,direct'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert registries.go_proxy(Settings(go_proxy="off")) == "https://fallback.example"


def test_no_go_and_no_goproxy_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="set GOPROXY"):
        registries.go_proxy(Settings())


def test_pypi_files_can_be_pointed_at_a_mirror(monkeypatch):
    monkeypatch.setenv("PIPELINE_PYPI_FILES", "https://files.example/")
    assert registries.expand("{pypi_files}/packages/a/b.whl",
                             Settings()) == "https://files.example/packages/a/b.whl"


def test_a_url_without_placeholder_is_kept():
    assert registries.expand("https://vendor.example/cmake.tar.gz",
                             Settings()) == "https://vendor.example/cmake.tar.gz"


def test_the_matrix_names_no_registry_host(matrix):
    for name, builder in matrix.builders.items():
        for d in builder.downloads:
            assert d.url.startswith(registries.PLACEHOLDERS) or builder.flavor == "vendor", (name, d.url)


def test_download_url_overrides_are_read_once_and_checked_like_every_url():
    s = Settings.from_env({"PIPELINE_URL_GO": "https://mirror.example/go.zip"})
    assert s.download_urls == {"go": "https://mirror.example/go.zip"}
    with pytest.raises(ConfigError, match="PIPELINE_URL_GO"):
        Settings.from_env({"PIPELINE_URL_GO": "-o/tmp/x"})
