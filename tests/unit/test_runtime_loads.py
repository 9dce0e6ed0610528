"""What runtimes open at run time (runtime-loads.toml) and what the closure walk does with it, and the
copies of system libraries a package carries (policy.carry): real ELF files built with gcc."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.closure import elf, loads
from pipeline.closure import walk as closure
from pipeline.config import policy as policy_mod
from pipeline.errors import ClosureError, ConfigError

from .test_closure import MULTIARCH, _cc, _place

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build ELF fixtures")
ROCM = "lib/ollama/rocm"


def test_the_shipped_inventory_makes_comgr_required_for_hip_and_nothing_else():
    inv = loads.load_inventory()
    required = {(r.soname, ld.soname) for r in inv.runtime for ld in r.loads if ld.use == "required"}
    assert required == {("libamdhip64.so.6", "libamd_comgr.so.3")}
    assert inv.driver_sonames() == {"libcuda.so.1"}
    for runtime in inv.runtime:
        for load in runtime.loads:
            assert load.evidence and load.reason
    optional = inv.opens("libhsa-runtime64.so.1", "optional")
    profilers = [ld for ld in optional if ld.what.startswith("profiler")]
    assert [ld.soname for ld in profilers] == ["libhsa-amd-aqlprofile64.so"]
    assert inv.opens("libcudart.so.11.0", "required") == () and inv.opens("libz.so.1", "required") == ()


@pytest.mark.parametrize("body, message", [
    ('[[runtime]]\nsoname = "libx.so.1"\npackage = "p"\nsource = "s"\n'
     '[[runtime.loads]]\nsoname = "liby.so.1"\nuse = "maybe"\nreason = "r"\nevidence = ["e"]\n',
     "use 'maybe' is not one of required, optional, driver, never"),
    ('[[runtime]]\nsoname = "libx.so.1"\npackage = "p"\nsource = "s"\n'
     '[[runtime.loads]]\nsoname = "liby.so.1"\nuse = "optional"\nreason = "r"\nevidence = ["e"]\n',
     "say what it is"),
    ('[[runtime]]\nsoname = "libx.so.1"\npackage = "p"\nsource = "s"\n'
     '[[runtime.loads]]\nsoname = "$ENV"\nuse = "required"\nreason = "r"\nevidence = ["e"]\n',
     "a required load names a soname"),
    ('[[runtime]]\nsoname = "libx.so.1"\npackage = "p"\nsource = "s"\n'
     '[[runtime.loads]]\nsoname = "liby.so.1"\nuse = "required"\nreason = "r"\n', "missing key 'evidence'"),
    ('[[runtime]]\nsoname = "libx.so.1"\npackage = "p"\nsource = "s"\n' * 2, "listed twice"),
    ('[[runtime]]\nsoname = "libx.so.1"\npackage = "p"\nsource = "s"\nclass = "x"\n', "unknown key 'class'"),
])
def test_bad_inventories_are_refused_in_one_line_naming_the_file(tmp_path: Path, body, message):
    path = tmp_path / "runtime-loads.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as err:
        loads.load_inventory(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.fixture(scope="module")
def rocm(tmp_path_factory) -> dict[str, Path]:
    """A HIP runtime that links nothing of comgr (like Debian's libamdhip64.so.6), a backend linking it,
    and comgr with a library of its own in the builder's folder."""
    d = tmp_path_factory.mktemp("rocm")
    e = {"llvm": _cc(d / "libLLVM.so.21.1", "int llvm(void) { return 21; }\n", soname="libLLVM.so.21.1")}
    e["comgr"] = _cc(d / "libamd_comgr.so.3.0", "int llvm(void);\nint comgr(void) { return llvm(); }\n",
                     soname="libamd_comgr.so.3", link=(e["llvm"],))
    e["hip"] = _cc(d / "libamdhip64.so.6.4", "int hip(void) { return 6; }\n", soname="libamdhip64.so.6")
    e["hsa"] = _cc(d / "libhsa-runtime64.so.1", "int hsa(void) { return 1; }\n",
                   soname="libhsa-runtime64.so.1")
    e["backend"] = _cc(d / "libggml-hip.so",
                       "int hip(void);\nint hsa(void);\nint b(void) { return hip() + hsa(); }\n",
                       soname="libggml-hip.so", link=(e["hip"], e["hsa"]))
    e["main"] = _cc(d / "ollama", "int main(void) { return 0; }\n")
    return e


def _rocm_policy(**over) -> policy_mod.Policy:
    doc = {"description": "test floor", "provided": ["libc.so.6", "ld-linux-x86-64.so.2"],
           "never_bundle": ["libcuda.so.1"], "max_versions": {"GLIBC": "99.0"}}
    doc.update(over)
    return policy_mod.parse_policy(doc, Path("test-floor.toml"))


def _walk(tmp_path: Path, rocm, *, sysroot_has_comgr: bool = True, policy=None, check: bool = True):
    pkg = _place(tmp_path / "pkg", {"bin/ollama": rocm["main"], f"{ROCM}/libggml-hip.so": rocm["backend"]})
    files: dict[str, Path | str] = {
        f"{MULTIARCH}/libamdhip64.so.6.4": rocm["hip"], f"{MULTIARCH}/libamdhip64.so.6": "libamdhip64.so.6.4",
        f"{MULTIARCH}/libhsa-runtime64.so.1": rocm["hsa"], f"{MULTIARCH}/libLLVM.so.21.1": rocm["llvm"]}
    if sysroot_has_comgr:
        files.update({f"{MULTIARCH}/libamd_comgr.so.3.0": rocm["comgr"],
                      f"{MULTIARCH}/libamd_comgr.so.3": "libamd_comgr.so.3.0"})
    sysroot = _place(tmp_path / "sysroot", files)
    return closure.compute(pkg, sysroot, policy or _rocm_policy(), inventory=loads.load_inventory(),
                           check=check)


def test_what_a_runtime_opens_is_bundled_beside_it_with_its_own_closure(tmp_path, rocm):
    found = _walk(tmp_path, rocm)
    dests = {b.dest for b in found.bundles}
    assert {f"{ROCM}/libamdhip64.so.6", f"{ROCM}/libamd_comgr.so.3", f"{ROCM}/libLLVM.so.21.1"} <= dests
    assert found.opened == {"libamd_comgr.so.3": (f"{ROCM}/libamdhip64.so.6",)}
    assert f"{ROCM}/libamd_comgr.so.3 <- /{MULTIARCH}/libamd_comgr.so.3 (opened at run time by " \
           f"{ROCM}/libamdhip64.so.6)" in found.summary()
    record = found.to_dict()
    assert record["opened_at_run_time"] == {"libamd_comgr.so.3": [f"{ROCM}/libamdhip64.so.6"]}


def test_a_runtime_without_what_it_opens_fails_packaging_in_one_line(tmp_path, rocm):
    with pytest.raises(ClosureError) as err:
        _walk(tmp_path, rocm, sysroot_has_comgr=False)
    (line,) = str(err.value).splitlines()
    assert f"libamd_comgr.so.3 is opened at run time by {ROCM}/libamdhip64.so.6 (code object manager" in line
    assert "the builder image has none" in line


def test_optional_loads_are_named_and_never_bundled(tmp_path, rocm):
    found = _walk(tmp_path, rocm)
    optional = found.optional[f"{ROCM}/libhsa-runtime64.so.1"]
    assert any(o.startswith("libhsa-amd-aqlprofile64.so: profiler") for o in optional)
    assert not any("aqlprofile" in b.soname for b in found.bundles)
    assert any(line.startswith(f"optional at run time, not bundled, for {ROCM}/libhsa-runtime64.so.1: ")
               for line in found.summary())


def test_a_driver_library_the_runtimes_open_is_never_shipped(tmp_path, rocm):
    pkg = _place(tmp_path / "pkg", {"bin/ollama": rocm["main"],
                                    "lib/ollama/cuda_v11/libcuda.so.1": rocm["hip"]})
    sysroot = _place(tmp_path / "sysroot", {})
    policy = _rocm_policy(never_bundle=[])  # the inventory alone says libcuda.so.1 is the driver's
    found = closure.compute(pkg, sysroot, policy, inventory=loads.load_inventory(), check=False)
    assert any("never bundles" in p and "libcuda.so.1" in p for p in found.problems)


@pytest.fixture(scope="module")
def cxx(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("needs g++")
    d = tmp_path_factory.mktemp("cxx")
    e = {"lib": _cc(d / "libggml-cxx.so", '#include <string>\nextern "C" int cxx(const char *s) '
                    '{ return (int)std::string(s).size(); }\n', soname="libggml-cxx.so", cxx=True),
         "c": _cc(d / "libggml-c.so", "int c(void) { return 1; }\n", soname="libggml-c.so"),
         "main": _cc(d / "ollama", "int main(void) { return 0; }\n")}
    # A libstdc++.so.6 that defines only GLIBCXX_3.4: a carried copy too old for what is asked of it.
    (d / "old.map").write_text("GLIBCXX_3.4 { global: old_fn; };\n")
    e["old"] = _cc(d / "libstdc++-old.so.6", "int old_fn(void) { return 0; }\n", soname="libstdc++.so.6",
                   flags=(f"-Wl,--version-script={d / 'old.map'}",))
    return e


def _cxx_walk(tmp_path, cxx, copy: Path):
    info = elf.read_elf(cxx["lib"])
    glibcxx = sorted((v for lib, v in info.version_needs if lib == "libstdc++.so.6"),
                     key=lambda v: policy_mod.vkey(v.rpartition("_")[2]))
    assert glibcxx, "the C++ fixture needs GLIBCXX versions"
    below = glibcxx[-1].rpartition("_")[2].rsplit(".", 1)
    cap = f"{below[0]}.{int(below[1]) - 1}"  # just below what the C++ library needs
    policy = _rocm_policy(provided=["libc.so.6", "ld-linux-x86-64.so.2", "libm.so.6", "libgcc_s.so.1",
                                    "libstdc++.so.6"], carry=["libstdc++.so.6"],
                          max_versions={"GLIBC": "99.0", "GLIBCXX": cap})
    pkg = _place(tmp_path / "pkg", {"bin/ollama": cxx["main"], f"{ROCM}/libggml-cxx.so": cxx["lib"],
                                    "lib/ollama/libggml-c.so": cxx["c"]})
    sysroot = _place(tmp_path / "sysroot", {f"{MULTIARCH}/libstdc++.so.6": copy})
    return closure.compute(pkg, sysroot, policy, check=False), cap


def test_a_carried_library_goes_beside_what_needs_more_of_it_than_the_floor_has(tmp_path, cxx):
    libstdcxx = Path("/usr/lib/x86_64-linux-gnu/libstdc++.so.6")
    if not libstdcxx.exists():
        pytest.skip("no x86-64 libstdc++ on this host")
    found, cap = _cxx_walk(tmp_path, cxx, libstdcxx.resolve())
    assert [b.dest for b in found.bundles] == [f"{ROCM}/libstdc++.so.6"]
    assert found.carried == {"libstdc++.so.6": (f"{ROCM}/libggml-cxx.so",)}
    # Met by the carried copy: not a need of the host's, so within the floor; nothing too new.
    assert found.too_new == () and found.uncovered == ()
    assert "GLIBCXX" not in found.max_versions or policy_mod.vkey(
        found.max_versions["GLIBCXX"].version.rpartition("_")[2]) <= policy_mod.vkey(cap)
    found.check()
    assert f"{ROCM}/libggml-cxx.so" not in found.system.get("libstdc++.so.6", ())


def test_a_carried_copy_must_define_what_its_users_need(tmp_path, cxx):
    found, _ = _cxx_walk(tmp_path, cxx, cxx["old"])
    assert found.uncovered and {u.object for u in found.uncovered} == {f"{ROCM}/libggml-cxx.so"}
    with pytest.raises(ClosureError, match="which the copy of it the package carries does not define"):
        found.check()


def test_revise_reads_the_rewritten_objects_anew(tmp_path, rocm):
    found = _walk(tmp_path, rocm)
    backend = f"{ROCM}/libggml-hip.so"
    fake = closure.ElfInfo(**{**{f: getattr(found.infos[backend], f) for f in (
        "path", "elf_class", "machine", "type", "soname", "needed", "rpath", "runpath")},
        "version_needs": (("libc.so.6", "GLIBC_100.0"),)})
    revised = closure.revise(found, {backend: fake})
    assert [u.version for u in revised.too_new] == ["GLIBC_100.0"]
    assert revised.max_versions["GLIBC"].version == "GLIBC_100.0"
    with pytest.raises(ClosureError, match=r"needs GLIBC_100\.0 from libc\.so\.6, newer than policy"):
        revised.check()
    revised.check(versions=False)  # the floor pass checks the versions after it ran


@pytest.mark.parametrize("change, message", [
    ({"carry": ["libz.so.1"]}, "'libz.so.1' is not in provided"),
    ({"floor_pass": {"glibc": "buster", "without": "debian-rocm"}}, "no glibc table 'buster'"),
    ({"floor_pass": {"glibc": "trixie", "without": "debian-rocm"}}, "table 'trixie' is glibc 2.41, but"),
    ({"floor_pass": {"glibc": "bullseye", "without": "nowhere"}}, "'nowhere' is not another policy"),
    ({"verify": {"suites": ["bookworm"]}}, "must include the floor's suite 'bullseye'"),
    ({"verify": {"server_log": ["("]}}, "is not a regular expression"),
    ({"verify": {"suites": ["Bookworm!"]}}, "is not a Debian suite name"),
])
def test_bad_floor_settings_of_a_policy_are_refused(change, message):
    doc = {"description": "d", "suite": "bullseye", "provided": ["libc.so.6"],
           "max_versions": {"GLIBC": "2.31"}, **change}
    with pytest.raises(ConfigError, match=message):
        policy_mod.parse_policy(doc, Path("floor-test.toml"))


def test_turning_the_pass_off_holds_the_package_to_the_floor_it_has_as_built():
    rocm = policy_mod.load_policy("debian-bullseye-rocm")
    assert policy_mod.held_to(rocm, True) is rocm
    assert policy_mod.held_to(rocm, False).name == "debian-rocm"
    plain = policy_mod.load_policy("debian-bullseye")
    assert policy_mod.held_to(plain, False) is plain
