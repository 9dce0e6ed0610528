"""A fresh Debian 11 machine as its user gets it, set up by `sudo ./bootstrap`, and the tool on its oldest
Python: bullseye's own python3 (3.9) with the pip of its venv (20.3), nothing of Python from elsewhere.

The image is a bare bullseye (no Python at all) with the compilers the unit tier uses, on which
`SUDO_USER=alice BOOTSTRAP_ENGINE=0 ./bootstrap` ran as root: it must install python3, python3-venv and
python3-pip, nox in its own venv under constraints.txt, and put alice into the docker group, saying that
this needs a new login or `newgrp docker` (no engine socket there for an ACL). It is made once and kept,
tagged by the hash of its Dockerfile, bootstrap and constraints.txt.

In the container (a stand-in socket at Docker's path, root:docker 0660, no engine behind it, so that
the advice is read from real permissions):
* bootstrap again for bob, whose login "ran sudo": nothing left to install, bob in the group and in the
  socket's ACL; bob's old login may open the socket, alice's old login gets the line naming the fix
  (log in again, or `newgrp docker`), and after it (a new login, `sg docker`) she may open it;
* as alice in a new login: `nox -s tests -- tests/unit`, `nox -s targets`, `nox -s plan -- gfx1103`;
* a plain venv of that Python: pip 20.3 cannot install a project from pyproject.toml alone in editable
  mode, so pip is first upgraded inside the venv (to constraints.txt's pin), then
  `pip install -c constraints.txt -e .` and `python -m pipeline targets` / `plan gfx1103`;
* in nox's venv and in that venv, every installed package at its constraints.txt pin for 3.9.

Time, measured on 2 cores shared with other builds: the image 1.5 minutes once (apt and nox); each run
about 6 minutes, 2 to 3.5 of them the unit tier under nox, most of the rest pip's installs. pip reaches
the package index with this machine's pip index setting and CA bundle."""

from __future__ import annotations

import hashlib
import re

from docker.types import Mount
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipeline.config.settings import Settings
from pipeline.errors import ConfigError
from pipeline.infra import baseimage, images, registries
from pipeline.infra.container import Container
from pipeline.infra.log import Log

from .conftest import PROJECT

HOST_CA = "/host-ca.crt"
DOCKERFILE = """\
FROM {base}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG DEBIAN_MIRROR
{args}
# What the unit tier compiles with; no Python: bootstrap has to install it.
RUN echo "deb $DEBIAN_MIRROR bullseye main" > /etc/apt/sources.list \\
 && apt-get update -q \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gcc g++ libc6-dev \\
 && ! command -v python3
COPY bootstrap constraints.txt {ca} /bootstrap/
RUN useradd --create-home --shell /bin/bash alice && useradd --create-home --shell /bin/bash bob \\
 && SUDO_USER=alice BOOTSTRAP_ENGINE=0 bash /bootstrap/bootstrap 2>&1 | tee /bootstrap.log \\
 && rm -rf /var/lib/apt/lists/*
"""
# The project as a checkout holds it, without what runs leave behind, owned by alice.
COPY = ("mkdir /project && tar -C /src --exclude=./.git --exclude=./.nox --exclude=./dist "
        "--exclude=./build --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache -cf - . "
        "| tar -C /project -xf - && chown -R alice: /project")
SOCKET = "/var/run/docker.sock"
# A socket file no engine listens on: connecting with permission is refused, without it denied.
STAND_IN = (f"python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind(\"{SOCKET}\")' "
            f"&& chgrp docker {SOCKET} && chmod 0660 {SOCKET}")
UNREACHABLE = "error: cannot reach the Docker engine at the local socket: "
# What the pipeline says where it reaches for the engine (the error's one line; no engine answers here).
PROBE = ('out="$(/project/.nox/tests/bin/python -m pipeline clean --dry-run 2>&1)" '
         '&& { echo "no error: $out"; exit 1; }; echo "$out"')


def off_the_pins(freeze: str) -> list[str]:
    """The lines of a `pip freeze` on Python 3.9 that constraints.txt does not pin to that version."""
    env = {**default_environment(), "python_version": "3.9", "python_full_version": "3.9.2"}
    pins = {}
    for line in (PROJECT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(env):
                pins[canonicalize_name(req.name)] = req
    off = []
    for line in freeze.splitlines():
        # Debian's venvs list their pkg_resources this way; editable installs are the project.
        name, _, version = line.partition("==")
        if not line.strip() or line.startswith(("#", "-e ")) or (canonicalize_name(name), version) == (
                "pkg-resources", "0.0.0"):
            continue
        pin = pins.get(canonicalize_name(name))
        if pin is None or version not in pin.specifier:
            off.append(line)
    return off


def login(user: str, script: str, *, groups: str = "--init-groups", home: str = "") -> str:
    """`script` as `user`: a new login (its groups from /etc/group) or, with --clear-groups, a login
    that started before bootstrap added it to a group."""
    return (f"setpriv --reuid={user} --regid=$(id -g {user}) {groups} env HOME={home or '/home/' + user} "
            f"USER={user} LOGNAME={user} bash -c {shell_quote('set -euo pipefail; cd /project; ' + script)}")


def shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def bootstrapped_image(settings: Settings, log: Log) -> str:
    base = f"{settings.image_prefix}/debian:bullseye"
    baseimage.ensure(base, "bullseye", settings, log)
    buildargs = {"DEBIAN_MIRROR": baseimage.mirror(settings), **go_proxy(settings)}
    if index := registries.pip_setting("index-url"):
        buildargs["PIP_INDEX_URL"] = index
    files = {name: PROJECT / name for name in ("bootstrap", "constraints.txt")}
    args = [f"ARG {name}" for name in sorted(buildargs) if name != "DEBIAN_MIRROR"]
    if settings.ca_bundle:
        files["host-ca.crt"] = settings.ca_bundle.resolve()
        args.append(f"ARG PIP_CERT=/bootstrap/{HOST_CA.lstrip('/')}")
    dockerfile = DOCKERFILE.format(base=base, args="\n".join(args),
                                   ca="host-ca.crt" if settings.ca_bundle else "")
    digest = hashlib.sha256(dockerfile.encode() + (PROJECT / "bootstrap").read_bytes()
                            + (PROJECT / "constraints.txt").read_bytes()).hexdigest()
    tag = f"{settings.image_prefix}/test-python39:{digest[:16]}"
    if images.find(tag) is None:
        images.build(dockerfile, tag, log, buildargs=buildargs, files=files,
                     labels={images.LABEL_HASH: digest}, what="Python 3.9 test image (bullseye, bootstrap)")
    return tag


def go_proxy(settings: Settings) -> dict[str, str]:
    """GOPROXY where this machine knows one: bootstrap then needs no Go (and the image no golang-go)."""
    try:
        return {"GOPROXY": registries.go_proxy(settings)}
    except ConfigError:
        return {}


def pip_env(settings: Settings) -> dict[str, str]:
    """The machine's index (when the user set one) and CA bundle, for pip inside the container."""
    env = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", **go_proxy(settings)}
    if index := registries.pip_setting("index-url"):
        env["PIP_INDEX_URL"] = index
    if settings.ca_bundle:
        env.update(PIP_CERT=HOST_CA, SSL_CERT_FILE=HOST_CA, REQUESTS_CA_BUNDLE=HOST_CA)
    return env


def test_bootstrap_sets_up_debian_11_and_the_tool_runs_on_its_python_3_9(engine, tmp_path, cache_dir):
    settings = Settings.from_env(cache=cache_dir, dist=tmp_path / "dist")
    mounts = [Mount("/src", str(PROJECT), type="bind", read_only=True)]
    if settings.ca_bundle:
        mounts.append(Mount(HOST_CA, str(settings.ca_bundle.resolve()), type="bind", read_only=True))
    with Log("python39", tmp_path / "python39.log") as log:
        image = bootstrapped_image(settings, log)
        with Container(image, log, mounts=mounts, env=pip_env(settings), workdir="/") as box:
            def sh(script: str) -> str:
                return box.exec(["bash", "-c", f"set -euo pipefail; {script}"], capture=True)

            # What bootstrap did on the bare system, for alice.
            first = sh("cat /bootstrap.log")
            assert re.search(r"^\[bootstrap\] installing .*\bpython3 python3-venv python3-pip\b", first, re.M)
            assert re.search(r"^\[bootstrap\] nox \d+\.\d+\.\d+ installed$", first, re.M), first
            assert first.splitlines()[-1] == ("[bootstrap] ready: as alice, log in again or run "
                                              "`newgrp docker`, then run nox (nox -s build -- TARGET)"), first
            assert sh("python3 -V").split() == ["Python", "3.9.2"]
            assert sh("/opt/ollama-pipeline/nox/bin/pip --version").startswith("pip 20.3.")
            assert "docker" in sh("id -nG alice").split()
            assert off_the_pins(sh("/opt/ollama-pipeline/nox/bin/pip freeze")) == []
            sh(COPY)
            sh(STAND_IN)

            # Bootstrap again, for bob, with the engine's socket there: nothing left to install.
            second = sh("SUDO_USER=bob BOOTSTRAP_ENGINE=0 bash /project/bootstrap 2>&1")
            assert "installing" not in second and "nox is already installed" in second, second
            assert (f"added bob to the docker group (from the next login on) and to the ACL of {SOCKET} "
                    "(now)") in second and second.splitlines()[-1] == "[bootstrap] ready: run nox " \
                "(nox -s build -- TARGET)", second

            # As alice in a new login: the unit tier and the sessions a user runs first.
            nox = "nox --no-color"
            unit = sh(login("alice", f"{nox} -s tests -- tests/unit -q -p no:cacheprovider 2>&1"))
            counts = re.findall(r"^\d+ passed\b.*$", unit, re.M)  # pytest's last line; nox's follows
            assert counts, unit[-3000:]
            summary = counts[-1]
            passed = re.search(r"(\d+) passed", summary)
            assert passed and int(passed[1]) > 700 and "failed" not in summary and "error" not in summary, \
                unit[-3000:]
            assert "python3.9" in sh("ls /project/.nox/tests/lib")
            targets = sh(login("alice", f"{nox} -s targets 2>&1"))
            assert re.search(r"^gfx1103\s", targets, re.M) and re.search(r"^cpu\s", targets, re.M), targets
            plan = sh(login("alice", f"{nox} -s plan -- gfx1103 2>&1"))
            assert "gfx1103" in plan and "Session plan was successful" in plan, plan

            # Who may open the engine's socket, and what the pipeline says: one line, the fix that applies.
            def said(script: str) -> str:
                out = sh(script).strip()
                assert re.fullmatch(re.escape(UNREACHABLE) + ".+", out), out
                return out

            refused = "The socket exists but no engine answers: start it"
            assert refused in said(login("bob", PROBE, groups="--clear-groups"))  # the ACL, in bob's login
            before = said(login("alice", PROBE, groups="--clear-groups"))
            assert ("This user (alice) was added to the docker group after this login started: log in again, "
                    "or run `newgrp docker` in this shell, then try again") in before, before
            assert refused in said(login("alice", PROBE))  # logged in again
            newgrp = f"sg docker -c {shell_quote(PROBE)}"  # newgrp's non-interactive form
            assert refused in said(login("alice", newgrp, groups="--clear-groups"))
            stranger = said(login("nobody", PROBE, groups="--clear-groups", home="/tmp"))
            assert f"This user (nobody) may not use {SOCKET}: add it to the docker group" in stranger, \
                stranger

            # A plain venv: pip upgraded inside it first (pip 20.3 has no editable install of a
            # pyproject.toml-only project), then the project under constraints.
            venv = ("python3 -m venv /tmp/venv && /tmp/venv/bin/pip install -q -c constraints.txt pip && "
                    "PIP_CONSTRAINT=constraints.txt PIP_BUILD_CONSTRAINT=constraints.txt "
                    "/tmp/venv/bin/pip install -q -c constraints.txt -e . && /tmp/venv/bin/pip check && "
                    "/tmp/venv/bin/python -m pipeline targets && "
                    "/tmp/venv/bin/python -m pipeline plan gfx1103 --json")
            out = sh(login("alice", venv))
            assert off_the_pins(sh("/tmp/venv/bin/pip freeze --exclude-editable")) == []
            assert "No broken requirements" in out and re.search(r"^gfx1103\s", out, re.M), out
            assert '"name": "gfx1103"' in out
    summary_line = re.sub(r"\s+", " ", summary)
    print(f"Python 3.9.2 / pip 20.3 unit tier: {summary_line}")
