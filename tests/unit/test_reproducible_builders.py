"""Builder reproducibility: the Debian snapshot setting and template, apt and download retries, and the
package versions the manifest records (dpkg-query's output parsed; the Docker tier reads real images)."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline import stages
from pipeline.config.settings import Settings
from pipeline.config.targets import load
from pipeline.errors import ConfigError, DockerError
from pipeline.infra import baseimage, builderpkgs
from pipeline.stages import builder as dockerfile

from .conftest import PROJECT, TARGETS_FILE

SNAPSHOT = "20261101T000000Z"
SNAPSHOT_URL = "http://snapshot.invalid/archive/debian"


def test_snapshot_comes_from_the_environment_with_its_url():
    s = Settings.from_env({"PIPELINE_DEBIAN_SNAPSHOT": SNAPSHOT,
                           "PIPELINE_DEBIAN_SNAPSHOT_URL": SNAPSHOT_URL + "/"})
    assert (s.debian_snapshot, s.debian_snapshot_url) == (SNAPSHOT, SNAPSHOT_URL)
    assert baseimage.mirror(s) == f"{SNAPSHOT_URL}/{SNAPSHOT}"
    assert Settings.from_env({}).debian_snapshot is None


@pytest.mark.parametrize("value", ["2026-11-01", "20261101", "20261101T000000", "latest",
                                   "20261101T000000Z/x"])
def test_a_snapshot_that_is_not_a_timestamp_is_refused(value):
    with pytest.raises(ConfigError, match="20261101T000000Z"):
        Settings.from_env({"PIPELINE_DEBIAN_SNAPSHOT": value, "PIPELINE_DEBIAN_SNAPSHOT_URL": SNAPSHOT_URL})


def test_a_snapshot_without_its_url_is_refused():
    with pytest.raises(ConfigError, match="PIPELINE_DEBIAN_SNAPSHOT_URL"):
        Settings.from_env({"PIPELINE_DEBIAN_SNAPSHOT": SNAPSHOT})
    with pytest.raises(DockerError, match="PIPELINE_DEBIAN_SNAPSHOT_URL"):
        baseimage.mirror(Settings(debian_snapshot=SNAPSHOT))


def test_the_snapshot_wins_over_the_mirror():
    s = Settings(debian_mirror="http://mirror.invalid/debian", debian_snapshot=SNAPSHOT,
                 debian_snapshot_url=SNAPSHOT_URL)
    assert baseimage.mirror(s) == f"{SNAPSHOT_URL}/{SNAPSHOT}"


def render(matrix, name: str, snapshot: str | None) -> str:
    builder = matrix.builders[name]
    return dockerfile.render(PROJECT / "docker", builder, base_image="base:x", debian_snapshot=snapshot)


def test_a_snapshot_names_its_timestamp_and_skips_expired_release_dates(matrix):
    plain, pinned = render(matrix, "debian-rocm", None), render(matrix, "debian-rocm", SNAPSHOT)
    assert SNAPSHOT not in plain
    assert f"at {SNAPSHOT}" in pinned
    sources = [line for line in pinned.splitlines() if 'echo "deb ' in line]
    # The download stage's suite, the builder's suite and sid.
    assert len(sources) == 3 and all("[check-valid-until=no] $DEBIAN_MIRROR" in line for line in sources)
    assert sum("[check-valid-until=no]" in line for line in plain.splitlines()) == 1  # sid only


def test_the_snapshot_timestamp_is_in_the_builder_hash_and_its_url_is_not(matrix, settings):
    target = matrix.targets["cpu"]

    def hashes(**changes):
        return stages.plan_for(matrix, target, dataclasses.replace(settings, **changes), []).hashes

    plain = hashes()
    pinned = hashes(debian_snapshot=SNAPSHOT, debian_snapshot_url=SNAPSHOT_URL)
    other_url = hashes(debian_snapshot=SNAPSHOT, debian_snapshot_url="http://elsewhere.invalid/debian")
    later = hashes(debian_snapshot="20261201T000000Z", debian_snapshot_url=SNAPSHOT_URL)
    assert pinned["builder"] != plain["builder"]
    assert pinned["builder"] == other_url["builder"]
    assert later["builder"] not in (plain["builder"], pinned["builder"])
    assert pinned["source"] == plain["source"]


@pytest.mark.parametrize("name", list(load(TARGETS_FILE).builders))
def test_apt_retries_and_download_retries_in_every_builder(matrix, name):
    text = render(matrix, name, None)
    assert "echo 'Acquire::Retries \"5\";' > /etc/apt/apt.conf.d/80retries" in text
    retries = text.index("80retries")
    assert retries < text.index("apt-get update")
    for line in text.splitlines():
        if "curl " in line and "RUN " in line:
            assert "--retry 5 --retry-connrefused" in line


DPKG = (
    "bash\tamd64\t5.2.37-2\tii \n"
    "gcc-14\tamd64\t14.2.0-19\tii \n"
    "libc6\tamd64\t2.41-12\tii \n"
    "libc6\ti386\t2.41-12\tii \n"
    "old-tool\tamd64\t1.0-1\trc \n"
    "tzdata\tall\t2025b-4\tii \n"
    "apt\tamd64\t3.0.3\tii \n"
    "\n"
)


def test_dpkg_query_output_is_parsed_into_sorted_installed_versions():
    assert builderpkgs.parse(DPKG) == {"apt": "3.0.3", "bash": "5.2.37-2", "gcc-14": "14.2.0-19",
                                       "libc6": "2.41-12", "libc6:i386": "2.41-12", "tzdata": "2025b-4"}
    assert list(builderpkgs.parse(DPKG)) == sorted(builderpkgs.parse(DPKG))


def test_dpkg_query_output_of_another_shape_is_an_error():
    with pytest.raises(DockerError, match="unexpected line"):
        builderpkgs.parse("bash 5.2\n")


def test_the_query_asks_for_name_arch_version_and_status():
    assert builderpkgs.QUERY[:2] == ("dpkg-query", "--show")
    assert builderpkgs.QUERY[3] == "${Package}\\t${Architecture}\\t${Version}\\t${db:Status-Abbrev}\\n"


class FakeBox:
    def __init__(self):
        self.argv = None

    def exec(self, argv, capture=False):
        self.argv = argv
        assert capture
        return DPKG


def test_the_build_container_is_asked_once_for_its_packages():
    box = FakeBox()
    assert builderpkgs.in_container(box)["bash"] == "5.2.37-2"
    assert box.argv == list(builderpkgs.QUERY)
