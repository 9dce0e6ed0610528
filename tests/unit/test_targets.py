"""targets.toml: loading, defaults, validation messages and target selection."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipeline.config import loader, policy, targets
from pipeline.errors import ConfigError, PipelineError, SelectionError

from .conftest import TARGETS_FILE

PROJECT_TEXT = TARGETS_FILE.read_text()

MINIMAL = """
[defaults]
builder = "b"
backends = ["cpu"]

[defaults.source]
url = "https://example.invalid/ollama.git"
tag = "v1.2.3"
commit = "0123456789abcdef0123456789abcdef01234567"

[builders.b]
template = "t.j2"

[backends.cpu]
preset = "CPU"
component = "CPU"

[backends.gpu]
preset = "GPU"
component = "GPU"
arch_variable = "ARCHS"
gpu_code = "hip"
library = "libggml-gpu.so"

[targets.one]
description = "first"

[targets.two]
description = "second"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "targets.toml"
    path.write_text(text)
    return path


def edited(old: str, new: str, text: str = PROJECT_TEXT) -> str:
    assert old in text, f"test setup: {old!r} is not in the file any more"
    return text.replace(old, new, 1)


def load_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        targets.load(path)
    return info.value


# --- the project's own matrix ------------------------------------------------------------------------

def test_project_matrix_loads_its_targets_in_file_order(matrix):
    assert list(matrix.targets) == list(loader.read(TARGETS_FILE)["targets"])
    assert matrix.path == TARGETS_FILE


def test_gfx1103_compiles_only_the_gfx1100_code_it_runs_under_hsa_override(matrix):
    t = matrix.targets["gfx1103"]
    assert t.builder == "debian-rocm"
    assert t.backends == ("cpu", "rocm")
    # The override makes the runtime report gfx1100 and load gfx1100 code objects only.
    assert t.gpu_archs == ("gfx1100",)
    assert t.runtime.archs == ("gfx1100",)
    assert t.runtime.env["HSA_OVERRIDE_GFX_VERSION"] == "11.0.0"


def test_sm_37_builds_real_kepler_code_with_cuda11(matrix):
    t = matrix.targets["sm_37"]
    assert t.gpu_archs == ("37-real",)
    assert t.builder == "debian-cuda11"
    assert matrix.backends["cuda11"].arch_variable == "CMAKE_CUDA_ARCHITECTURES"


def test_cpu_target_takes_everything_from_defaults(matrix):
    t = matrix.targets["cpu"]
    assert t.builder == "debian-cpu"
    assert t.backends == ("cpu",)
    assert t.gpu_archs == ()
    assert t.source.tag == "v0.12.5"
    assert t.source.commit == "3d32249c749c6f77c1dc8a7cb55ae74fc2f4c08b"
    assert t.go.env == {"CGO_ENABLED": "1"}


def test_loaded_objects_are_frozen(matrix):
    t = matrix.targets["cpu"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.builder = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        t.go.env["CGO_ENABLED"] = "0"  # type: ignore[index]


def test_extra_suites_become_typed_objects(matrix):
    (sid,) = matrix.builders["debian-rocm"].extra_suites
    assert isinstance(sid, targets.AptSuite)
    assert sid.suite == "sid"
    assert sid.check_valid_until is False
    assert sid.components == ("main",)
    assert "hipcc" in sid.pin and "hipcc" in matrix.builders["debian-rocm"].packages


# --- defaults -----------------------------------------------------------------------------------------

def test_target_overrides_one_nested_key_and_inherits_the_others(tmp_path):
    text = MINIMAL + '\n[targets.two.source]\ntag = "v9.9.9"\n'
    m = targets.load(write(tmp_path, text))
    two, one = m.targets["two"], m.targets["one"]
    assert two.source.tag == "v9.9.9"
    assert two.source.url == "https://example.invalid/ollama.git"
    assert two.source.commit == "0123456789abcdef0123456789abcdef01234567"
    assert one.source.tag == "v1.2.3"


def test_target_replaces_a_list_rather_than_appending(tmp_path):
    text = edited('[targets.two]\ndescription = "second"',
                  '[targets.two]\ndescription = "second"\nbackends = ["cpu", "gpu"]\ngpu_archs = ["gfx906"]',
                  MINIMAL)
    m = targets.load(write(tmp_path, text))
    assert m.targets["two"].backends == ("cpu", "gpu")
    assert m.targets["one"].backends == ("cpu",)


def test_unset_optional_keys_take_the_schema_defaults(tmp_path):
    m = targets.load(write(tmp_path, MINIMAL))
    one = m.targets["one"]
    assert one.package == targets.Package()
    assert one.source.version_format == "{version}+{target}"
    assert m.builders["b"].suite == "trixie"


# --- refusals -----------------------------------------------------------------------------------------

def test_unknown_key_is_refused_with_suggestion(tmp_path):
    err = load_error(tmp_path, edited('gpu_archs = ["gfx906"]', 'gpu_arch = ["gfx906"]'))
    msg = str(err)
    assert str(tmp_path / "targets.toml") in msg
    assert "[targets.gfx906]" in msg
    assert "'gpu_arch'" in msg
    assert "did you mean 'gpu_archs'?" in msg


def test_unknown_key_in_a_builder_names_the_builder_table(tmp_path):
    err = load_error(tmp_path, edited('suite = "bullseye"\ncomponents', 'suit = "bullseye"\ncomponents'))
    assert "[builders.debian-cuda11]" in str(err)
    assert "did you mean 'suite'?" in str(err)


def test_unknown_key_in_a_nested_table_names_the_nested_table(tmp_path):
    err = load_error(tmp_path, edited("[targets.gfx906]\n",
                                      "[targets.gfx906]\npackage.compresion_level = 3\n"))
    assert "[targets.gfx906.package] unknown key 'compresion_level'" in str(err)
    assert "did you mean 'compression_level'?" in str(err)


def test_unknown_key_in_defaults_is_reported_against_defaults(tmp_path):
    err = load_error(tmp_path, edited('builder = "debian-cpu"\n', 'buildr = "debian-cpu"\n'))
    assert "did you mean 'builder'?" in str(err)
    assert "[defaults]" in str(err)


def test_misspelt_top_level_table_is_refused_with_suggestion(tmp_path):
    err = load_error(tmp_path, edited("[targets.sm_37]", "[target.sm_37]"))
    assert "unknown top-level table 'target'" in str(err)
    assert "did you mean 'targets'?" in str(err)
    assert str(tmp_path / "targets.toml") in str(err)


def test_string_where_a_list_is_expected_names_key_and_types(tmp_path):
    err = load_error(tmp_path, edited('gpu_archs = ["gfx906"]', 'gpu_archs = "gfx906"'))
    assert "[targets.gfx906] key 'gpu_archs' must be a list of strings, got a string" in str(err)


def test_boolean_where_an_integer_is_expected_is_refused(tmp_path):
    err = load_error(tmp_path, edited('format = "tar.zst"\n', 'format = "tar.zst"\ncompression_level = '
                                                              'true\n'))
    assert "key 'compression_level' must be an integer, got a boolean" in str(err)


def test_string_where_a_boolean_is_expected_is_refused(tmp_path):
    err = load_error(tmp_path, edited("check_valid_until = false", 'check_valid_until = "no"'))
    assert "[builders.debian-rocm.extra_suites #1]" in str(err)
    assert "key 'check_valid_until' must be true or false, got a string" in str(err)


def test_wrong_item_type_inside_a_list_names_the_item(tmp_path):
    err = load_error(tmp_path, edited('packages = ["clang-13", "gcc", "g++", "make", "ninja-build", '
                                      '"ccache", "git", '
                                      '"ca-certificates",\n            "nvidia-cuda-toolkit"]',
                                      'packages = [11, "nvidia-cuda-toolkit"]'))
    assert "[builders.debian-cuda11] key 'packages' item 1 must be a string, got an integer" in str(err)


def test_missing_required_key_is_named_with_its_type(tmp_path):
    text = edited('[builders.b]\ntemplate = "t.j2"', '[builders.b]\ndescription = "no template"', MINIMAL)
    err = load_error(tmp_path, text)
    assert "[builders.b] missing key 'template' (a string)" in str(err)


def test_target_without_description_is_refused(tmp_path):
    err = load_error(tmp_path, edited('description = "second"\n', 'gpu_archs = []\n', MINIMAL))
    assert "[targets.two] missing key 'description'" in str(err)


def test_undefined_builder_is_refused_with_suggestion(tmp_path):
    err = load_error(tmp_path, edited('builder = "debian-cuda11"', 'builder = "debian-cuda"'))
    msg = str(err)
    assert "[targets.sm_37] builder 'debian-cuda' is not defined" in msg
    assert "did you mean 'debian-cuda11'?" in msg
    assert "defined: debian-cpu, debian-rocm, debian-cuda11" in msg


def test_undefined_backend_is_refused_with_suggestion(tmp_path):
    err = load_error(tmp_path, edited('backends = ["cpu", "cuda11"]', 'backends = ["cpu", "cuda12"]'))
    assert "[targets.sm_37] backend 'cuda12' is not defined (did you mean 'cuda11'?)" in str(err)


def test_gpu_backend_without_gpu_archs_is_refused(tmp_path):
    err = load_error(tmp_path, edited('gpu_archs = ["gfx906"]\n', ""))
    assert "[targets.gfx906] backend 'rocm' compiles GPU code: set gpu_archs" in str(err)


def test_gpu_archs_without_a_gpu_backend_is_refused(tmp_path):
    err = load_error(tmp_path, edited('description = "first"', 'description = "first"\ngpu_archs = ["x"]',
                                      MINIMAL))
    assert "[targets.one] gpu_archs is set but no backend takes GPU archs" in str(err)


@pytest.mark.parametrize("commit", ["3d32249", "3d32249c749c6f77c1dc8a7cb55ae74fc2f4c08g",
                                    "v0.12.5", "3d32249c749c6f77c1dc8a7cb55ae74fc2f4c08b0"])
def test_bad_commit_id_is_refused(tmp_path, commit):
    err = load_error(tmp_path, edited('commit = "3d32249c749c6f77c1dc8a7cb55ae74fc2f4c08b"',
                                      f'commit = "{commit}"'))
    assert "[defaults.source] key 'commit'" in str(err) and "not a full 40-digit commit id" in str(err)
    assert repr(commit) in str(err)


def test_unknown_placeholder_in_version_format_is_refused(tmp_path):
    err = load_error(tmp_path, edited('version_format = "{version}+{target}"',
                                      'version_format = "{version}+{arch}"'))
    assert "only {version} and {target} may be used" in str(err)


def test_unsupported_package_format_is_refused(tmp_path):
    err = load_error(tmp_path, edited('format = "tar.zst"', 'format = "zip"'))
    assert "[defaults.package] key 'format': 'zip' is not allowed" in str(err)
    assert "one of 'tar.gz', 'tar.zst'" in str(err)


def test_matrix_without_targets_is_refused(tmp_path):
    text = MINIMAL.split("[targets.one]")[0]
    err = load_error(tmp_path, text)
    assert "no [targets.NAME] table" in str(err)


def test_missing_file_message_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        targets.load(Path("nowhere/targets.toml"))
    assert f"looked for {tmp_path / 'nowhere' / 'targets.toml'}" in str(info.value)
    assert "--targets-file" in str(info.value)


def test_invalid_toml_is_refused_naming_the_file(tmp_path):
    err = load_error(tmp_path, PROJECT_TEXT + "\n[targets.broken\n")
    assert f"{tmp_path / 'targets.toml'}: not valid TOML" in str(err)


def test_config_errors_end_the_command_with_exit_code_2(tmp_path):
    err = load_error(tmp_path, edited("[targets.sm_37]", "[target.sm_37]"))
    assert isinstance(err, PipelineError)
    assert isinstance(err, Exception)
    assert err.exit_code == 2


# --- selection ----------------------------------------------------------------------------------------

def names(chosen):
    return [t.name for t in chosen]


def test_select_by_name(matrix):
    assert names(matrix.select(["gfx906"])) == ["gfx906"]


def test_select_by_glob(matrix):
    assert names(matrix.select(["gfx*"])) == ["gfx1103", "gfx906"]


@pytest.mark.parametrize("word", ["all", "--all"])
def test_all_selects_every_target(matrix, word):
    assert names(matrix.select([word])) == list(matrix.targets)


def test_selection_keeps_file_order(matrix):
    assert names(matrix.select(["sm_37", "gfx906", "cpu"])) == ["cpu", "gfx906", "sm_37"]


def test_selection_does_not_repeat_targets(matrix):
    assert names(matrix.select(["gfx906", "gfx*", "gfx906"])) == ["gfx1103", "gfx906"]


def test_unknown_target_lists_known_ones_with_closest_match(matrix):
    with pytest.raises(SelectionError) as info:
        matrix.select(["gfx1130"])
    msg = str(info.value)
    assert "unknown target 'gfx1130'" in msg
    assert "did you mean 'gfx1103'?" in msg
    assert f"known targets: {', '.join(matrix.targets)}" in msg
    assert info.value.exit_code == SelectionError.exit_code


def test_glob_matching_nothing_is_an_unknown_target(matrix):
    with pytest.raises(SelectionError, match="unknown target 'rdna\\*'"):
        matrix.select(["cpu", "rdna*"])


def test_empty_selection_is_refused_naming_the_targets(matrix):
    with pytest.raises(SelectionError) as info:
        matrix.select([])
    assert "no target given" in str(info.value)
    assert ", ".join(matrix.targets) in str(info.value)
    assert isinstance(info.value, ConfigError)
    assert info.value.exit_code == SelectionError.exit_code


def test_name_key_in_a_target_table_is_refused(tmp_path):
    err = load_error(tmp_path, PROJECT_TEXT.replace('[targets.cpu]\n', '[targets.cpu]\nname = "other"\n'))
    assert "[targets.cpu]" in str(err) and "'name' is not allowed" in str(err)


def test_gpu_backend_needs_code_format_and_library_with_its_arch_variable(tmp_path):
    err = load_error(tmp_path, PROJECT_TEXT.replace('gpu_code = "cuda"\n', ""))
    assert "[backends.cuda11]" in str(err) and "set all three or none" in str(err)


def test_compression_level_outside_the_formats_range_is_refused(tmp_path):
    err = load_error(tmp_path, edited('format = "tar.zst"\n', 'format = "tar.gz"\ncompression_level = 12\n'))
    assert "compression_level for tar.gz must be 1 to 9 (or 0 for the default), got 12" in str(err)


def test_cpu_and_k80_builders_have_the_bullseye_floor_and_rocm_states_its_own():
    m = targets.load(TARGETS_FILE)
    for target in ("cpu", "sm_37"):
        b = m.builders[m.targets[target].builder]
        assert (b.suite, b.policy) == ("bullseye", "debian-bullseye"), target
        # gcc 10 lacks -mavxvnni (the alderlake CPU variant): C and C++ go through clang.
        assert b.env["CC"].startswith("clang") and b.env["CXX"].startswith("clang++"), target
    # The ROCm builder compiles its GPU backend only; bullseye compiles the rest, and its libraries are
    # lowered to bullseye's floor (the untreated floor is the pass's `without`). Vulkan keeps trixie's:
    # its runtime image takes Mesa from the floor's suite, and bullseye's RADV predates RDNA3.
    assert not m.builders["debian-vulkan"].host
    assert m.builders["debian-vulkan"].policy == "debian-trixie-vulkan"
    for name, untreated in (("debian-rocm", "debian-rocm"),):
        b = m.builders[name]
        assert b.host == "debian-cpu" and m.builders[b.host].suite == "bullseye"
        p = policy.load_policy(b.policy)
        assert p.suite == "bullseye" and p.floor_pass is not None and p.floor_pass.without == untreated
        assert p.verify_suites == ("bullseye", "bookworm", "trixie")
    assert m.builders["vendor-rocm"].policy == "ubuntu-22.04"


# --- downloads, pinned once --------------------------------------------------------------------------

DOWNLOADS = MINIMAL.replace('[builders.b]\ntemplate = "t.j2"\n', '''[downloads.tool]
url = "https://example.invalid/tool-1.0.tar.gz"
sha256 = "''' + "ab" * 32 + '''"

[downloads.tool-other]
name = "tool"
url = "https://example.invalid/tool-2.0.tar.gz"
sha256 = "''' + "cd" * 32 + '''"
dest = "/opt/tool"

[builders.b]
template = "t.j2"
downloads = ["tool"]

[builders.c]
template = "t.j2"
downloads = ["tool-other"]
''')


def test_builders_name_downloads_pinned_once_under_their_table(tmp_path):
    m = targets.load(write(tmp_path, DOWNLOADS))
    (tool,) = m.builders["b"].downloads
    (other,) = m.builders["c"].downloads
    assert (tool.name, tool.url, tool.sha256, tool.dest) == \
        ("tool", "https://example.invalid/tool-1.0.tar.gz", "ab" * 32, "/usr/local")
    # `name`: what the image calls it (its build argument TOOL_URL), whichever pin the builder takes.
    assert (other.name, other.dest, other.build_arg) == ("tool", "/opt/tool", "TOOL_URL")


def test_a_download_not_defined_is_refused_with_a_close_match(tmp_path):
    err = load_error(tmp_path, DOWNLOADS.replace('downloads = ["tool"]', 'downloads = ["tol"]'))
    assert ("[builders.b] downloads names 'tol', which is not a [downloads] table (did you mean "
            "'tool'?)") in str(err)


def test_a_download_written_into_the_builder_is_refused(tmp_path):
    err = load_error(tmp_path, DOWNLOADS.replace('downloads = ["tool"]', 'downloads = [{ name = "tool" }]'))
    assert "[builders.b] downloads must be a list of names" in str(err)


def test_a_bad_pin_is_reported_at_its_downloads_table(tmp_path):
    err = load_error(tmp_path, DOWNLOADS.replace("ab" * 32, "ab"))
    assert "[downloads.tool]" in str(err) and "64 hex digits" in str(err)


def test_every_pin_of_the_project_is_written_once(matrix):
    text = TARGETS_FILE.read_text()
    used = {d.sha256 for b in matrix.builders.values() for d in b.downloads}
    assert used and all(text.count(sha) == 1 for sha in used)


# --- groups, which patch headers name ----------------------------------------------------------------

def test_groups_list_targets_and_refuse_unknown_ones(tmp_path):
    m = targets.load(write(tmp_path, MINIMAL + '\n[groups]\nboth = ["two", "one"]\n'))
    assert m.groups == {"both": ("two", "one")}
    err = load_error(tmp_path, MINIMAL + '\n[groups]\nboth = ["one", "thre"]\n')
    assert "[groups] both names 'thre', which is not a target" in str(err)
    err = load_error(tmp_path, MINIMAL + '\n[groups]\none = ["two"]\n')
    assert "a group may not have a target's name" in str(err)


@pytest.mark.parametrize("host, message", [
    ("nope", "host 'nope' is not a builder"),
    ("b", "host 'b' must be another builder that compiles everything itself"),
])
def test_a_bad_host_builder_is_refused(tmp_path, host, message):
    text = MINIMAL.replace('[builders.b]\ntemplate = "t.j2"\n',
                           f'[builders.b]\ntemplate = "t.j2"\nhost = "{host}"\n')
    path = tmp_path / "targets.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        targets.load(path)


def test_a_driver_stub_is_a_soname_and_an_absolute_path(tmp_path):
    text = MINIMAL.replace('[builders.b]\ntemplate = "t.j2"\n',
                           '[builders.b]\ntemplate = "t.j2"\n'
                           'driver_stubs = { "libcuda.so.1" = "stubs/libcuda.so" }\n')
    path = tmp_path / "targets.toml"
    path.write_text(text)
    with pytest.raises(ConfigError,
                       match=r"'driver_stubs': 'libcuda\.so\.1' = 'stubs/libcuda\.so' is not allowed"):
        targets.load(path)
