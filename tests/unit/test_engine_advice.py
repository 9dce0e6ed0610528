"""When the Docker engine does not answer, the message names the fix that applies: start the engine,
or join the socket's group (log in again / newgrp after bootstrap added the user), never the wrong one.
The socket is a real Unix socket in a temporary folder (no engine behind it), reached by a real process
of an unprivileged user where the tests run as root."""

from __future__ import annotations

import grp
import os
import pwd
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pipeline.infra import engine

from .conftest import PROJECT

# Imports first, then (as root) the drop to nobody: the interpreter may live where nobody cannot read.
PROBE = """
import os, pwd, sys
from pipeline.errors import DockerError
from pipeline.infra import engine
if sys.argv[1] == "nobody":
    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)
try:
    engine.client()
except DockerError as exc:
    print(exc)
"""


def probe(docker_host: str, as_nobody: bool = False) -> str:
    env = {**os.environ, "DOCKER_HOST": docker_host, "PYTHONPATH": str(PROJECT)}
    out = subprocess.run([sys.executable, "-c", PROBE, "nobody" if as_nobody else "me"], capture_output=True,
                         text=True, env=env, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def bound():
    folder = tempfile.TemporaryDirectory()  # not under pytest's folder, which only its owner may enter
    os.chmod(folder.name, 0o755)
    path = Path(folder.name) / "docker.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))  # bound, not bound: a connection is refused at once, as with no engine
    yield path
    sock.close()
    folder.cleanup()


def test_no_socket_says_start_the_engine(tmp_path):
    message = probe(f"unix://{tmp_path}/none.sock")
    assert "No engine listens there: start it" in message and "group" not in message


def test_a_socket_without_an_engine_says_start_the_engine(bound):
    os.chmod(bound, 0o666)
    assert "The socket exists but no engine answers: start it" in probe(f"unix://{bound}")


@pytest.mark.skipif(os.geteuid() != 0 and os.access("/", os.W_OK), reason="needs root or a normal user")
def test_a_socket_this_user_may_not_open_names_the_fix(bound):
    group = grp.getgrgid(os.stat(bound).st_gid).gr_name
    os.chmod(bound, 0o660)
    if os.geteuid() == 0:
        message = probe(f"unix://{bound}", as_nobody=True)
        assert f"This user (nobody) may not use {bound}: add it to the {group} group" in message
        assert f"sudo usermod -aG {group} nobody" in message and f"newgrp {group}" in message
    else:
        # A normal user's own socket is in its own group: only the mode can keep it out.
        os.chmod(bound, 0)
        message = probe(f"unix://{bound}")
        user = pwd.getpwuid(os.geteuid()).pw_name
        assert f"This user ({user}) is in group {group} but may not use {bound}; check its permissions" \
            in message
    assert "start" not in message


def test_a_user_added_to_the_group_after_login_is_told_to_log_in_again(monkeypatch):
    # The group file lists this user but the running process was started before: the real case is what
    # `sudo ./bootstrap` leaves behind; here the group entry is given, the process's groups are real.
    me = pwd.getpwuid(os.geteuid()).pw_name
    entry = grp.struct_group(("docker", "x", 4242, [me]))
    monkeypatch.setattr(grp, "getgrgid", lambda gid: entry)
    assert 4242 not in os.getgroups()
    message = engine.permission_advice("/var/run/docker.sock", 4242)
    assert "added to the docker group after this login started: log in again, or run `newgrp docker`" \
        in message


def test_a_remote_engine_is_not_told_to_start_dockerd():
    assert "DOCKER_HOST names" in engine.advice("tcp://10.0.0.1:2375")
    assert engine.socket_of("") == "/var/run/docker.sock"
