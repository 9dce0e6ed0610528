"""Download URLs name no registry host: placeholders are filled from the settings or the tools' own
defaults when a builder image is built."""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
import venv

import pytest

from pipeline.config.settings import Settings
from pipeline.errors import ConfigError
from pipeline.infra import registries

from .conftest import PROJECT


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


def test_pypi_files_can_be_pointed_at_a_mirror():
    s = Settings.from_env({"PIPELINE_PYPI_FILES": "https://files.example/"})
    assert registries.expand("{pypi_files}/packages/a/b.whl", s) == "https://files.example/packages/a/b.whl"
    with pytest.raises(ConfigError, match="PIPELINE_PYPI_FILES"):
        Settings.from_env({"PIPELINE_PYPI_FILES": "-o/tmp/x"})


WHEEL = "cmake-3.31.6-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"


@pytest.fixture
def index():
    """A real HTTP server holding a PEP 503 simple index with one project page (relative links, as
    index servers write them); yields its /simple/ URL."""
    page = (f'<html><body><a href="../../files/aa/{WHEEL}#sha256=00">{WHEEL}</a>'
            '<a href="../../files/bb/cmake-3.31.6.tar.gz">cmake-3.31.6.tar.gz</a></body></html>').encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/simple/cmake/":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/simple/"
    server.shutdown()
    server.server_close()


def no_pip_config(monkeypatch, tmp_path):
    for var in [v for v in os.environ if v.startswith("PIP_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


def test_a_pypi_file_is_looked_up_on_the_index_pip_is_configured_with(monkeypatch, tmp_path, index):
    no_pip_config(monkeypatch, tmp_path)
    monkeypatch.setenv("PIP_INDEX_URL", index)
    url = registries.expand(f"{{pypi_files}}/packages/59/e8/0969/{WHEEL}", Settings())
    assert url == index.replace("/simple/", f"/files/aa/{WHEEL}")


def test_the_index_url_of_pips_configuration_files_is_used(monkeypatch, tmp_path, index):
    no_pip_config(monkeypatch, tmp_path)
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nindex-url = http://127.0.0.1:1/nowhere\n[install]\nindex_url = {index}\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    assert registries.pip_config_files()[-1] == conf
    assert registries.pip_index_url() == index
    assert registries.pypi_file(f"/packages/x/{WHEEL}", Settings()).endswith(f"/files/aa/{WHEEL}")


def test_pips_configuration_files_are_read_in_pips_order(tmp_path):
    home = tmp_path / "home"
    (home / ".config" / "pip").mkdir(parents=True)
    (home / ".config" / "pip" / "pip.conf").write_text("[global]\nindex-url = https://user.example/simple\n")
    env = {"HOME": str(home), "XDG_CONFIG_DIRS": str(tmp_path / "none")}
    assert registries.pip_index_url(env, pythons=[]) == "https://user.example/simple"
    assert registries.pip_index_url({**env, "PIP_INDEX_URL": "https://env.example/simple"},
                                    pythons=[]) == "https://env.example/simple"
    named = tmp_path / "named.conf"
    named.write_text("[global]\ntimeout = 5\n")  # an existing PIP_CONFIG_FILE hides the user's file
    with pytest.raises(ConfigError, match="PIP_INDEX_URL"):
        registries.pip_index_url({**env, "PIP_CONFIG_FILE": str(named)}, pythons=[])


def test_without_configuration_pips_own_default_index_is_asked_from_pip(tmp_path):
    found = registries.pip_index_url({"PIP_CONFIG_FILE": os.devnull})
    assert found.startswith("https://") and "/simple" in found


def test_a_venv_without_pip_and_without_configuration_is_one_clear_error(tmp_path):
    venv.create(tmp_path / "venv", with_pip=False)
    python = str(tmp_path / "venv" / "bin" / "python")
    assert subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode != 0
    with pytest.raises(ConfigError, match=r"pip is not installed here and PIP_INDEX_URL is unset.*"
                                          "PIPELINE_PYPI_FILES"):
        registries.pip_index_url({"PIP_CONFIG_FILE": os.devnull}, pythons=[[python, "-m", "pip"]])


def test_a_file_the_index_does_not_list_and_an_unreachable_index_are_one_line(monkeypatch, tmp_path, index):
    no_pip_config(monkeypatch, tmp_path)
    monkeypatch.setenv("PIP_INDEX_URL", index)
    with pytest.raises(ConfigError, match=r"does not list cmake-9\.9\.9-py3-none-any\.whl"):
        registries.pypi_file("/packages/x/cmake-9.9.9-py3-none-any.whl", Settings())
    monkeypatch.setenv("PIP_INDEX_URL", index.replace("/simple/", "/gone/"))
    with pytest.raises(ConfigError, match=r"cannot look up .* \(HTTP 404\).*PIPELINE_PYPI_FILES"):
        registries.pypi_file(f"/packages/x/{WHEEL}", Settings())


def test_project_names_are_normalized_as_the_simple_index_names_them():
    assert registries.project_of("Zope.Interface-5.0-py3-none-any.whl") == "zope-interface"
    assert registries.project_of(WHEEL) == "cmake"


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


def test_no_module_imports_pips_internals():
    sources = (PROJECT / "pipeline").rglob("*.py")
    assert not [p for p in sources if "pip._internal" in p.read_text() or "import pip\n" in p.read_text()]
