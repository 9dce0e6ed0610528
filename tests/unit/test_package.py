"""package.py: reproducible archives, written atomically, from a fake build folder."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from pipeline import stages
from pipeline.errors import PackageError
from pipeline.infra import archive as archives
from pipeline.infra.log import StageResult
from pipeline.stages import package, plan

from .conftest import package_stage

EPOCH = 1_700_000_000
BUILD_INFO = {"source_date_epoch": EPOCH, "image_id": "sha256:" + "ab" * 32}


@pytest.fixture
def build_dir(tmp_path) -> Path:
    """What a build leaves under <result>/dist: upstream's release layout."""
    root = tmp_path / "build"
    dist = root / "dist"
    (dist / "bin").mkdir(parents=True)
    (dist / "lib" / "ollama" / "rocm").mkdir(parents=True)
    ollama = dist / "bin" / "ollama"
    ollama.write_bytes(b"\x7fELF fake ollama\n")
    ollama.chmod(0o755)
    (dist / "lib" / "ollama" / "libx.so").write_bytes(b"\x7fELF fake library\n" * 100)
    (dist / "lib" / "ollama" / "rocm" / "libggml-hip.so").write_bytes(b"\x7fELF hip\n")
    os.symlink("libx.so", dist / "lib" / "ollama" / "libx.so.1")
    # Files written later than the epoch: their times must not reach the archive.
    for p in dist.rglob("*"):
        if not p.is_symlink():
            os.utime(p, (EPOCH + 12345, EPOCH + 12345))
    return root


@pytest.fixture
def the_plan(matrix, settings) -> plan.Plan:
    return stages.plan_for(matrix, matrix.targets["gfx1103"], settings)


def package_into(the_plan, build_dir, dist: Path, log) -> tuple[Path, StageResult]:
    packaged, result = package_stage(the_plan, build_dir / "dist", dist, log, epoch=EPOCH,
                                     image_id=BUILD_INFO["image_id"])
    return packaged.archive, result


def leftovers(dist: Path) -> list[str]:
    return sorted(p.name for p in dist.rglob("*") if ".partial" in p.name)


def test_same_build_gives_byte_identical_archives(the_plan, build_dir, tmp_path, log):
    a, _ = package_into(the_plan, build_dir, tmp_path / "dist-a", log)
    # Touch the build between the runs: times on disk must not reach the archive.
    os.utime(build_dir / "dist" / "bin" / "ollama", (EPOCH + 999, EPOCH + 999))
    b, _ = package_into(the_plan, build_dir, tmp_path / "dist-b", log)
    assert a == tmp_path / "dist-a" / "gfx1103" / "ollama-0.12.5-gfx1103.tar.zst"
    assert a.read_bytes() == b.read_bytes()


def test_archive_entries_are_sorted_owned_by_root_and_stamped_with_the_epoch(
        the_plan, build_dir, tmp_path, log):
    archive, _ = package_into(the_plan, build_dir, tmp_path / "dist", log)
    with archives.open_archive(archive, tmp_path) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert names == ["bin", "bin/ollama", "lib", "lib/ollama", "lib/ollama/libx.so",
                         "lib/ollama/libx.so.1",
                         "lib/ollama/manifest.json", "lib/ollama/rocm", "lib/ollama/rocm/libggml-hip.so",
                         "share/ollama/README.md", "share/ollama/install.sh", "share/ollama/ollama.env",
                         "share/ollama/ollama.service"]
        for m in members:
            assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", ""), m.name
            assert m.mtime == EPOCH, m.name
        by_name = {m.name: m for m in members}
        assert by_name["bin/ollama"].mode == 0o755
        assert by_name["lib/ollama/libx.so"].mode == 0o644
        assert by_name["lib/ollama/libx.so.1"].issym()
        assert by_name["lib/ollama/libx.so.1"].linkname == "libx.so"
        assert by_name["share/ollama/install.sh"].mode == 0o755
        env_file = tar.extractfile("share/ollama/ollama.env").read().decode()
        inner = json.load(tar.extractfile("lib/ollama/manifest.json"))
    # The 780M package sets the override that makes ROCm load gfx1100 code.
    assert "\nHSA_OVERRIDE_GFX_VERSION=11.0.0\n" in env_file
    assert inner["target"] == "gfx1103"
    assert inner["version"] == "0.12.5+gfx1103"
    assert inner["gpu_archs"] == ["gfx1100"]
    assert inner["runtime_env"]["HSA_OVERRIDE_GFX_VERSION"] == "11.0.0"
    assert inner["source_date_epoch"] == EPOCH
    assert inner["hashes"] == the_plan.hashes
    assert {"path": "lib/ollama/libx.so.1", "link": "libx.so"} in inner["files"]
    libx = next(f for f in inner["files"] if f["path"] == "lib/ollama/libx.so")
    assert libx["sha256"] == hashlib.sha256((build_dir / "dist/lib/ollama/libx.so").read_bytes()).hexdigest()


def test_gzip_header_has_no_name_and_no_time(matrix, settings, build_dir, tmp_path, log):
    target = matrix.targets["gfx1103"]
    gz = dataclasses.replace(target, package=dataclasses.replace(target.package, format="tar.gz"))
    the_plan = stages.plan_for(matrix, gz, settings)
    archive, _ = package_into(the_plan, build_dir, tmp_path / "dist", log)
    header = archive.read_bytes()[:10]
    assert header[:2] == b"\x1f\x8b"
    assert header[3] & 0x08 == 0, "FNAME flag set: the file name is in the gzip header"
    assert header[4:8] == b"\0\0\0\0", "gzip header carries a time"
    gzip.decompress(archive.read_bytes())


def test_manifest_beside_the_archive_records_its_sha256(the_plan, build_dir, tmp_path, log):
    archive, _ = package_into(the_plan, build_dir, tmp_path / "dist", log)
    outer = json.loads((tmp_path / "dist" / "gfx1103" / "manifest.json").read_text())
    assert outer["archive"] == {"name": "ollama-0.12.5-gfx1103.tar.zst", "size": archive.stat().st_size,
                                "sha256": hashlib.sha256(archive.read_bytes()).hexdigest()}
    assert outer["hashes"]["package"] == the_plan.hashes["package"]


@pytest.mark.parametrize("link", ["/usr/lib/x86_64-linux-gnu/libc.so.6", "../../../outside.so",
                                  "../../.."])
def test_symlink_leaving_the_tree_is_refused_and_nothing_is_written(the_plan, build_dir, tmp_path, log, link):
    os.symlink(link, build_dir / "dist" / "lib" / "ollama" / "libescape.so")
    dist = tmp_path / "dist"
    (dist / "gfx1103").mkdir(parents=True)
    with pytest.raises(PackageError) as info:
        package_into(the_plan, build_dir, dist, log)
    assert "lib/ollama/libescape.so is a symlink to" in str(info.value)
    assert link in str(info.value)
    assert info.value.exit_code == 7
    assert list((dist / "gfx1103").iterdir()) == []


def test_missing_ollama_binary_is_refused(the_plan, build_dir, tmp_path, log):
    (build_dir / "dist" / "bin" / "ollama").unlink()
    with pytest.raises(PackageError, match="no bin/ollama"):
        package_into(the_plan, build_dir, tmp_path / "dist", log)
    assert not (tmp_path / "dist" / "gfx1103" / the_plan.archive_name).exists()


def test_second_run_reports_cached_and_keeps_the_archive(the_plan, build_dir, tmp_path, log):
    first, result = package_into(the_plan, build_dir, tmp_path / "dist", log)
    assert result.reason == ""
    stat_before = first.stat()
    second, result = package_into(the_plan, build_dir, tmp_path / "dist", log)
    assert second == first
    assert result.reason.startswith(f"{first.name} matches package hash {the_plan.hashes['package'][:12]}")
    assert second.stat().st_ino == stat_before.st_ino
    assert second.stat().st_mtime_ns == stat_before.st_mtime_ns


def test_damaged_archive_is_rewritten(the_plan, build_dir, tmp_path, log):
    archive, _ = package_into(the_plan, build_dir, tmp_path / "dist", log)
    good = archive.read_bytes()
    archive.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
    again, result = package_into(the_plan, build_dir, tmp_path / "dist", log)
    assert result.reason == ""
    assert again.read_bytes() == good


def test_interrupted_write_keeps_the_previous_archive_and_leaves_no_partial_file(
        the_plan, build_dir, tmp_path, log, monkeypatch):
    dist = tmp_path / "dist"
    archive, _ = package_into(the_plan, build_dir, dist, log)
    previous = archive.read_bytes()
    (dist / "gfx1103" / "manifest.json").unlink()  # not current any more: the archive is rewritten

    real_addfile = tarfile.TarFile.addfile
    calls = []

    def addfile_then_interrupt(self, *args, **kwargs):
        calls.append(args[0].name)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_addfile(self, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "addfile", addfile_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        package_into(the_plan, build_dir, dist, log)
    assert len(calls) == 4
    assert archive.read_bytes() == previous
    assert leftovers(dist) == []
    assert sorted(p.name for p in (dist / "gfx1103").iterdir()) == ["SHA256SUMS", archive.name]
    assert (dist / "gfx1103" / "SHA256SUMS").read_text().endswith(f"  {archive.name}\n")


def test_edited_description_reaches_the_manifest(matrix, settings, build_dir, tmp_path, log):
    old = stages.plan_for(matrix, matrix.targets["gfx1103"], settings)
    package_into(old, build_dir, tmp_path / "dist", log)
    renamed = dataclasses.replace(matrix.targets["gfx1103"], description="Radeon 780M, renamed")
    new = stages.plan_for(matrix, renamed, settings)
    archive, _ = package_into(new, build_dir, tmp_path / "dist", log)
    outer = json.loads((tmp_path / "dist" / "gfx1103" / "manifest.json").read_text())
    assert outer["description"] == "Radeon 780M, renamed"
    with archives.open_archive(archive, tmp_path) as tar:
        assert json.load(tar.extractfile("lib/ollama/manifest.json"))["description"] == "Radeon 780M, renamed"


def test_manifest_states_the_floor_of_the_policy(the_plan, build_dir, tmp_path, log, monkeypatch):
    """The floor is the closure's: the policy, its suite, what the floor allows and what the package needs."""
    from pipeline.closure import walk as closure
    from pipeline.config.policy import load_policy

    policy = load_policy("debian-bullseye")
    found = closure.Closure(policy=policy, objects=("bin/ollama",), bundles=(), in_package={}, system={},
                            driver={}, missing={}, too_new=(), problems=(),
                            max_versions={"GLIBC": closure.VersionUse("GLIBC_2.29", "bin/ollama",
                                                                      "libm.so.6")})
    monkeypatch.setattr(package, "_closure", lambda ctx, build, policy: found)
    packaged, _ = package_stage(the_plan, build_dir / "dist", tmp_path / "dist", log)
    beside = json.loads((tmp_path / "dist" / "gfx1103" / "manifest.json").read_text())["floor"]
    assert beside == {"policy": "debian-bullseye", "suite": "bullseye",
                      "allows": {"GLIBC": "2.31", "GLIBCXX": "3.4.28", "CXXABI": "1.3.12", "GCC": "7.0.0"},
                      "needs": {"GLIBC": "GLIBC_2.29"}, "verified_on": ["bullseye"]}
    assert packaged.manifest.floor.needs["GLIBC"] == "GLIBC_2.29"


def test_install_script_checks_the_host_against_the_closures_floor(the_plan, build_dir, tmp_path, log,
                                                                   monkeypatch):
    """The numbers install.sh checks the host against are the closure's, as the manifest records them."""
    from pipeline.closure import walk as closure
    from pipeline.config.policy import load_policy

    uses = {"GLIBC": closure.VersionUse("GLIBC_2.29", "bin/ollama", "libm.so.6"),
            "GLIBCXX": closure.VersionUse("GLIBCXX_3.4.26", "lib/ollama/libggml-base.so", "libstdc++.so.6")}
    found = closure.Closure(policy=load_policy("debian-bullseye"), objects=("bin/ollama",), bundles=(),
                            in_package={}, system={}, driver={}, missing={}, too_new=(), problems=(),
                            max_versions=uses)
    monkeypatch.setattr(package, "_closure", lambda ctx, build, policy: found)
    packaged, _ = package_stage(the_plan, build_dir / "dist", tmp_path / "dist", log)
    with archives.open_archive(packaged.archive, tmp_path) as tar:
        script = tar.extractfile("share/ollama/install.sh").read().decode()
    assert "NEED_GLIBC=2.29\n" in script
    assert "NEED_LIBS=libstdc++.so.6:GLIBCXX_3.4.26\n" in script
    assert "FLOOR='Debian 11 bullseye: glibc 2.31, libstdc++ and libgcc_s of gcc 10'" in script
    assert packaged.manifest.floor.needs == {"GLIBC": "GLIBC_2.29", "GLIBCXX": "GLIBCXX_3.4.26"}
    assert [(n.family, n.version, n.library) for n in packaged.manifest.host_needs()] == [
        ("GLIBC", "GLIBC_2.29", "libm.so.6"), ("GLIBCXX", "GLIBCXX_3.4.26", "libstdc++.so.6")]


def test_a_target_that_turns_the_floor_pass_off_is_held_to_the_floor_its_libraries_have(matrix, settings):
    on = stages.plan_for(matrix, matrix.targets["gfx906"], settings)
    off_package = dataclasses.replace(on.target.package, floor_pass=False)
    off_target = dataclasses.replace(on.target, package=off_package)
    off = stages.plan_for(matrix, off_target, settings)
    assert package.policy_of(on).name == "debian-bullseye-rocm" and package.policy_of(on).floor_pass
    assert package.policy_of(off).name == "debian-rocm" and package.policy_of(off).glibc == "2.38"
    # The floor pass's data (glibc tables, compatibility library) is an input only where the pass runs.
    assert on.hashes["package"] != off.hashes["package"] and on.hashes["build"] == off.hashes["build"]
    names = {p.name for p in package._data_files(on)} - {p.name for p in package._data_files(off)}
    assert names == {"bullseye.json", "trixie.json", "abi-changes.toml", "ollama_glibc_compat.c"}
