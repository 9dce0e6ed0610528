"""Rendering docker/ templates: golden files make every change to a builder's Dockerfile a visible diff.

To accept an intended change, regenerate the golden files and review the diff:

    nox -s golden
    git diff tests/unit/golden/

A test that rewrote its golden file is reported as skipped, never as passed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import stages
from pipeline.config.settings import Settings
from pipeline.config.targets import Builder, load
from pipeline.errors import ConfigError
from pipeline.infra import baseimage
from pipeline.stages import builder as dockerfile

from .conftest import PROJECT, TARGETS_FILE

GOLDEN = Path(__file__).parent / "golden"
BUILDERS = list(load(TARGETS_FILE).builders)


def compare_with_golden(request, rendered: str, golden: Path, what: str) -> None:
    if request.config.getoption("--update-golden"):
        golden.write_text(rendered)
        pytest.skip(f"rewrote {golden.name}; review `git diff tests/unit/golden/`")
    assert golden.exists(), f"no golden file {golden}; create it with `nox -s golden`"
    assert rendered == golden.read_text(), (
        f"{what} renders differently; if intended, run `nox -s golden` and review the diff of "
        "tests/unit/golden/")


@pytest.mark.parametrize("name", BUILDERS)
def test_rendered_dockerfile_matches_golden_file(request, matrix, name):
    builder = matrix.builders[name]
    rendered = dockerfile.render(PROJECT / "docker", builder,
                                 base_image=baseimage.name(Settings().image_prefix, builder.suite),
                                 serves=matrix.serves(name))
    compare_with_golden(request, rendered, GOLDEN / f"{name}.Dockerfile",
                        f"docker/{builder.template} for {name}")


def test_every_golden_file_belongs_to_a_builder_or_the_runtime_image():
    assert sorted(p.name.removesuffix(".Dockerfile") for p in GOLDEN.glob("*.Dockerfile")) == \
        sorted([*BUILDERS, "runtime-image"])


def test_builder_stage_key_is_the_rendered_dockerfile(matrix, settings):
    p = stages.plan_for(matrix, matrix.targets["sm_37"], settings)
    name = p.builder_name
    assert dockerfile.key(p, settings) == (GOLDEN / f"{name}.Dockerfile").read_text()


def test_builder_fields_reach_the_dockerfile(tmp_path):
    (tmp_path / "t.j2").write_text("FROM {{ base_image }}\nRUN echo {{ builder.suite }} "
                                   "{{ builder.packages | join(',') }}\n")
    out = dockerfile.render(tmp_path, Builder(template="t.j2", suite="sid", packages=("a", "b")),
                            base_image="img:1")
    assert out == "FROM img:1\nRUN echo sid a,b\n"


def test_undefined_template_variable_is_a_config_error(tmp_path):
    (tmp_path / "t.j2").write_text("FROM {{ base_image }}\nRUN {{ builder.no_such_field }}\n")
    with pytest.raises(ConfigError) as info:
        dockerfile.render(tmp_path, Builder(template="t.j2"), base_image="img:1")
    assert "t.j2" in str(info.value)
    assert "no_such_field" in str(info.value)


def test_undefined_top_level_name_is_a_config_error(tmp_path):
    (tmp_path / "t.j2").write_text("FROM {{ base_imag }}\n")
    with pytest.raises(ConfigError, match="base_imag"):
        dockerfile.render(tmp_path, Builder(template="t.j2"), base_image="img:1")


def test_missing_template_is_a_config_error_naming_the_folder(tmp_path):
    with pytest.raises(ConfigError) as info:
        dockerfile.render(tmp_path, Builder(template="gone.j2"), base_image="img:1")
    assert "'gone.j2' not found" in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_runtime_image_carries_what_the_floor_policy_says_a_host_adds():
    """The Vulkan package's image has the loader and Mesa's drivers (RADV, lavapipe); others nothing."""
    from pipeline.stages import image

    def floor(policy):
        return runtime_manifest(floor={"policy": policy, "suite": "trixie"})

    assert image.host_packages(floor("debian-trixie-vulkan")) == ["libvulkan1", "mesa-vulkan-drivers"]
    assert image.host_packages(floor("debian-bullseye")) == []
    assert image.host_packages(runtime_manifest()) == []


def runtime_manifest(**changes):
    from pipeline.stages.manifest import VERSION, Manifest

    return Manifest.from_dict({
        "manifest_version": VERSION, "target": "gfx1103", "description": "AMD Radeon 780M",
        "version": "0.12.5+gfx1103",
        "upstream": {"url": "https://github.com/ollama/ollama.git", "tag": "v0.12.5",
                     "commit": "3d32249c749c6f77c1dc8a7cb55ae74fc2f4c08b", "version": "0.12.5"},
        "patches": [],
        "builder": {"name": "debian-rocm", "image": "b:1", "image_id": "sha256:0", "template": "t",
                    "suite": "trixie", "packages": []},
        "backends": ["CPU", "ROCm 6"], "gpu_archs": ["gfx1100", "gfx1103"],
        "runtime_env": {"HSA_OVERRIDE_GFX_VERSION": "11.0.0"}, "hashes": {}, "source_date_epoch": 1,
        "files": [], "archive": {"name": "ollama-0.12.5-gfx1103.tar.zst", "size": 1, "sha256": "ab" * 32},
        **changes,
    }, "test")


PROJECT_CHECKOUT = {"url": "https://github.example/owner/ollama-pipeline", "commit": "12" * 20}


def test_runtime_image_dockerfile_matches_golden_file(request):
    """The image stage's Dockerfile for a fixed manifest: base, environment, labels, entrypoint."""
    from pipeline.infra import git
    from pipeline.stages import image

    manifest = runtime_manifest()
    project = git.Checkout(**PROJECT_CHECKOUT, modified=False)
    rendered = image.render(PROJECT / "docker", manifest, "ollama-pipeline/debian:trixie", "trixie",
                            image.environment(manifest, cuda=False), image.oci_labels(manifest, project),
                            ["libvulkan1", "mesa-vulkan-drivers"])
    compare_with_golden(request, rendered, GOLDEN / "runtime-image.Dockerfile", f"docker/{image.TEMPLATE}")


def test_runtime_image_of_a_cuda_target_sets_nvidias_runtime_variables():
    from pipeline.infra import git
    from pipeline.stages import image

    manifest = runtime_manifest(target="sm_37", runtime_env={"OLLAMA_FLASH_ATTENTION": "0"})
    env = image.environment(manifest, cuda=True)
    assert env == {"OLLAMA_HOST": "0.0.0.0:11434", "OLLAMA_FLASH_ATTENTION": "0",
                   "OLLAMA_MODELS": "/root/.ollama/models", "NVIDIA_VISIBLE_DEVICES": "all",
                   "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
                   "LD_LIBRARY_PATH": "/usr/local/nvidia/lib:/usr/local/nvidia/lib64"}
    rendered = image.render(PROJECT / "docker", manifest, "b", "bullseye", env,
                            image.oci_labels(manifest, git.Checkout(**PROJECT_CHECKOUT, modified=False)))
    assert ("NVIDIA_VISIBLE_DEVICES=all \\\n    NVIDIA_DRIVER_CAPABILITIES=compute,utility \\\n"
            "    LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64\n") in rendered
    assert "NVIDIA_VISIBLE_DEVICES" not in image.render(PROJECT / "docker", manifest, "b", "bullseye",
                                                        image.environment(manifest, cuda=False), {})


def test_runtime_image_labels_name_this_project_and_upstream_apart():
    from pipeline.infra import git
    from pipeline.stages import image

    manifest = runtime_manifest()
    labels = image.oci_labels(manifest, git.Checkout(**PROJECT_CHECKOUT, modified=True))
    assert labels["org.opencontainers.image.source"] == PROJECT_CHECKOUT["url"]
    assert labels["org.opencontainers.image.revision"] == PROJECT_CHECKOUT["commit"]
    assert labels["org.ollama-pipeline.revision.modified"] == "true"
    assert labels["org.ollama-pipeline.upstream.source"] == "https://github.com/ollama/ollama.git"
    assert labels["org.ollama-pipeline.upstream.revision"] == "3d32249c749c6f77c1dc8a7cb55ae74fc2f4c08b"
    assert labels["org.ollama-pipeline.upstream.version"] == "0.12.5"
    unknown = image.oci_labels(manifest, git.Checkout(url="", commit="", modified=False))
    assert "org.opencontainers.image.source" not in unknown
    assert "org.opencontainers.image.revision" not in unknown


def test_runtime_image_values_are_quoted_for_docker():
    """A space, quote or $ stays inside its ENV or LABEL value; a line break is refused, not rendered."""
    from pipeline.errors import ConfigError
    from pipeline.infra import git
    from pipeline.stages import image

    manifest = runtime_manifest(description='say "hi" for $5')
    env = {"OLLAMA_HOST": "0.0.0.0:11434", "ODD": "a b"}
    labels = image.oci_labels(manifest, git.Checkout(**PROJECT_CHECKOUT, modified=False))
    rendered = image.render(PROJECT / "docker", manifest, "b", "bullseye", env, labels)
    assert 'ODD="a b"\n' in rendered
    description = 'org.opencontainers.image.description="Ollama 0.12.5+gfx1103 for say \\"hi\\" for \\$5"'
    assert description in rendered
    with pytest.raises(ConfigError, match="newline"):
        image.render(PROJECT / "docker", manifest, "b", "bullseye", {"ODD": "two\nlines"}, {})
