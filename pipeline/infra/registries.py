"""Where downloads of builder images come from, without the project naming any registry's host.

A download's URL in targets.toml may start with a placeholder that is filled in when the image is
built (never hashed: moving to another proxy or mirror does not change an image):

* `{go_proxy}`: the Go module proxy, the first URL of GOPROXY (settings), else of `go env GOPROXY` as
  this machine's Go reports it (Go's own default).
* `{pypi_files}/packages/.../FILE`: a file of the Python package index. PIPELINE_PYPI_FILES replaces
  `{pypi_files}` (a mirror of the index's files with the same layout). Otherwise FILE is looked up on
  the simple index (PEP 503) pip installs from, as the user configured pip: PIP_INDEX_URL, else
  `index-url` in pip's configuration files (read here, so no pip is needed in the environment), else
  pip's own default index, as `pip install --help` states it (any pip on the machine).

Every download's sha256 is still checked in the image, wherever the bytes came from.
"""

from __future__ import annotations

import base64
import configparser
import html.parser
import os
import re
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from pipeline.config.settings import Settings
from pipeline.errors import ConfigError

PLACEHOLDERS = ("{go_proxy}", "{pypi_files}")


def expand(url: str, settings: Settings) -> str:
    """`url` with its placeholder filled in; a URL without one is returned as it is."""
    if url.startswith("{go_proxy}"):
        return go_proxy(settings) + url.removeprefix("{go_proxy}")
    if url.startswith("{pypi_files}"):
        return pypi_file(url.removeprefix("{pypi_files}"), settings)
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


def pypi_file(path: str, settings: Settings) -> str:
    """The URL of the index file `path` (/packages/.../NAME), as in the module's docstring."""
    if settings.pypi_files:
        return settings.pypi_files + path
    filename = path.rsplit("/", 1)[-1]
    index = pip_index_url()
    page = f"{index.rstrip('/')}/{project_of(filename)}/"
    try:
        links = simple_page_links(page, pip_cert() or (settings.ca_bundle and str(settings.ca_bundle)))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot look up {filename} on the package index {_public(page)} "
                          f"({_reason(exc)}); check pip's index-url, or set PIPELINE_PYPI_FILES to a "
                          "mirror of the index's files or PIPELINE_URL_<NAME> to the file") from None
    for link in links:
        if urllib.parse.urlsplit(link).path.rsplit("/", 1)[-1] == filename:
            return link
    raise ConfigError(f"the package index {_public(page)} does not list {filename}; check pip's index-url, "
                      "or set PIPELINE_PYPI_FILES to a mirror of the index's files")


def project_of(filename: str) -> str:
    """The normalized project name of a wheel or sdist file name (PEP 503)."""
    name = filename.split("-", 1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


# --- pip's configuration, read as pip reads it (pip's documented files and variables) ---------------

PIP_SECTIONS = ("global", "download", "install")  # later ones win, as a command's section does in pip


def pip_config_files(env: dict[str, str] | None = None) -> list[Path]:
    """pip's configuration files, lowest priority first: global, user (unless PIP_CONFIG_FILE names an
    existing file), the environment's own (site), then PIP_CONFIG_FILE. PIP_CONFIG_FILE=os.devnull
    means none."""
    env = dict(os.environ if env is None else env)
    named = env.get("PIP_CONFIG_FILE")
    if named == os.devnull:
        return []
    dirs = [d for d in env.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":") if d]
    files = [Path(d) / "pip" / "pip.conf" for d in dirs] + [Path("/etc/pip.conf")]
    if not (named and Path(named).exists()):
        home = Path(env.get("HOME") or Path.home())
        config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
        files += [home / ".pip" / "pip.conf", config_home / "pip" / "pip.conf"]
    files.append(Path(sys.prefix) / "pip.conf")
    if named:
        files.append(Path(named))
    return files


def pip_setting(key: str, env: dict[str, str] | None = None) -> str | None:
    """A pip option (`index-url`, `cert`) as the user set it: PIP_<KEY>, else the configuration files."""
    env = dict(os.environ if env is None else env)
    if value := env.get("PIP_" + key.upper().replace("-", "_")):
        return value
    found = None
    for path in pip_config_files(env):
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: pip's configuration file cannot be read ({exc}); fix or remove "
                              "it") from None
        for section in PIP_SECTIONS:
            for name in (key, key.replace("-", "_")):
                if parser.has_option(section, name):
                    found = parser.get(section, name).strip() or found
    return found


def pip_cert(env: dict[str, str] | None = None) -> str | None:
    return pip_setting("cert", env)


def pip_index_url(env: dict[str, str] | None = None, pythons: list[list[str]] | None = None) -> str:
    """The simple index pip installs from: the user's setting, else pip's default as its help states."""
    if configured := pip_setting("index-url", env):
        return configured.split()[0]
    if pythons is None:
        pythons = [[sys.executable, "-m", "pip"]]
        pythons += [[tool] if tool.startswith("pip") else [tool, "-m", "pip"]
                    for tool in ("python3", "pip3", "pip") if shutil.which(tool)]
    for command in pythons:
        try:
            out = subprocess.run([*command, "install", "--help"], capture_output=True, text=True,
                                 timeout=60, check=False, env={**os.environ, "PIP_NO_INPUT": "1"}).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        if found := _default_index(out):
            return found
    raise ConfigError("no Python package index is known for the builder's downloads: pip is not installed "
                      "here and PIP_INDEX_URL is unset; set PIP_INDEX_URL (or index-url in pip.conf) to "
                      "the index pip would use, or PIPELINE_PYPI_FILES to its files' root")


def _default_index(help_text: str) -> str | None:
    """pip's default index URL from `pip install --help`: `--index-url <url> ... (default URL)`."""
    option = re.search(r"--index-url\s*<url>(.*?)(?=\n\s*-|\Z)", help_text, re.S)  # to the next option
    found = option and re.search(r"\(default\s+(https?://[^)\s]+)\)", option.group(1))
    return found.group(1) if found else None


# --- the simple index ---------------------------------------------------------------------------------

class _Links(html.parser.HTMLParser):
    def __init__(self, base: str):
        super().__init__()
        self.base, self.links = base, []

    def handle_starttag(self, tag, attrs):
        if tag == "base":
            self.base = urllib.parse.urljoin(self.base, dict(attrs).get("href") or "")
        elif tag == "a" and (href := dict(attrs).get("href")):
            self.links.append(urllib.parse.urljoin(self.base, href).split("#", 1)[0])


def simple_page_links(page: str, cafile: str | None = None) -> list[str]:
    """The absolute file URLs an index's project page (PEP 503 HTML) links to, fragments dropped."""
    parts = urllib.parse.urlsplit(page)
    headers = {"Accept": "text/html", "User-Agent": "ollama-pipeline"}
    if parts.username is not None:  # user:password@ in the index URL, as pip accepts it
        token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
        page = urllib.parse.urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}"
                                                                               if parts.port else "")))
    context = ssl.create_default_context(cafile=cafile) if page.startswith("https:") else None
    with urllib.request.urlopen(urllib.request.Request(page, headers=headers), timeout=60,
                                context=context) as response:
        text = response.read().decode(response.headers.get_content_charset() or "utf-8", "replace")
        final = response.geturl()
    parser = _Links(final)
    parser.feed(text)
    return parser.links


def _public(url: str) -> str:
    """`url` without a password."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.hostname}"
                                                  + (f":{parts.port}" if parts.port else "")))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__
