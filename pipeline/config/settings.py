"""Run-time settings: where things go and what replaces the network. Not part of targets.toml,
because they describe the machine, not the build."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path

from pipeline.config import names
from pipeline.config import values as values_mod
from pipeline.config.paths import DOCKER_TEMPLATES, PATCHES, PROJECT_ROOT, TARGETS_FILE
from pipeline.config.places import Places
from pipeline.errors import ConfigError, UsageError
from pipeline.records import record


@record
class Settings:
    targets_file: Path = TARGETS_FILE
    patches_dir: Path = PATCHES
    templates_dir: Path = DOCKER_TEMPLATES
    dist: Path = PROJECT_ROOT / "dist"
    cache: Path = Path.home() / ".cache" / "ollama-pipeline"
    # Replaces every target's source.url: a git URL or a local repository (read in place).
    source: str | None = None
    # The upstream tag to build when a command is given no --ref (PIPELINE_REF; release CI's input).
    ref: str | None = None
    # Replaces [upstream.llama_cpp] url for versions that build a pinned llama.cpp (v0.30 on).
    llama_cpp_source: str | None = None
    # Debian mirror for base images and apt inside builders; None: the machine's apt sources.
    debian_mirror: str | None = None
    # A snapshot of the Debian archive (PIPELINE_DEBIAN_SNAPSHOT=20261101T000000Z): apt in builders and
    # debootstrap read <debian_snapshot_url>/<timestamp>, every package as it was at that instant. The
    # timestamp is part of the builder's hash; the URL (PIPELINE_DEBIAN_SNAPSHOT_URL, the snapshot
    # archive's root, e.g. .../archive/debian) is not, like the mirror.
    debian_snapshot: str | None = None
    debian_snapshot_url: str | None = None
    go_proxy: str | None = None
    # PIPELINE_PYPI_FILES: the root of a Python package index's files with the same layout as the one the
    # downloads name ({pypi_files}/packages/...); unset: the file is looked up on pip's index.
    pypi_files: str | None = None
    # CA bundle handed to build containers, so downloads (Go modules) trust what this machine trusts:
    # behind a TLS-inspecting proxy the image's own bundle is not enough.
    ca_bundle: Path | None = None
    jobs: int = os.cpu_count() or 2
    keep_containers: bool = False
    # PIPELINE_URL_<NAME>: where a builder download comes from instead (its checksum still applies).
    download_urls: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # SOURCE_DATE_EPOCH, read once here: archive mtimes and the build's timestamps (default: the
    # upstream commit's time).
    source_date_epoch: int | None = None
    # Images <prefix>/builder-..., /debian:..., /ollama:... (PIPELINE_DOCKER_PREFIX sets both prefixes:
    # a separate namespace of images and volumes, which `clean` of another prefix leaves alone).
    image_prefix: str = "ollama-pipeline"
    # This project's repository as a web URL, for the images' org.opencontainers.image.source
    # (PIPELINE_PROJECT_URL; in GitHub Actions the workflow's repository; else the git remote `origin`).
    project_url: str | None = None
    # Named volumes <prefix>-ccache, -go-build, -go-mod.
    volume_prefix: str = "ollama-pipeline"

    @property
    def places(self) -> Places:
        """Where outputs, reports and the cache's folders are (pipeline.config.places)."""
        return Places(dist=self.dist, cache=self.cache)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> Settings:
        env = dict(os.environ if env is None else env)
        for var in READ:
            if var in env and not _utf8(env[var]):
                raise UsageError(f"{var} {env[var]!r} holds bytes that are not UTF-8; set it to UTF-8 text")
        for field, value in overrides.items():
            if isinstance(value, (str, Path)) and not _utf8(str(value)):
                raise UsageError(f"{field.replace('_', '-')} {str(value)!r} holds bytes that are not UTF-8; "
                                 "give UTF-8 text")
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
        if env.get("PIPELINE_REF"):
            if problem := names.ref_problem(env["PIPELINE_REF"]):
                raise UsageError(f"PIPELINE_REF {env['PIPELINE_REF']!r} is not a valid git tag ({problem}); "
                                 "set it to a pinned upstream tag such as v0.24.0, or unset it")
            values["ref"] = env["PIPELINE_REF"]
        if env.get("LLAMA_CPP_SOURCE"):
            values["llama_cpp_source"] = env["LLAMA_CPP_SOURCE"]
        if env.get("PIPELINE_DEBIAN_MIRROR"):
            values["debian_mirror"] = env["PIPELINE_DEBIAN_MIRROR"]
        if env.get("PIPELINE_DEBIAN_SNAPSHOT"):
            values["debian_snapshot"] = snapshot_timestamp(env["PIPELINE_DEBIAN_SNAPSHOT"])
            if not env.get("PIPELINE_DEBIAN_SNAPSHOT_URL"):
                raise UsageError("PIPELINE_DEBIAN_SNAPSHOT is set but PIPELINE_DEBIAN_SNAPSHOT_URL is not: "
                                  "set it to the root of a Debian snapshot archive (the URL that the "
                                  "timestamp follows)")
        if env.get("PIPELINE_DEBIAN_SNAPSHOT_URL"):
            values["debian_snapshot_url"] = env["PIPELINE_DEBIAN_SNAPSHOT_URL"].rstrip("/")
        if env.get("GOPROXY"):
            values["go_proxy"] = env["GOPROXY"]
        if env.get("PIPELINE_PYPI_FILES"):
            values["pypi_files"] = env["PIPELINE_PYPI_FILES"].rstrip("/")
        if env.get("PIPELINE_PROJECT_URL"):
            values["project_url"] = env["PIPELINE_PROJECT_URL"].rstrip("/")
        elif env.get("GITHUB_SERVER_URL") and env.get("GITHUB_REPOSITORY"):
            values["project_url"] = f"{env['GITHUB_SERVER_URL'].rstrip('/')}/{env['GITHUB_REPOSITORY']}"
        ca = env.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt"
        if flag(env, "PIPELINE_HOST_CA", default=True) and Path(ca).is_file():
            values["ca_bundle"] = Path(ca)
        if env.get("SOURCE_DATE_EPOCH"):
            raw = env["SOURCE_DATE_EPOCH"]
            if not (raw.isascii() and raw.isdigit()) or int(raw) > 2**33:
                raise UsageError(f"SOURCE_DATE_EPOCH must be a whole number of seconds since 1970 (such as "
                                  f"1700000000), got {raw!r}; unset it to use the upstream commit's time")
            values["source_date_epoch"] = int(raw)
        if env.get("PIPELINE_JOBS"):
            jobs = env["PIPELINE_JOBS"]
            if not (jobs.isascii() and jobs.isdigit()) or int(jobs) < 1:
                raise UsageError(f"PIPELINE_JOBS must be a positive whole number, got {jobs!r}")
            values["jobs"] = int(jobs)
        if env.get("PIPELINE_DOCKER_PREFIX"):
            prefix = env["PIPELINE_DOCKER_PREFIX"]
            if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", prefix) \
                    or values_mod.image_ref_problem(f"{prefix}/x"):
                raise UsageError(f"PIPELINE_DOCKER_PREFIX {prefix!r} is not a prefix Docker takes for image "
                                 "and volume names: lower-case letters and digits joined by . _ or -")
            values["image_prefix"] = values["volume_prefix"] = prefix
        values["keep_containers"] = flag(env, "PIPELINE_KEEP_CONTAINERS")
        for var in ("PIPELINE_QUIET", "PIPELINE_TRACEBACK"):
            flag(env, var)  # read by the console and the error edge: checked here with the rest
        values["download_urls"] = {k.removeprefix("PIPELINE_URL_").lower(): v for k, v in env.items()
                                   if k.startswith("PIPELINE_URL_") and v}
        values.update({k: v for k, v in overrides.items() if v is not None})
        _check_values(values, env)
        return cls(**values)


# Every variable Settings reads.
READ = ("PIPELINE_TARGETS", "PIPELINE_DIST", "PIPELINE_CACHE", "PIPELINE_PATCHES", "XDG_CACHE_HOME",
        "OLLAMA_SOURCE", "LLAMA_CPP_SOURCE", "PIPELINE_REF",
        "PIPELINE_DEBIAN_MIRROR", "PIPELINE_DEBIAN_SNAPSHOT", "PIPELINE_DEBIAN_SNAPSHOT_URL", "GOPROXY",
        "PIPELINE_PYPI_FILES", "SSL_CERT_FILE", "PIPELINE_HOST_CA", "SOURCE_DATE_EPOCH", "PIPELINE_JOBS",
        "PIPELINE_KEEP_CONTAINERS", "PIPELINE_QUIET", "PIPELINE_TRACEBACK", "PIPELINE_DOCKER_PREFIX",
        "PIPELINE_PROJECT_URL", "GITHUB_SERVER_URL", "GITHUB_REPOSITORY")

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def flag(env: Mapping[str, str], var: str, *, default: bool = False) -> bool:
    """A boolean setting: 1/0, true/false, yes/no, on/off in any case; unset or empty is `default`.
    Anything else is refused (a word meant as "off" must never turn a thing on)."""
    raw = env.get(var, "")
    word = raw.strip().lower()
    if not word:
        return default
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise UsageError(f"{var} {raw!r} is not a boolean: set it to 1/0, true/false, yes/no or on/off, or "
                     "unset it")


def _utf8(value: str) -> bool:
    """Whether a value from the environment or the command line was UTF-8 (Python keeps other bytes as
    lone surrogates, which no file, URL or Docker API call can carry)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def snapshot_timestamp(value: str) -> str:
    """A snapshot archive's timestamp: YYYYMMDDTHHMMSSZ (UTC)."""
    if not re.fullmatch(r"[0-9]{8}T[0-9]{6}Z", value):
        raise UsageError(f"PIPELINE_DEBIAN_SNAPSHOT must be a UTC timestamp like 20261101T000000Z, "
                          f"got {value!r}")
    return value


def _check_values(values: dict, env: dict[str, str]) -> None:
    """Values that reach git, apt or paths are checked here, once, before any stage runs."""
    try:
        if values.get("source") is not None:
            where = "--source / OLLAMA_SOURCE" if env.get("OLLAMA_SOURCE") else "--source"
            _check_source(values["source"], where, "Ollama")
        if values.get("llama_cpp_source") is not None:
            _check_source(values["llama_cpp_source"], "LLAMA_CPP_SOURCE", "llama.cpp")
        for name, url in values.get("download_urls", {}).items():
            names.check_url(url, f"PIPELINE_URL_{name.upper()}", names.MIRROR_SCHEMES, local=False)
        if values.get("debian_mirror") is not None:
            names.check_url(values["debian_mirror"], "--debian-mirror / PIPELINE_DEBIAN_MIRROR",
                            names.MIRROR_SCHEMES, local=False)
        if values.get("pypi_files") is not None:
            names.check_url(values["pypi_files"], "PIPELINE_PYPI_FILES", names.MIRROR_SCHEMES, local=False)
        if values.get("debian_snapshot_url") is not None:
            names.check_url(values["debian_snapshot_url"], "PIPELINE_DEBIAN_SNAPSHOT_URL",
                            names.MIRROR_SCHEMES, local=False)
        if values.get("project_url") is not None:
            where = ("PIPELINE_PROJECT_URL" if env.get("PIPELINE_PROJECT_URL")
                     else "GITHUB_SERVER_URL/GITHUB_REPOSITORY")
            names.check_url(values["project_url"], where, ("https", "http"), local=False)
        if values.get("go_proxy") is not None and any(c in values["go_proxy"] for c in " \t\n\r\0"):
            raise ConfigError(f"GOPROXY {values['go_proxy']!r} holds whitespace; use a comma-separated list "
                              "of URLs, direct or off")
    except UsageError:
        raise
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    for field, var in (("targets_file", "PIPELINE_TARGETS"), ("dist", "PIPELINE_DIST"),
                       ("cache", "PIPELINE_CACHE"), ("patches_dir", "PIPELINE_PATCHES")):
        value = values.get(field)
        if value is not None and ("\0" in str(value) or not str(value).strip()):
            raise UsageError(f"{var} {str(value)!r} is not a usable path")
    jobs = values.get("jobs")
    if jobs is not None and (type(jobs) is not int or jobs < 1):
        raise UsageError(f"--jobs must be a whole number of at least 1, got {jobs!r}")


def _check_source(url: str, where: str, project: str) -> None:
    """A repository to read instead of the matrix's URL: a URL, or a local path that is a folder (looked
    at here, before any stage: a cached tree would never look at it again)."""
    names.check_url(url, where)
    if names.local_form(url):
        path = Path(url).expanduser()
        if not path.exists():
            raise UsageError(f"{where} {url!r}: no such folder; give a clone or mirror of {project} "
                             "(git clone --mirror), or a URL")
        if not path.is_dir():
            raise UsageError(f"{where} {url!r} is not a folder; give a clone or mirror of {project}, or a "
                             "URL")


def _apt_entries(text: str):
    """(uris, suites, components) of every 'deb' entry, one-line or deb822."""
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if fields[:1] == ["deb"]:
            if len(fields) > 1 and fields[1].startswith("["):
                while fields and not fields[1].endswith("]"):
                    fields.pop(1)
                fields.pop(1)
            if len(fields) >= 4:
                yield [fields[1]], [fields[2]], fields[3:]
    for stanza in re.split(r"\n\s*\n", text):
        keys = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, re.MULTILINE))
        if "deb" in keys.get("Types", "").split() and keys.get("URIs"):
            yield keys["URIs"].split(), keys.get("Suites", "").split(), keys.get("Components", "").split()


def machine_debian_mirror(etc: Path = Path("/etc/apt")) -> str | None:
    """The Debian archive in this machine's apt sources: a .../debian URL serving a suite's main
    component (not -security, not a third-party repository that happens to end in /debian)."""
    for f in [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*"))]:
        if not (f.is_file() and f.suffix in ("", ".list", ".sources")):
            continue
        for uris, suites, components in _apt_entries(f.read_text(errors="replace")):
            if "main" not in components or all(s.endswith("-security") for s in suites):
                continue
            for url in uris:
                if url.rstrip("/").endswith("/debian"):
                    return url.rstrip("/")
    return None
