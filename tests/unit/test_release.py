"""release.py: assembling dist/release from fake builds written by package.py itself (no Docker)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline import stages
from pipeline.cli import main
from pipeline.errors import PackageError, SelectionError
from pipeline.release import assemble as release

from .conftest import SIMPLE_DIFF, TARGETS_FILE, package_stage, patch_text

EPOCH = 1_700_000_000
IMAGE_ID = "sha256:" + "cd" * 32


@pytest.fixture
def dist(tmp_path) -> Path:
    return tmp_path / "dist"


@pytest.fixture
def with_patch(settings):
    """A patch carried by gfx1103, so its manifest (and the notes) have one."""
    settings.patches_dir.mkdir(parents=True, exist_ok=True)
    (settings.patches_dir / "0001-rocm-build-gfx1103.patch").write_text(
        patch_text("rocm: build gfx1103", SIMPLE_DIFF, targets="gfx1103", applies_to=">=0.12.4,<0.12.6",
                   status="Submitted https://github.com/ollama/ollama/pull/1"))
    return settings


def build(matrix, settings, dist: Path, log, target: str, payload: bytes = b"fake library\n",
          tag: str | None = None) -> Path:
    """What `nox -s build -- TARGET` (or TARGET@TAG) leaves in dist/<target>[@TAG]/: package.run on a fake
    build folder."""
    root = dist.parent / "build" / (target + (f"@{tag}" if tag else ""))
    shutil.rmtree(root, ignore_errors=True)
    (root / "dist" / "bin").mkdir(parents=True)
    (root / "dist" / "lib" / "ollama").mkdir(parents=True)
    ollama = root / "dist" / "bin" / "ollama"
    ollama.write_bytes(b"\x7fELF fake ollama for " + target.encode() + b"\n")
    ollama.chmod(0o755)
    (root / "dist" / "lib" / "ollama" / "libx.so").write_bytes(payload)
    chosen = matrix.targets[target] if tag is None else matrix.at(matrix.targets[target], tag)
    the_plan = stages.plan_for(matrix, chosen, settings)
    packaged, _ = package_stage(the_plan, root / "dist", dist, log, epoch=EPOCH, image_id=IMAGE_ID)
    return packaged.archive


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_release_holds_archives_renamed_manifests_sums_and_notes(matrix, with_patch, dist, log):
    cpu = build(matrix, with_patch, dist, log, "cpu")
    gfx = build(matrix, with_patch, dist, log, "gfx1103")
    result = release.assemble(["cpu", "gfx1103"], dist)
    out = dist / "release"
    assert result.folder == out
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "RELEASE_NOTES.md", "SHA256SUMS", cpu.name, f"{cpu.name}.manifest.json", gfx.name,
        f"{gfx.name}.manifest.json"])
    assert (out / gfx.name).read_bytes() == gfx.read_bytes()
    beside = (dist / "gfx1103" / "manifest.json").read_bytes()
    assert (out / f"{gfx.name}.manifest.json").read_bytes() == beside
    assert [p.name for p in result.assets] == sorted(p.name for p in out.iterdir())
    assert [e.target for e in result.entries] == ["cpu", "gfx1103"]
    assert not [p for p in dist.iterdir() if p.name.startswith(".release.")], "staging folders left"
    # The upstream versions the assets carry: in the notes' first lines and in the title publish gives.
    notes = (out / "RELEASE_NOTES.md").read_text()
    assert "\nUpstream Ollama in this release: 0.12.5 (cpu, gfx1103).\n" in notes.split("## ")[0]
    assert release.title("v2.0.0", release.folder_manifests(out)) == "v2.0.0: Ollama 0.12.5"


def test_sha256sums_is_sorted_sha256sum_format_and_checks_out(matrix, settings, dist, log):
    build(matrix, settings, dist, log, "gfx906")
    build(matrix, settings, dist, log, "cpu")
    release.assemble(["gfx906", "cpu"], dist)
    out = dist / "release"
    lines = (out / "SHA256SUMS").read_text().splitlines()
    names = [line.split("  ", 1)[1] for line in lines]
    assert names == sorted(names)
    assert set(names) == {p.name for p in out.iterdir()} - {"SHA256SUMS"}
    for line in lines:
        digest, name = line.split("  ", 1)
        assert digest == sha256(out / name), name
    if shutil.which("sha256sum"):
        subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=out, check=True)


def test_notes_name_version_commit_patches_toolchain_archs_size_sha_and_runtime_env(
        matrix, with_patch, dist, log):
    gfx = build(matrix, with_patch, dist, log, "gfx1103")
    release.assemble(["gfx1103"], dist)
    notes = (dist / "release" / "RELEASE_NOTES.md").read_text()
    manifest = json.loads((dist / "gfx1103" / "manifest.json").read_text())
    assert "## gfx1103: AMD Radeon 780M" in notes
    assert "Ollama 0.12.5" in notes
    assert "3d32249c749c6f77c1dc8a7cb55ae74fc2f4c08b" in notes
    assert "0.12.5+gfx1103" in notes
    patch = manifest["patches"][0]
    assert patch["name"] == "0001-rocm-build-gfx1103.patch"
    assert (f"| `0001-rocm-build-gfx1103.patch` | rocm: build gfx1103 | "
            f"Submitted https://github.com/ollama/ollama/pull/1 | `{patch['applies_to']}` |") in notes
    assert "builder `debian-rocm`" in notes
    assert manifest["builder"]["image"] in notes
    assert IMAGE_ID in notes
    assert ", ".join(manifest["builder"]["packages"]) in notes
    assert "- GPU archs served: gfx1100\n" in notes
    assert f"{gfx.stat().st_size} bytes" in notes
    assert sha256(gfx) in notes
    assert "export HSA_OVERRIDE_GFX_VERSION=11.0.0" in notes
    assert "in parts" not in notes


def test_target_without_patches_or_runtime_env_says_so(matrix, settings, dist, log):
    build(matrix, settings, dist, log, "gfx906")
    release.assemble(["gfx906"], dist)
    notes = (dist / "release" / "RELEASE_NOTES.md").read_text()
    assert "Patches on top of upstream: none" in notes
    assert "Runtime environment: none needed" in notes


def test_archive_over_the_limit_is_split_and_the_parts_join_back(matrix, settings, dist, log, monkeypatch):
    payload = os.urandom(20000)  # incompressible: the archive is bigger than the lowered limit
    archive = build(matrix, settings, dist, log, "cpu", payload=payload)
    small = build(matrix, settings, dist, log, "gfx906")
    size = archive.stat().st_size
    limit = size // 3 + 1  # three parts, the last one shorter
    monkeypatch.setattr(release, "ASSET_LIMIT", limit)
    assert small.stat().st_size < limit
    result = release.assemble(["cpu", "gfx906"], dist)
    out = dist / "release"
    parts = sorted(out.glob(f"{archive.name}.part-*"))
    assert [p.name for p in parts] == [f"{archive.name}.part-{i:03d}" for i in range(3)]
    assert all(p.stat().st_size <= limit for p in parts)
    assert not (out / archive.name).exists()
    assert (out / small.name).exists(), "archives under the limit stay whole"
    assert b"".join(p.read_bytes() for p in parts) == archive.read_bytes()
    sums = dict(reversed(line.split("  ", 1)) for line in (out / "SHA256SUMS").read_text().splitlines())
    for p in parts:
        assert sums[p.name] == sha256(p)
    assert sums[archive.name] == sha256(archive), "the joined archive is checked too"
    join = (out / "JOIN.md").read_text()
    command = f"cat {archive.name}.part-* > {archive.name} && sha256sum -c SHA256SUMS"
    assert command in join
    assert command in (out / "RELEASE_NOTES.md").read_text()
    assert [e.target for e in result.entries if e.split] == ["cpu"]
    # The documented command restores the archive and every sum checks out.
    if shutil.which("sha256sum"):
        subprocess.run(["sh", "-c", command], cwd=out, check=True, capture_output=True)
        assert (out / archive.name).read_bytes() == archive.read_bytes()


def test_archive_exactly_at_the_limit_stays_whole(matrix, settings, dist, log):
    archive = build(matrix, settings, dist, log, "cpu")
    release.assemble(["cpu"], dist, limit=archive.stat().st_size)
    assert (dist / "release" / archive.name).read_bytes() == archive.read_bytes()
    assert not list((dist / "release").glob("*.part-*"))


def test_archive_not_matching_its_manifest_is_refused_and_nothing_is_published(matrix, settings, dist, log):
    build(matrix, settings, dist, log, "cpu")
    archive = build(matrix, settings, dist, log, "gfx906")
    data = archive.read_bytes()
    archive.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(PackageError) as info:
        release.assemble(["cpu", "gfx906"], dist)
    message = str(info.value)
    assert "sha256" in message and "does not match" in message
    assert archive.name in message
    assert "nox -s build -- gfx906" in message
    assert info.value.exit_code == 7
    assert not (dist / "release").exists()
    assert not [p for p in dist.iterdir() if p.name.startswith(".release.")]


def test_missing_target_is_refused_naming_it_and_the_build_command(matrix, settings, dist, log):
    build(matrix, settings, dist, log, "cpu")
    with pytest.raises(PackageError) as info:
        release.assemble(["cpu", "sm_37"], dist)
    assert "'sm_37'" in str(info.value)
    assert "nox -s build -- sm_37" in str(info.value)
    assert not (dist / "release").exists()


def test_archive_without_manifest_is_refused(matrix, settings, dist, log):
    build(matrix, settings, dist, log, "cpu")
    (dist / "cpu" / "manifest.json").unlink()
    with pytest.raises(PackageError, match=r"manifest\.json is missing.*nox -s build -- cpu"):
        release.assemble(["cpu"], dist)


def test_manifest_missing_a_key_the_notes_need_is_refused(matrix, settings, dist, log):
    build(matrix, settings, dist, log, "cpu")
    path = dist / "cpu" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["builder"]["image_id"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match=r"\[builder\] missing key 'image_id'"):
        release.assemble(["cpu"], dist)


def test_failure_keeps_the_previous_release_intact(matrix, settings, dist, log, monkeypatch):
    build(matrix, settings, dist, log, "cpu")
    release.assemble(["cpu"], dist)
    out = dist / "release"
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    build(matrix, settings, dist, log, "gfx906")

    def broken(*args, **kwargs):
        raise PackageError("template broke halfway")

    monkeypatch.setattr(release, "render_notes", broken)
    with pytest.raises(PackageError, match="template broke halfway"):
        release.assemble(["cpu", "gfx906"], dist)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in dist.iterdir() if p.name.startswith(".")) == []


def test_failed_swap_puts_the_previous_release_back(matrix, settings, dist, log, monkeypatch):
    build(matrix, settings, dist, log, "cpu")
    release.assemble(["cpu"], dist)
    out = dist / "release"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_rename = os.rename

    def rename(src, dst):
        if Path(dst) == out and Path(src).parent.name.endswith(".partial"):
            raise OSError("disk trouble")
        return real_rename(src, dst)

    monkeypatch.setattr(release.os, "rename", rename)
    with pytest.raises(OSError, match="disk trouble"):
        release.assemble(["cpu"], dist, limit=10)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in dist.iterdir() if p.name.startswith(".")] == []


def test_second_release_replaces_the_first(matrix, settings, dist, log):
    build(matrix, settings, dist, log, "cpu")
    build(matrix, settings, dist, log, "gfx906")
    release.assemble(["cpu", "gfx906"], dist)
    release.assemble(["cpu"], dist)
    assert not list((dist / "release").glob("*gfx906*"))


def test_built_lists_targets_with_archives_in_matrix_order(matrix, settings, dist, log):
    build(matrix, settings, dist, log, "sm_37")
    build(matrix, settings, dist, log, "cpu")
    (dist / "gfx906").mkdir()  # a folder without an archive is not a build
    assert release.built(dist, matrix.targets) == ["cpu", "sm_37"]


def test_built_with_nothing_built_is_refused(matrix, dist):
    with pytest.raises(PackageError, match=r"no target has a built archive.*nox -s build -- TARGET"):
        release.built(dist, matrix.targets)


def test_cli_release_defaults_to_built_targets_and_dry_run_prints_the_publish_command(
        matrix, settings, dist, log, capsys, monkeypatch):
    cpu = build(matrix, settings, dist, log, "cpu")
    sm37 = build(matrix, settings, dist, log, "sm_37")
    monkeypatch.setenv("GITHUB_REF_NAME", "v1.2.3")
    assert main(["release", "--dry-run", "--dist", str(dist), "--targets-file", str(TARGETS_FILE)]) == 0
    out = capsys.readouterr().out
    assert "nox -s publish -- v1.2.3" in out
    assert "gh release create --draft --verify-tag" in out
    assert sm37.name in out
    assert "nothing is published" in out
    dry_run = sorted(p.name for p in (dist / "release.dry-run").glob("*.tar.zst"))
    assert dry_run == sorted([cpu.name, sm37.name])
    assert not (dist / "release").exists()


def test_cli_release_of_an_unbuilt_target_exits_7_naming_the_build_command(
        matrix, settings, dist, log, capsys):
    build(matrix, settings, dist, log, "cpu")
    assert main(["release", "gfx*", "--dist", str(dist)]) == 7
    err = capsys.readouterr().err
    assert err.startswith("error: target 'gfx1103' has no built archive")
    assert "nox -s build -- gfx1103" in err


def test_cli_release_all_refuses_a_partial_release(matrix, settings, dist, log, capsys):
    build(matrix, settings, dist, log, "cpu")
    assert main(["release", "--all", "--dist", str(dist)]) == 7
    assert "target 'gfx1103' has no built archive" in capsys.readouterr().err
    assert not (dist / "release").exists()


def test_cli_release_of_an_unknown_target_exits_with_the_selection_code(dist, capsys):
    assert main(["release", "nosuch", "--dist", str(dist)]) == SelectionError.exit_code
    assert "unknown target 'nosuch'" in capsys.readouterr().err


def test_unpack_command_of_the_notes_matches_a_tar_zst_archive(matrix, settings, dist, log):
    archive = build(matrix, settings, dist, log, "gfx906")
    release.assemble(["gfx906"], dist)
    notes = (dist / "release" / "RELEASE_NOTES.md").read_text()
    assert archive.name.endswith(".tar.zst")
    assert "tar -C /usr/local --zstd -xf ollama-….tar.zst" in notes
    assert "-xzf" not in notes


def test_notes_state_the_floor_each_package_runs_on(matrix, settings, dist, log, monkeypatch):
    from pipeline.closure import walk as closure
    from pipeline.config.policy import load_policy
    from pipeline.stages import package

    policy = load_policy("debian-bullseye")
    found = closure.Closure(policy=policy, objects=("bin/ollama",), bundles=(), in_package={}, system={},
                            driver={}, missing={}, too_new=(), problems=(),
                            max_versions={"GLIBC": closure.VersionUse("GLIBC_2.29", "bin/ollama",
                                                                      "libm.so.6"),
                                          "GLIBCXX": closure.VersionUse("GLIBCXX_3.4.26", "bin/ollama",
                                                                        "libstdc++.so.6")})
    monkeypatch.setattr(package, "_closure", lambda ctx, build, policy: found)
    build(matrix, settings, dist, log, "cpu")
    notes = (release.assemble(["cpu"], dist).folder / "RELEASE_NOTES.md").read_text()
    assert ("Runs on: glibc 2.31 and libstdc++ with GLIBCXX_3.4.28 or newer (floor `debian-bullseye`, "
            "verified on a clean Debian bullseye); its ELF files need at most GLIBC_2.29, "
            "GLIBCXX_3.4.26") in notes


def test_targets_json_states_each_targets_floor(matrix, capsys):
    assert main(["targets", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name, target in matrix.targets.items():
        policy = matrix.builders[target.builder].policy
        if policy:
            assert rows[name]["floor"]["policy"] == policy and rows[name]["floor"]["GLIBC"]


def test_a_target_released_at_two_upstream_versions_gives_two_assets_each_with_its_reason(
        matrix, settings, dist, log):
    old = build(matrix, settings, dist, log, "gfx1103")
    new = build(matrix, settings, dist, log, "gfx1103", tag="v0.24.0")
    assert (old.parent.name, new.parent.name) == ("gfx1103", "gfx1103@v0.24.0")
    builds = [release.Build(target="gfx1103", folder="gfx1103", note="known to work on the 780M"),
              release.Build(target="gfx1103", folder="gfx1103@v0.24.0", note="current upstream")]
    result = release.assemble(builds, dist)
    assert [e.archive.name for e in result.entries] == ["ollama-0.12.5-gfx1103.tar.zst",
                                                        "ollama-0.24.0-gfx1103.tar.zst"]
    assert [e.manifest.upstream.version for e in result.entries] == ["0.12.5", "0.24.0"]
    notes = (result.folder / "RELEASE_NOTES.md").read_text()
    assert "Why Ollama 0.12.5 for this target: known to work on the 780M" in notes
    assert "Why Ollama 0.24.0 for this target: current upstream" in notes
    assert release.built(dist, builds) == builds
