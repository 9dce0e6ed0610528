"""share/ollama/install.sh on a Debian 11 bullseye system booted with systemd as PID 1, as root.

Packages of the miniature project, built by the pipeline: one on the bullseye builder (the system's own
floor), one on a trixie builder (its bin/ollama needs a newer glibc than bullseye has). The container runs
/lib/systemd/systemd; install.sh enables and starts a real ollama.service and waits for its API.
"""

from __future__ import annotations

import contextlib
import hashlib
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker.types import Mount

from pipeline import orchestrate, stages
from pipeline.config import targets
from pipeline.infra import baseimage, images
from pipeline.infra.log import Log

from ..unit.test_install_script import unpack_fake
from . import miniollama
from .conftest import PROJECT, write_matrix

SUITE = "bullseye"
# The system of a host: systemd (the init and journald), nothing of a toolchain.
DOCKERFILE = """\
FROM {base}
ARG DEBIAN_MIRROR
RUN echo "deb $DEBIAN_MIRROR {suite} main" > /etc/apt/sources.list \\
 && apt-get -o Acquire::Retries=5 update -qq \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd systemd-sysv \\
 && apt-get clean && rm -rf /var/lib/apt/lists/*
STOPSIGNAL SIGRTMIN+3
CMD ["/lib/systemd/systemd"]
"""
# What "nothing changed" compares: every path of the root file system with its size, mode and owner,
# less what the running system itself changes (the journal, /run, /tmp).
SNAPSHOT = ("find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp "
            "-o -path /var/log/journal \\) -prune -o -printf '%p %s %m %u:%g\\n' | sort")


@pytest.fixture(scope="module")
def packages(engine, tmp_path_factory, cache_dir) -> dict[str, Path]:
    """The miniature project packaged on the bullseye builder (verified, with the model run) and on the
    trixie one (packaged only), unpacked: {"bullseye": root, "trixie": root}."""
    from pipeline.config.settings import Settings

    work = tmp_path_factory.mktemp("install-systemd")
    repo, commit = miniollama.create(work / "upstream")
    out = {}
    for floor, builder, skip in (("bullseye", "debian-cpu", ()), ("trixie", "debian-vulkan", ("verify",))):
        matrix_file = write_matrix(work / f"{floor}.toml", repo, commit, builder=builder, backends=["cpu"])
        settings = Settings(targets_file=matrix_file, dist=work / f"dist-{floor}", cache=cache_dir,
                            patches_dir=work / "patches")
        matrix = targets.load(matrix_file)
        plan = stages.plan_for(matrix, matrix.targets["cpu"], settings)
        outcome = orchestrate.build_target(plan, settings, skip=skip)
        root = work / f"pkg-{floor}"
        with tarfile.open(outcome.archive) as tar:
            tar.extractall(root, filter="data")
        out[floor] = root
    return out


@pytest.fixture(scope="module")
def systemd_image(engine, tmp_path_factory, cache_dir) -> str:
    from pipeline.config.settings import Settings

    settings = Settings(cache=cache_dir, targets_file=PROJECT / "targets.toml")
    base = baseimage.name(settings.image_prefix, SUITE)
    dockerfile = DOCKERFILE.format(base=base, suite=SUITE)
    digest = hashlib.sha256(dockerfile.encode()).hexdigest()[:12]
    tag = f"{settings.image_prefix}/test-systemd:{SUITE}-{digest}"
    if images.find(tag) is None:
        with Log("systemd-image", tmp_path_factory.mktemp("logs") / "image.log") as log:
            baseimage.ensure(base, SUITE, settings, log)
            images.build(dockerfile, tag, log, buildargs={"DEBIAN_MIRROR": baseimage.mirror(settings)},
                         what="test image")
    return tag


class Booted:
    """A container running systemd as PID 1; `sh` runs a script in it as root."""

    def __init__(self, container):
        self.container = container

    def sh(self, script: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        code, out = self.container.exec_run(["sh", "-c", script], environment=env or {}, demux=False)
        return code, out.decode("utf-8", "replace")

    def ok(self, script: str) -> str:
        code, out = self.sh(script)
        assert code == 0, f"{script}: exit {code}: {out}"
        return out


@contextlib.contextmanager
def booted(engine, image: str, mounts: dict[str, Path]) -> Iterator[Booted]:
    """systemd needs its own /run and the cgroup tree (read-only suffices on cgroup v1; on v2 the host's
    namespace, writable) and CAP_SYS_ADMIN; no further privileges."""
    cgroup_v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    container = engine.containers.create(
        image, cap_add=["SYS_ADMIN"], tmpfs={"/run": "", "/run/lock": "", "/tmp": ""},
        cgroupns="host" if cgroup_v2 else None,
        volumes={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw" if cgroup_v2 else "ro"}},
        mounts=[Mount(inside, str(path), type="bind", read_only=True) for inside, path in mounts.items()],
        labels={images.LABEL: "install.sh test"})
    try:
        container.start()
        box = Booted(container)
        for _ in range(120):
            _, state = box.sh("systemctl is-system-running")
            if state.strip() in ("running", "degraded"):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"systemd did not come up in the container: {state.strip()}")
        yield box
    finally:
        container.remove(force=True)


def test_a_package_above_the_systems_floor_is_refused_in_one_line_and_nothing_changes(
        engine, packages, systemd_image):
    with booted(engine, systemd_image, {"/pkg": packages["trixie"]}) as box:
        # What the dynamic loader alone would say, for comparison: the floor check speaks first.
        code, loader = box.sh("/pkg/bin/ollama --version")
        assert code != 0 and "GLIBC_2.3" in loader and "not found" in loader
        before = box.ok(SNAPSHOT)
        code, out = box.sh("sh /pkg/share/ollama/install.sh /usr 2>&1")
        after = box.ok(SNAPSHOT)
        assert code == 3, out
        assert out.count("\n") == 1, out
        assert out.startswith("install.sh: this system cannot run Ollama 1.2.3+cpu: it needs glibc 2.3")
        assert "(this system has 2.31)" in out and out.rstrip().endswith("nothing was installed or changed")
        assert after == before
        assert box.sh("id ollama")[0] != 0
        assert box.sh("test -e /etc/systemd/system/ollama.service")[0] != 0


def test_prefix_usr_installs_a_service_that_runs_as_ollama_and_serves_then_uninstalls(
        engine, packages, systemd_image):
    with booted(engine, systemd_image, {"/pkg": packages["bullseye"]}) as box:
        box.ok("useradd -m alice")
        code, out = box.sh("sh /pkg/share/ollama/install.sh --wait 30 /usr 2>&1", env={"SUDO_USER": "alice"})
        assert code == 0, out
        assert "ollama.service (re)started; the API answers (Ollama 1.2.3+cpu)" in out
        assert "added alice to the ollama group" in out
        # The home that upstream's layout shares with PREFIX/share/ollama is the service user's.
        assert box.ok("stat -c %U:%G /usr/share/ollama").strip() == "ollama:ollama"
        pid = box.ok("systemctl show -p MainPID --value ollama").strip()
        uid = box.ok(f"awk '/^Uid:/ {{print $2}}' /proc/{pid}/status").strip()
        assert uid == box.ok("id -u ollama").strip()
        # The server wrote into its home, and a client reaches it.
        assert box.ok("stat -c %U /usr/share/ollama/.ollama/models/blobs").strip() == "ollama"
        assert box.ok("/usr/bin/ollama list").startswith("NAME")
        assert "ollama" in box.ok("id -nG alice").split()
        unit = box.ok("cat /etc/systemd/system/ollama.service")
        assert "ExecStart=/usr/bin/ollama serve" in unit and "User=ollama" in unit

        # An upgrade (the same package again) restarts the service, which answers again.
        code, out = box.sh("sh /pkg/share/ollama/install.sh --wait 30 /usr 2>&1")
        assert code == 0 and "the API answers" in out, out
        assert box.ok("systemctl show -p MainPID --value ollama").strip() != pid

        code, out = box.sh("sh /usr/share/ollama/install.sh --uninstall /usr 2>&1")
        assert code == 0, out
        assert "removed ollama.service" in out and "removed Ollama 1.2.3+cpu from /usr" in out
        assert "kept the ollama user and its models in /usr/share/ollama/.ollama" in out
        for path in ("/usr/bin/ollama", "/usr/lib/ollama", "/etc/systemd/system/ollama.service",
                     "/usr/share/ollama/install.sh", "/usr/share/ollama/ollama.env"):
            assert box.sh(f"test -e {path}")[0] != 0, path
        assert box.sh("systemctl is-active ollama")[0] != 0
        assert box.sh("test -d /usr/share/ollama/.ollama/models")[0] == 0


SERVE_FAILS = """#!/bin/sh
case $1 in
  --version) echo "ollama version is 0.0.0" ;;
  serve) echo "Error: listen tcp 127.0.0.1:11434: bind: address already in use (as the test says)" >&2
         exit 1 ;;
  *) echo "Error: could not connect to ollama app, is it running?" >&2; exit 1 ;;
esac
"""


def test_a_service_that_does_not_answer_ends_with_its_journal_and_a_nonzero_exit(
        engine, systemd_image, tmp_path, matrix_plan):
    pkg = unpack_fake(tmp_path / "pkg", matrix_plan, ollama=SERVE_FAILS)
    with booted(engine, systemd_image, {"/pkg": pkg}) as box:
        started = time.monotonic()
        code, out = box.sh("sh /pkg/share/ollama/install.sh --wait 5 /opt/ollama 2>&1")
        assert code == 4, out
        assert time.monotonic() - started < 60
        assert "ollama.service was (re)started but its API did not answer within 5s" in out
        assert "bind: address already in use (as the test says)" in out  # the journal's lines
        assert "journalctl -u ollama" in out


@pytest.fixture
def matrix_plan(cache_dir, tmp_path):
    from pipeline.config.settings import Settings

    settings = Settings(targets_file=PROJECT / "targets.toml", patches_dir=tmp_path / "patches",
                        dist=tmp_path / "dist", cache=cache_dir)
    matrix = targets.load(settings.targets_file)
    return stages.plan_for(matrix, matrix.targets["cpu"], settings)
