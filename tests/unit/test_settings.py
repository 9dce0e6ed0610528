"""Settings: the machine's Debian mirror from its apt sources, and the environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config.settings import Settings, machine_debian_mirror
from pipeline.errors import ConfigError

DEB822_WITH_SECURITY_FIRST = """\
Types: deb
URIs: http://security.invalid/debian-security
Suites: trixie-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://mirror.invalid/debian/
Suites: trixie trixie-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def apt(tmp_path: Path, files: dict[str, str]) -> Path:
    etc = tmp_path / "etc" / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (etc / name).write_text(text)
    return etc


def test_deb822_sources_give_the_debian_archive_not_security(tmp_path):
    etc = apt(tmp_path, {"sources.list.d/debian.sources": DEB822_WITH_SECURITY_FIRST})
    assert machine_debian_mirror(etc) == "http://mirror.invalid/debian"


def test_one_line_sources_list_with_options_is_read(tmp_path):
    etc = apt(tmp_path, {"sources.list": (
        "# deb http://commented.invalid/debian trixie main\n"
        "deb http://security.invalid/debian-security trixie-security main\n"
        "deb-src http://source-only.invalid/debian trixie main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://mirror.invalid/debian trixie main\n"
    )})
    assert machine_debian_mirror(etc) == "http://mirror.invalid/debian"


def test_third_party_repositories_are_skipped(tmp_path):
    etc = apt(tmp_path, {
        "sources.list": "deb https://packages.invalid/repo/apt stable main\n",
        "sources.list.d/aaa-vendor.list": "deb http://vendor.invalid/ubuntu noble main\n",
        "sources.list.d/zzz.sources": "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: sid\n"
                                      "Components: main\n",
    })
    assert machine_debian_mirror(etc) == "http://mirror.invalid/debian"


def test_third_party_repository_ending_in_debian_is_skipped(tmp_path):
    etc = apt(tmp_path, {
        "sources.list.d/archive_uri-https_download_invalid_linux_debian-trixie.list":
            "deb [arch=amd64] https://download.invalid/linux/debian trixie stable\n",
        "sources.list.d/debian.sources": DEB822_WITH_SECURITY_FIRST,
    })
    assert machine_debian_mirror(etc) == "http://mirror.invalid/debian"


def test_files_with_other_suffixes_are_ignored(tmp_path):
    etc = apt(tmp_path, {
        "sources.list.d/old.list.save": "deb http://stale.invalid/debian trixie main\n",
        "sources.list.d/real.list": "deb http://mirror.invalid/debian trixie main\n",
    })
    assert machine_debian_mirror(etc) == "http://mirror.invalid/debian"


def test_no_debian_archive_gives_none(tmp_path):
    etc = apt(tmp_path, {
        "sources.list": "deb http://archive.invalid/ubuntu noble main\n",
        "sources.list.d/security.sources": "Types: deb\nURIs: http://security.invalid/debian-security\n",
    })
    assert machine_debian_mirror(etc) is None


def test_missing_apt_folder_gives_none(tmp_path):
    assert machine_debian_mirror(tmp_path / "no" / "apt") is None


def test_environment_variables_set_paths_and_options(tmp_path):
    (tmp_path / "ollama.git").mkdir()
    s = Settings.from_env({"PIPELINE_DIST": str(tmp_path / "d"), "XDG_CACHE_HOME": str(tmp_path / "xdg"),
                           "OLLAMA_SOURCE": str(tmp_path / "ollama.git"), "PIPELINE_JOBS": "3",
                           "PIPELINE_KEEP_CONTAINERS": "1",
                           "PIPELINE_DEBIAN_MIRROR": "http://mirror.invalid/debian"})
    assert s.dist == tmp_path / "d"
    assert s.cache == tmp_path / "xdg" / "ollama-pipeline"
    assert s.source == str(tmp_path / "ollama.git")
    assert s.jobs == 3
    assert s.keep_containers is True
    assert s.debian_mirror == "http://mirror.invalid/debian"


def test_pipeline_cache_wins_over_xdg_and_overrides_win_over_environment(tmp_path):
    s = Settings.from_env({"PIPELINE_CACHE": str(tmp_path / "c"), "XDG_CACHE_HOME": str(tmp_path / "xdg"),
                           "OLLAMA_SOURCE": "https://env.invalid/src.git", "PIPELINE_KEEP_CONTAINERS": "0"},
                          source="https://cli.invalid/src.git", dist=None)
    assert s.cache == tmp_path / "c"
    assert s.source == "https://cli.invalid/src.git"
    assert s.keep_containers is False
    assert s.dist == Settings().dist


def test_jobs_that_are_not_a_positive_number_are_refused():
    with pytest.raises(ConfigError, match="PIPELINE_JOBS must be a positive whole number, got 'abc'"):
        Settings.from_env({"PIPELINE_JOBS": "abc"})
