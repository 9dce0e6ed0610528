"""share/ollama/install.sh as root in a clean container of the runtime floor: the service part.

The container has no running systemd; a stand-in systemctl records its calls (and answers the wait for
the API with a steady main process) and /run/systemd/system makes the script take the systemd path. The
unit it writes is checked with the real systemd-analyze. test_install_systemd.py runs the real systemd."""

from __future__ import annotations

from pathlib import Path

import pytest
from docker.types import Mount

from pipeline import stages
from pipeline.config import targets
from pipeline.config.settings import Settings
from pipeline.infra.container import Container
from pipeline.infra.log import Log
from pipeline.smoke import modelrun

from ..unit.test_install_script import unpack_fake
from .conftest import PROJECT

FAKE_SYSTEMCTL = ('#!/bin/sh\necho "$*" >> /tmp/systemctl.calls\n'
                  '[ "$1" = show ] && echo 4242\nexit 0\n')
SETUP = (f"mkdir -p /run/systemd/system && printf '%s' '{FAKE_SYSTEMCTL}' > /usr/local/sbin/systemctl"
         " && chmod +x /usr/local/sbin/systemctl")


@pytest.fixture
def packages(tmp_path, cache_dir) -> tuple[Path, Path, Settings]:
    settings = Settings(targets_file=PROJECT / "targets.toml", patches_dir=tmp_path / "patches",
                        templates_dir=PROJECT / "docker", dist=tmp_path / "dist", cache=cache_dir)
    matrix = targets.load(settings.targets_file)
    the_plan = stages.plan_for(matrix, matrix.targets["gfx1103"], settings)
    return (unpack_fake(tmp_path / "v1", the_plan, env_text="A=1\n", marker="one"),
            unpack_fake(tmp_path / "v2", the_plan, env_text="A=2\n", marker="two"), settings)


def clean_box(engine, settings, v1: Path, v2: Path, log: Log) -> Container:
    from pipeline.infra import baseimage
    image = f"{settings.image_prefix}/debian:trixie"
    baseimage.ensure(image, "trixie", settings, log)
    return Container(image, log, mounts=[Mount("/pkg/v1", str(v1), type="bind", read_only=True),
                                         Mount("/pkg/v2", str(v2), type="bind", read_only=True)])


def test_upgrade_restarts_the_service_and_writes_a_unit_with_existing_groups(engine, packages, tmp_path):
    v1, v2, settings = packages
    with Log("install", tmp_path / "install.log") as log, clean_box(engine, settings, v1, v2, log) as box:
        sh = lambda script: box.exec(["sh", "-c", script], capture=True)  # noqa: E731
        sh(SETUP)
        first = sh("sh /pkg/v1/share/ollama/install.sh /opt/ollama")
        sh("echo 'OLLAMA_KEEP_ALIVE=1h' >> /opt/ollama/share/ollama/ollama.env && : > /tmp/systemctl.calls")
        second = sh("sh /pkg/v2/share/ollama/install.sh /opt/ollama")
        # The wait for the API asks for the main process and whether the unit is active.
        calls = [c for c in sh("cat /tmp/systemctl.calls").splitlines()
                 if not c.startswith(("show ", "is-active "))]
        unit = sh("cat /etc/systemd/system/ollama.service")
        user = sh("id ollama")
        env = sh("cat /opt/ollama/share/ollama/ollama.env")
        binary = sh("/opt/ollama/bin/ollama")

        assert "ollama.service (re)started" in first
        assert calls == ["daemon-reload", "enable ollama", "restart ollama"]
        assert "kept your edited /opt/ollama/share/ollama/ollama.env" in second
        assert env == "A=1\nOLLAMA_KEEP_ALIVE=1h\n" and binary == "two\n"
        assert "ExecStart=/opt/ollama/bin/ollama serve" in unit
        # trixie's minbase has video but no render group.
        assert [x for x in unit.splitlines() if x.startswith("SupplementaryGroups")] == [
            "SupplementaryGroups=video"]
        assert "video" in user and "render" not in user

        sh("groupadd -r render")
        sh("sh /pkg/v2/share/ollama/install.sh /opt/ollama")
        unit = sh("cat /etc/systemd/system/ollama.service")
        assert "SupplementaryGroups=video render" in unit
        assert "render" in sh("id ollama")


def test_unit_passes_systemd_analyze_verify_where_it_exists(engine, packages, tmp_path):
    v1, v2, settings = packages
    with Log("install", tmp_path / "install.log") as log, clean_box(engine, settings, v1, v2, log) as box:
        run = lambda argv: box.exec(argv, capture=True)  # noqa: E731
        run(["sh", "/pkg/v1/share/ollama/install.sh", "/opt/ollama"])
        assert modelrun.check_unit(run, "/pkg/v1", "/opt/ollama") == modelrun.UnitCheck(False, ())

        run(["sh", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
                         "apt-get install -y -qq --no-install-recommends systemd >/dev/null"])
        check = modelrun.check_unit(run, "/pkg/v1", "/opt/ollama")
        assert check.checked
        assert check.problems == (), check.unit_output

        run(["sh", "-c", "cp -a /pkg/v1 /tmp/bad && sed -i 's/^Restart=always/Restart=sometimes/' "
                         "/tmp/bad/share/ollama/ollama.service"])
        bad = modelrun.check_unit(run, "/tmp/bad", "/opt/ollama")
        assert bad.checked and any("Restart" in line for line in bad.problems), bad
