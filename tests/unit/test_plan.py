"""stages.plan_for: stage hashes (inputs only, chained) and the build steps of Ollama's build interface."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline import stages
from pipeline.config.settings import Settings
from pipeline.errors import ConfigError
from pipeline.stages import builder as builder_stage
from pipeline.upstream import layouts

from .conftest import SIMPLE_DIFF, patch_text


def add_patch(settings, name: str, diff: str = SIMPLE_DIFF, **header) -> None:
    settings.patches_dir.mkdir(exist_ok=True)
    (settings.patches_dir / name).write_text(patch_text(name, diff, **header))


def changed(a: dict, b: dict) -> set[str]:
    assert a.keys() == b.keys()
    return {stage for stage in a if a[stage] != b[stage]}


def affected(*first: str) -> set[str]:
    """`first` and every stage of the table whose hash folds in one of them."""
    out = set(first)
    for stage in stages.STAGES:
        if out & set(stage.needs):
            out.add(stage.name)
    return out


def argv_of(p, label: str) -> tuple[str, ...]:
    (step,) = [s for s in p.steps if s.label == label]
    return step.argv


def test_every_stage_has_a_hash(matrix, settings):
    p = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    assert list(p.hashes) == stages.names()
    assert all(len(h) == 64 for h in p.hashes.values())


def test_hashes_are_deterministic(matrix, settings):
    first = stages.plan_for(matrix, matrix.targets["gfx1103"], settings)
    second = stages.plan_for(matrix, matrix.targets["gfx1103"], settings)
    assert first.hashes == second.hashes
    assert builder_stage.image_tag(first, settings) == builder_stage.image_tag(second, settings)


def test_targets_differ_in_build_and_package_hashes(matrix, settings):
    gfx906 = stages.plan_for(matrix, matrix.targets["gfx906"], settings)
    at_same_tag = matrix.at(matrix.targets["gfx1103"], gfx906.target.source.tag)
    gfx1103 = stages.plan_for(matrix, at_same_tag, settings)
    # Same source, no patches, same builder: only what is built differs.
    assert changed(gfx1103.hashes, gfx906.hashes) == affected("build")


def test_changing_a_patch_changes_patches_build_and_package_but_not_builder(matrix, settings):
    add_patch(settings, "0001-fix.patch")
    before = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    add_patch(settings, "0001-fix.patch", SIMPLE_DIFF.replace("+b", "+c"))
    after = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    assert changed(before.hashes, after.hashes) == affected("patches")
    assert after.patches[0].sha256 != before.patches[0].sha256


def test_adding_a_patch_changes_the_patches_hash(matrix, settings):
    plain = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    add_patch(settings, "0001-fix.patch")
    patched = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    assert changed(plain.hashes, patched.hashes) == affected("patches")


def test_a_target_carries_only_patches_that_name_it_and_admit_its_version(matrix, settings):
    add_patch(settings, "0001-for-cpu.patch", targets="cpu gfx906")
    add_patch(settings, "0002-for-gfx906.patch", targets="gfx906")
    add_patch(settings, "0003-too-old.patch", targets="cpu", applies_to="<0.12.5")
    add_patch(settings, "0004-exactly-this.patch", targets="cpu", applies_to="==0.12.5")
    cpu = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    gfx906 = stages.plan_for(matrix, matrix.targets["gfx906"], settings)
    assert [p.name for p in cpu.patches] == ["0001-for-cpu.patch", "0004-exactly-this.patch"]
    assert [p.name for p in gfx906.patches] == ["0001-for-cpu.patch", "0002-for-gfx906.patch"]


def test_changing_builder_packages_changes_builder_build_and_package_only(matrix, settings):
    before = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    b = matrix.builders["debian-cpu"]
    more = dataclasses.replace(b, packages=(*b.packages, "vim"))
    other = dataclasses.replace(matrix, builders={**matrix.builders, "debian-cpu": more})
    after = stages.plan_for(other, other.targets["cpu"], settings)
    # The cpu target's builder is its own host builder.
    assert changed(before.hashes, after.hashes) == affected("builder", "host_builder")
    assert builder_stage.image_tag(after, settings) != builder_stage.image_tag(before, settings)
    assert "vim" in builder_stage.key(after, settings)


def test_source_url_override_changes_no_hash(matrix, settings, tmp_path):
    default = stages.plan_for(matrix, matrix.targets["gfx906"], settings)
    mirrored = stages.plan_for(matrix, matrix.targets["gfx906"],
                         dataclasses.replace(settings, source=str(tmp_path / "mirror.git")))
    assert mirrored.source_url == str(tmp_path / "mirror.git")
    assert default.source_url == "https://github.com/ollama/ollama.git"
    assert mirrored.hashes == default.hashes


def test_changing_the_pinned_commit_changes_every_hash_but_builder(matrix, settings):
    t = matrix.targets["cpu"]
    moved = dataclasses.replace(t, source=dataclasses.replace(t.source, commit="f" * 40))
    assert changed(stages.plan_for(matrix, t, settings).hashes,
                   stages.plan_for(matrix, moved, settings).hashes) == affected("source")


def test_rocm_target_passes_its_gpu_archs_and_installs_the_hip_component(matrix, settings):
    p = stages.plan_for(matrix, matrix.targets["gfx1103"], settings)
    configure = argv_of(p, "configure ROCm 6")
    assert configure[:3] == ("cmake", "--preset", "ROCm 6")
    assert "-DAMDGPU_TARGETS=gfx1100" in configure
    assert "-DOLLAMA_RUNNER_DIR=rocm" in configure
    assert "-DCMAKE_HIP_COMPILER_LAUNCHER=ccache" in configure
    assert "-DCMAKE_HIP_COMPILER=/usr/lib/llvm-21/bin/clang++" in configure
    assert argv_of(p, "install ROCm 6") == ("cmake", "--install", "build", "--component", "HIP", "--strip")


def test_each_backend_is_cleaned_configured_compiled_and_installed_before_go_build(matrix, settings):
    p = stages.plan_for(matrix, matrix.targets["sm_37"], settings)
    assert [s.label for s in p.steps] == [
        "clean build/ for CPU", "configure CPU", "compile CPU", "install CPU",
        "clean build/ for CUDA 11", "configure CUDA 11", "compile CUDA 11", "install CUDA 11",
        "download Go modules", "go build",
    ]
    assert "-DCMAKE_CUDA_ARCHITECTURES=37-real" in argv_of(p, "configure CUDA 11")
    # The CPU configure sees the archs too: with nvcc present CMake would otherwise pick "native".
    assert "-DCMAKE_CUDA_ARCHITECTURES=37-real" in argv_of(p, "configure CPU")
    assert not any("CMAKE_CUDA_COMPILER_LAUNCHER" in a for a in argv_of(p, "configure CPU"))


def test_go_build_stamps_the_version(matrix, settings):
    p = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    assert p.version == "0.12.5+cpu"
    assert p.upstream_version == "0.12.5"
    go = argv_of(p, "go build")
    assert ("-ldflags=-w -s -X=github.com/ollama/ollama/version.Version=0.12.5+cpu "
            "-X=github.com/ollama/ollama/server.mode=release") in go
    assert go[-3:] == ("-o", "dist/bin/ollama", ".")
    (step,) = [s for s in p.steps if s.label == "go build"]
    assert dict(step.env) == {"CGO_ENABLED": "1", "CGO_CFLAGS": "-O3", "CGO_CXXFLAGS": "-O3"}


def test_archive_is_named_after_version_and_target(matrix, settings):
    p = stages.plan_for(matrix, matrix.at(matrix.targets["gfx906"], "v0.12.5"), settings)
    assert p.archive_name == "ollama-0.12.5-gfx906.tar.zst"


def test_image_tag_carries_the_builder_hash(matrix, settings):
    p = stages.plan_for(matrix, matrix.targets["gfx1103"], settings)
    # Tags stay what the builder stage's hash gave them, so images made before are found.
    tag = builder_stage.image_tag(p, settings)
    assert tag == f"ollama-pipeline/builder-debian-rocm:{p.hashes['builder'][:16]}"
    cpu = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    # The ROCm targets' host builder is the very image the cpu target builds with.
    assert builder_stage.host_tag(p, settings) == builder_stage.image_tag(cpu, settings)
    assert builder_stage.host_tag(cpu, settings) == builder_stage.image_tag(cpu, settings)
    assert p.base_image == "ollama-pipeline/debian:trixie"


def test_patch_naming_an_unknown_target_is_a_config_error_naming_the_file(matrix, settings):
    add_patch(settings, "0007-typo.patch", targets="gfx9O6")
    with pytest.raises(ConfigError) as info:
        stages.plan_for(matrix, matrix.targets["gfx906"], settings)
    assert "0007-typo.patch" in str(info.value) and "'gfx9O6'" in str(info.value)
    assert info.value.exit_code == 2


def test_source_date_epoch_is_an_input_of_the_build(matrix, settings):
    before = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    after = stages.plan_for(matrix, matrix.targets["cpu"],
                            dataclasses.replace(settings, source_date_epoch=1700000000))
    assert changed(before.hashes, after.hashes) == affected("build")


def test_source_date_epoch_is_read_once_from_the_environment_and_checked():
    assert Settings.from_env({"SOURCE_DATE_EPOCH": "1700000000"}).source_date_epoch == 1700000000
    assert Settings.from_env({}).source_date_epoch is None
    with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH must be a whole number"):
        Settings.from_env({"SOURCE_DATE_EPOCH": "yesterday"})


def test_a_gpu_target_builds_its_gpu_backend_in_its_builder_the_rest_in_the_host_builder(matrix, settings):
    p = stages.plan_for(matrix, matrix.targets["gfx906"], settings)
    on_host = [s for s in p.steps if s.host]
    on_gpu = [s for s in p.steps if not s.host]
    assert [s.label for s in on_gpu] == ["clean build/ for ROCm 6", "configure ROCm 6", "compile ROCm 6",
                                         "install ROCm 6"]
    assert [s.label for s in on_host][-2:] == ["download Go modules", "go build"]
    assert p.steps.index(on_gpu[-1]) < p.steps.index(on_host[0])  # the GPU backend first
    # The host's CPU configure is the cpu target's own: no GPU archs, no HIP compiler, so ccache hits.
    cpu = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    host_configure = next(s for s in on_host if s.label == "configure CPU")
    assert host_configure.argv == next(s for s in cpu.steps if s.label == "configure CPU").argv
    assert not any(s.host for s in cpu.steps)
    assert p.host_builder[0] == "debian-cpu" and cpu.host_builder[0] == "debian-cpu"
    # The K80's bullseye builder compiles everything itself.
    k80 = stages.plan_for(matrix, matrix.targets["sm_37"], settings)
    assert k80.host is None and not any(s.host for s in k80.steps)


def test_from_v0_30_the_gpu_presets_build_in_the_gpu_builder_and_the_cpu_preset_and_go_in_the_host(matrix):
    t = matrix.targets["vulkan"]
    t = dataclasses.replace(t, source=dataclasses.replace(t.source, tag="v0.30.0"))
    builder = matrix.builders[t.builder]
    backends = tuple(matrix.backends[b] for b in t.backends)
    host = matrix.builders["debian-cpu"]  # a builder with a host builder, as debian-rocm has
    steps = layouts.for_tag("v0.30.0").steps(t, backends, builder, "0.30.0", host=host)
    on_gpu = [s.label for s in steps if not s.host]
    on_host = [s.label for s in steps if s.host]
    assert on_gpu and all("vulkan" in label for label in on_gpu)
    assert on_host[-2:] == ["download Go modules", "go build"] and any("cpu" in x for x in on_host)
    assert steps.index(next(s for s in steps if s.host)) == len(on_gpu)  # the GPU presets first
