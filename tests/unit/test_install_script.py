"""share/ollama/install.sh as users meet it, run with sh on the host into a temporary prefix.

A stand-in `id` makes the script see an unprivileged user, so it never touches the system's services,
and a stand-in `getent` decides which groups exist. The service part (root, systemd) is exercised in a
clean container by tests/integration/test_install_script.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline import stages
from pipeline.stages import package, plan

FAKE_ID = '#!/bin/sh\n[ "$1" = -u ] && { echo 1000; exit 0; }\nexit 1\n'
FAKE_GETENT = ('#!/bin/sh\n[ "$1" = group ] || exit 2\n'
               'for g in ${FAKE_GROUPS:-}; do [ "$g" = "$2" ] && { echo "$2:x:44:"; exit 0; }; done\nexit '
               '2\n')


def unpack_fake(root: Path, the_plan, *, env_text: str | None = None, marker: str = "one") -> Path:
    """An unpacked archive: a stand-in bin/ollama, lib/ollama and the real share/ollama files."""
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "ollama").mkdir(parents=True)
    (root / "bin" / "ollama").write_text(f"#!/bin/sh\necho {marker}\n")
    (root / "bin" / "ollama").chmod(0o755)
    (root / "lib" / "ollama" / f"lib-{marker}.so").write_text(marker)
    for rel, data in package.runtime_files(the_plan).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if rel.endswith(".sh"):
            path.chmod(0o755)
    if env_text is not None:
        (root / "share" / "ollama" / "ollama.env").write_text(env_text)
    return root


@pytest.fixture
def the_plan(matrix, settings) -> plan.Plan:
    return stages.plan_for(matrix, matrix.targets["gfx1103"], settings)


@pytest.fixture
def fake_bin(tmp_path) -> Path:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    for name, text in {"id": FAKE_ID, "getent": FAKE_GETENT}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def install(pkg: Path, fake_bin: Path, *args: str, groups: str = "video") -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "FAKE_GROUPS": groups}
    return subprocess.run(["sh", str(pkg / "share" / "ollama" / "install.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("prefix, why", [
    ("opt/ollama", "not an absolute path"),
    ("/opt/../etc", "no . or .. components"),
    ("/opt/./ollama", "no . or .. components"),
    ("/opt/my ollama", "only letters"),
    ("/opt/x;rm -rf y", "only letters"),
    ("/opt/$(id)", "only letters"),
    ("/", "not the root folder"),
    ("//", "not the root folder"),
])
def test_unsafe_prefix_is_refused_with_one_line(the_plan, tmp_path, fake_bin, prefix, why):
    pkg = unpack_fake(tmp_path / "pkg", the_plan)
    done = install(pkg, fake_bin, prefix)
    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and why in done.stderr and "refusing prefix" in done.stderr


def test_fresh_install_copies_the_package_and_says_how_to_start(the_plan, tmp_path, fake_bin):
    pkg = unpack_fake(tmp_path / "pkg", the_plan)
    prefix = tmp_path / "prefix"
    done = install(pkg, fake_bin, f"{prefix}/")
    assert done.returncode == 0, done.stderr
    assert subprocess.run([prefix / "bin" / "ollama"], capture_output=True, text=True).stdout == "one\n"
    assert (prefix / "lib" / "ollama" / "lib-one.so").exists()
    assert sorted(p.name for p in (prefix / "share" / "ollama").iterdir()) == [
        "README.md", "install.sh", "ollama.env", "ollama.env.default", "ollama.service"]
    assert "no service installed" in done.stdout and f"{prefix}/bin/ollama serve" in done.stdout


def test_upgrade_replaces_lib_ollama_whole(the_plan, tmp_path, fake_bin):
    prefix = tmp_path / "prefix"
    install(unpack_fake(tmp_path / "v1", the_plan, marker="one"), fake_bin, str(prefix))
    done = install(unpack_fake(tmp_path / "v2", the_plan, marker="two"), fake_bin, str(prefix))
    assert done.returncode == 0, done.stderr
    assert [p.name for p in (prefix / "lib" / "ollama").iterdir()] == ["lib-two.so"]
    assert subprocess.run([prefix / "bin" / "ollama"], capture_output=True, text=True).stdout == "two\n"


def test_archive_unpacked_into_the_prefix_installs_in_place(the_plan, tmp_path, fake_bin):
    prefix = unpack_fake(tmp_path / "prefix", the_plan)
    done = install(prefix, fake_bin, str(prefix))
    assert done.returncode == 0, done.stderr
    assert "already unpacked" in done.stdout
    assert (prefix / "lib" / "ollama" / "lib-one.so").exists()
    assert (prefix / "bin" / "ollama").exists()


def test_edited_env_survives_an_upgrade_and_new_defaults_land_beside_it(the_plan, tmp_path, fake_bin):
    prefix = tmp_path / "prefix"
    install(unpack_fake(tmp_path / "v1", the_plan, env_text="A=1\n"), fake_bin, str(prefix))
    env = prefix / "share" / "ollama" / "ollama.env"
    env.write_text("A=1\nOLLAMA_KEEP_ALIVE=1h\n")

    done = install(unpack_fake(tmp_path / "v2", the_plan, env_text="A=2\n"), fake_bin, str(prefix))

    assert done.returncode == 0, done.stderr
    assert env.read_text() == "A=1\nOLLAMA_KEEP_ALIVE=1h\n"
    assert (prefix / "share" / "ollama" / "ollama.env.new").read_text() == "A=2\n"
    assert f"kept your edited {env}" in done.stdout


def test_edited_env_with_unchanged_defaults_is_kept_quietly(the_plan, tmp_path, fake_bin):
    prefix = tmp_path / "prefix"
    install(unpack_fake(tmp_path / "v1", the_plan, env_text="A=1\n"), fake_bin, str(prefix))
    env = prefix / "share" / "ollama" / "ollama.env"
    env.write_text("A=mine\n")
    done = install(unpack_fake(tmp_path / "v2", the_plan, env_text="A=1\n"), fake_bin, str(prefix))
    assert env.read_text() == "A=mine\n"
    assert not (prefix / "share" / "ollama" / "ollama.env.new").exists()
    assert "kept" not in done.stdout


def test_unedited_env_takes_the_new_defaults(the_plan, tmp_path, fake_bin):
    prefix = tmp_path / "prefix"
    install(unpack_fake(tmp_path / "v1", the_plan, env_text="A=1\n"), fake_bin, str(prefix))
    install(unpack_fake(tmp_path / "v2", the_plan, env_text="A=2\n"), fake_bin, str(prefix))
    assert (prefix / "share" / "ollama" / "ollama.env").read_text() == "A=2\n"
    assert not (prefix / "share" / "ollama" / "ollama.env.new").exists()


@pytest.mark.parametrize("groups, line", [("video render", "SupplementaryGroups=video render"),
                                          ("video", "SupplementaryGroups=video"),
                                          ("", None)])
def test_unit_names_only_groups_the_system_has(the_plan, tmp_path, fake_bin, groups, line):
    pkg = unpack_fake(tmp_path / "pkg", the_plan)
    done = install(pkg, fake_bin, "--unit", "/opt/ollama", groups=groups)
    assert done.returncode == 0, done.stderr
    unit = done.stdout
    assert "ExecStart=/opt/ollama/bin/ollama serve" in unit
    assert "EnvironmentFile=/opt/ollama/share/ollama/ollama.env" in unit
    assert "@" not in unit.replace("ollama.service", "")
    supplementary = [x for x in unit.splitlines() if x.startswith("SupplementaryGroups")]
    assert supplementary == ([line] if line else [])


def test_unwritable_prefix_asks_for_root(the_plan, tmp_path, fake_bin):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    pkg = unpack_fake(tmp_path / "pkg", the_plan)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    done = install(pkg, fake_bin, str(locked / "prefix"))
    shutil.rmtree(locked, ignore_errors=True)
    assert done.returncode == 1 and "run as root" in done.stderr
