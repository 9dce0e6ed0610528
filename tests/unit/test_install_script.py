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
from pipeline.closure import walk
from pipeline.config.policy import load_policy
from pipeline.stages import manifest as schema
from pipeline.stages import package, plan

FAKE_ID = '#!/bin/sh\n[ "$1" = -u ] && { echo 1000; exit 0; }\nexit 1\n'
FAKE_GETENT = ('#!/bin/sh\n[ "$1" = group ] || exit 2\n'
               'for g in ${FAKE_GROUPS:-}; do [ "$g" = "$2" ] && { echo "$2:x:44:"; exit 0; }; done\nexit '
               '2\n')


def manifest_needing(the_plan, **versions: str) -> schema.Manifest:
    """The manifest of a package of the plan's policy whose files need these versions (GLIBC="2.31",
    GLIBCXX="3.4.28") of the system's libraries, recorded as the package stage records a real closure."""
    libraries = {"GLIBC": "libc.so.6", "GLIBCXX": "libstdc++.so.6", "CXXABI": "libstdc++.so.6",
                 "GCC": "libgcc_s.so.1"}
    policy = load_policy(the_plan.builder.policy)
    found = walk.Closure(policy=policy, objects=("bin/ollama",), bundles=(),
                         in_package={}, system={}, driver={}, missing={}, too_new=(), problems=(),
                         max_versions={p: walk.VersionUse(f"{p}_{v}", "bin/ollama", libraries[p])
                                       for p, v in versions.items()})
    return schema.Manifest.from_dict({
        "manifest_version": schema.VERSION, "target": the_plan.name, "description": "", "version": "1",
        "upstream": {"url": "u", "tag": "v1", "commit": "0" * 40, "version": "1"}, "patches": [],
        "builder": {"name": "b", "image": "b:1", "image_id": "sha256:0", "template": "t", "suite": "s",
                    "packages": []},
        "backends": [], "gpu_archs": [], "runtime_env": {}, "hashes": {}, "source_date_epoch": 1,
        "files": [], "floor": {"policy": policy.name, "suite": policy.suite,
                               "needs": {p: u.version for p, u in found.max_versions.items()}},
        "libraries": found.to_dict()}, "test")


def unpack_fake(root: Path, the_plan, *, env_text: str | None = None, marker: str = "one",
                manifest: schema.Manifest | None = None, ollama: str | None = None) -> Path:
    """An unpacked archive: a stand-in bin/ollama (`ollama`: its script), lib/ollama with the manifest's
    file and the real share/ollama files, rendered with the floor of `manifest`."""
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "ollama").mkdir(parents=True)
    (root / "bin" / "ollama").write_text(ollama or f"#!/bin/sh\necho {marker}\n")
    (root / "bin" / "ollama").chmod(0o755)
    (root / "lib" / "ollama" / f"lib-{marker}.so").write_text(marker)
    (root / "lib" / "ollama" / "manifest.json").write_text("{}\n")
    for rel, data in package.runtime_files(the_plan, manifest).items():
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
    assert sorted(p.name for p in (prefix / "lib" / "ollama").iterdir()) == ["lib-two.so", "manifest.json"]
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


# --- what the host can run, checked before anything changes -------------------------------------------

HOST_GLIBC = os.confstr("CS_GNU_LIBC_VERSION").split()[-1]


def tree(path: Path) -> list[tuple[str, int, int]]:
    """Every path under `path` with its size and mode: what 'nothing changed' compares."""
    if not path.exists():
        return []
    return sorted((str(p.relative_to(path)), p.lstat().st_size, p.lstat().st_mode) for p in path.rglob("*"))


@pytest.mark.parametrize("versions, named", [
    ({"GLIBC": "99.1"}, f"glibc 99.1 or newer (this system has {HOST_GLIBC})"),
    ({"GLIBC": "2.17", "GLIBCXX": "3.4.99"}, "GLIBCXX_3.4.99 from libstdc++.so.6 (the one at /"),
    ({"GLIBC": "2.17", "CXXABI": "1.3.99"}, "CXXABI_1.3.99 from libstdc++.so.6"),
    ({"GLIBC": "2.17", "GCC": "99.0.0"}, "GCC_99.0.0 from libgcc_s.so.1"),
])
def test_a_floor_the_host_does_not_meet_is_refused_in_one_line_and_nothing_changes(
        the_plan, tmp_path, fake_bin, versions, named):
    pkg = unpack_fake(tmp_path / "pkg", the_plan, manifest=manifest_needing(the_plan, **versions))
    before = tree(tmp_path)
    done = install(pkg, fake_bin, str(tmp_path / "prefix"))
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert named in done.stderr and "cannot run Ollama 0.12.5+gfx1103" in done.stderr
    assert "the package's floor is Debian 11 bullseye, ROCm libraries lowered" in done.stderr
    assert done.stderr.rstrip().endswith("nothing was installed or changed")
    assert tree(tmp_path) == before


def test_every_unmet_need_is_named_on_the_same_line(the_plan, tmp_path, fake_bin):
    pkg = unpack_fake(tmp_path / "pkg", the_plan,
                      manifest=manifest_needing(the_plan, GLIBC="99.0", GLIBCXX="3.4.99", CXXABI="1.3.8"))
    done = install(pkg, fake_bin, "--check")
    assert done.returncode == 3 and done.stderr.count("\n") == 1
    assert "glibc 99.0" in done.stderr and "GLIBCXX_3.4.99" in done.stderr
    assert "CXXABI_1.3.8" not in done.stderr  # met: every libstdc++ since gcc 4.3 defines it


def test_a_floor_the_host_meets_installs_and_the_script_carries_the_closures_numbers(
        the_plan, tmp_path, fake_bin):
    pkg = unpack_fake(tmp_path / "pkg", the_plan,
                      manifest=manifest_needing(the_plan, GLIBC=HOST_GLIBC, GLIBCXX="3.4.9", GCC="3.0"))
    script = (pkg / "share" / "ollama" / "install.sh").read_text()
    assert f"NEED_GLIBC={HOST_GLIBC}\n" in script
    assert "NEED_LIBS='libgcc_s.so.1:GCC_3.0 libstdc++.so.6:GLIBCXX_3.4.9'" in script
    done = install(pkg, fake_bin, str(tmp_path / "prefix"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "prefix" / "bin" / "ollama").exists()


def test_check_says_the_host_can_run_it_and_changes_nothing(the_plan, tmp_path, fake_bin):
    pkg = unpack_fake(tmp_path / "pkg", the_plan, manifest=manifest_needing(the_plan, GLIBC="2.17"))
    before = tree(tmp_path)
    done = install(pkg, fake_bin, "--check", str(tmp_path / "prefix"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == (
        "this system can run Ollama 0.12.5+gfx1103 (floor: Debian 11 bullseye, ROCm libraries lowered by the "
        "floor pass: glibc 2.31, gcc 10's libstdc++ on the host, the builder's beside the ROCm libraries)")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("script, named", [
    ("#!/bin/sh\necho 'error while loading shared libraries: libfoo.so.1' >&2\nexit 127\n",
     "exits with status 127: error while loading shared libraries: libfoo.so.1"),
    ("#!/bin/sh\nexit 1\n", "exits with status 1: no output"),
    ("not a program at all\n", "exits with status"),
])
def test_a_binary_that_does_not_start_is_refused_before_anything_changes(
        the_plan, tmp_path, fake_bin, script, named):
    pkg = unpack_fake(tmp_path / "pkg", the_plan, ollama=script)
    before = tree(tmp_path)
    done = install(pkg, fake_bin, str(tmp_path / "prefix"))
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and named in done.stderr and "bin/ollama --version" in done.stderr
    assert tree(tmp_path) == before


def test_a_missing_binary_is_refused_naming_it(the_plan, tmp_path, fake_bin):
    pkg = unpack_fake(tmp_path / "pkg", the_plan)
    (pkg / "bin" / "ollama").unlink()
    done = install(pkg, fake_bin, str(tmp_path / "prefix"))
    assert done.returncode == 3 and f"{pkg}/bin/ollama is missing" in done.stderr
    assert not (tmp_path / "prefix").exists()


@pytest.mark.parametrize("args, why", [
    (["--frobnicate"], "unknown option --frobnicate"),
    (["--wait", "soon"], "--wait takes whole seconds"),
    (["--wait"], "--wait needs a number of seconds"),
    (["/opt/a", "/opt/b"], "one PREFIX at most"),
])
def test_bad_arguments_are_one_line_with_the_usage(the_plan, tmp_path, fake_bin, args, why):
    pkg = unpack_fake(tmp_path / "pkg", the_plan)
    done = install(pkg, fake_bin, *args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and why in done.stderr and "usage: install.sh" in done.stderr


# --- uninstall ------------------------------------------------------------------------------------------

def test_uninstall_removes_what_install_put_there_and_nothing_else(the_plan, tmp_path, fake_bin):
    prefix = tmp_path / "prefix"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "other-tool").write_text("mine")
    (prefix / "share" / "doc").mkdir(parents=True)
    pkg = unpack_fake(tmp_path / "pkg", the_plan)
    assert install(pkg, fake_bin, str(prefix)).returncode == 0
    done = install(pkg, fake_bin, "--uninstall", str(prefix))
    assert done.returncode == 0, done.stderr
    assert f"removed Ollama 0.12.5+gfx1103 from {prefix}" in done.stdout
    assert [name for name, _, _ in tree(prefix)] == ["bin", "bin/other-tool", "lib", "share", "share/doc"]


def test_uninstall_keeps_an_edited_env_and_says_so(the_plan, tmp_path, fake_bin):
    prefix = tmp_path / "prefix"
    pkg = unpack_fake(tmp_path / "pkg", the_plan)
    install(pkg, fake_bin, str(prefix))
    env = prefix / "share" / "ollama" / "ollama.env"
    env.write_text("OLLAMA_KEEP_ALIVE=1h\n")
    done = install(pkg, fake_bin, "--uninstall", str(prefix))
    assert done.returncode == 0 and f"kept your edited {env}" in done.stdout
    assert [p.name for p in env.parent.iterdir()] == ["ollama.env"]
    assert not (prefix / "lib" / "ollama").exists() and not (prefix / "bin" / "ollama").exists()


def test_uninstall_of_a_prefix_without_the_package_is_refused_and_removes_nothing(
        the_plan, tmp_path, fake_bin):
    prefix = tmp_path / "prefix"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "ollama").write_text("someone else's ollama")
    pkg = unpack_fake(tmp_path / "pkg", the_plan)
    before = tree(prefix)
    done = install(pkg, fake_bin, "--uninstall", str(prefix))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "lib/ollama/manifest.json is missing" in done.stderr
    assert tree(prefix) == before


# --- hints: what else the GPU needs from the host, said and never refused ---------------------------------

def plan_of(matrix, settings, name: str) -> plan.Plan:
    return stages.plan_for(matrix, matrix.targets[name], settings)


@pytest.mark.parametrize("driver, note", [
    (None, "no NVIDIA driver found (nvidia-smi): this package needs the R470 driver"),
    ("535.183.01", "NVIDIA driver 535.183.01 found; this package's GPU needs the R470 branch"),
    ("470.256.02", None),
])
def test_the_k80_package_names_the_r470_driver_it_needs(matrix, settings, tmp_path, fake_bin, driver, note):
    if driver is not None:  # the driver's tool as it answers; a real one cannot be on this machine
        (fake_bin / "nvidia-smi").write_text(f"#!/bin/sh\necho {driver}\n")
        (fake_bin / "nvidia-smi").chmod(0o755)
    elif shutil.which("nvidia-smi"):
        pytest.skip("this machine has an NVIDIA driver")
    pkg = unpack_fake(tmp_path / "pkg", plan_of(matrix, settings, "sm_37"))
    done = install(pkg, fake_bin, "--check")
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stdout.splitlines() if line.startswith("note:")]
    assert len(notes) == (1 if note else 0) and (not note or notes[0].startswith(f"note: {note}")), notes


def test_the_rocm_packages_say_when_the_amdgpu_compute_device_is_missing(matrix, settings, tmp_path,
                                                                          fake_bin):
    if Path("/dev/kfd").exists():
        pytest.skip("this machine has /dev/kfd")
    for name in ("gfx1103", "gfx906"):
        pkg = unpack_fake(tmp_path / name, plan_of(matrix, settings, name))
        done = install(pkg, fake_bin, "--check")
        assert done.returncode == 0
        assert "note: /dev/kfd is missing" in done.stdout


def test_the_cpu_package_has_no_gpu_notes(matrix, settings, tmp_path, fake_bin):
    pkg = unpack_fake(tmp_path / "pkg", plan_of(matrix, settings, "cpu"))
    done = install(pkg, fake_bin, "--check")
    assert done.returncode == 0 and "note:" not in done.stdout


def test_the_vulkan_package_names_the_loader_and_driver_it_needs(matrix, settings, tmp_path, fake_bin):
    script = (unpack_fake(tmp_path / "pkg", plan_of(matrix, settings, "vulkan"))
              / "share" / "ollama" / "install.sh").read_text()
    assert ("note: libvulkan.so.1 is missing: install libvulkan1 and a Vulkan driver (Debian/Ubuntu: "
            "mesa-vulkan-drivers)") in script
    done = install(tmp_path / "pkg", fake_bin, "--check")
    assert done.returncode == 0
    has_loader = any(Path(d, "libvulkan.so.1").exists()
                     for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/lib64"))
    assert ("note: libvulkan.so.1 is missing" in done.stdout) == (not has_loader)
