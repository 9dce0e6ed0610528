"""The library closure, on real ELF files built with gcc in tmp_path and a sysroot laid out like Debian's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.closure import elf
from pipeline.closure import walk as closure
from pipeline.closure.resolver import Resolver
from pipeline.closure.walk import Root
from pipeline.config import policy as policy_mod
from pipeline.config.policy import NUMERIC, vkey
from pipeline.errors import ClosureError, ConfigError, PackageError

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build ELF fixtures")

MULTIARCH = "usr/lib/x86_64-linux-gnu"
CUDA = "lib/ollama/cuda_v11"


def _cc(out: Path, source: str, *, soname: str | None = None, link: tuple[Path, ...] = (),
        flags: tuple[str, ...] = (), cxx: bool = False) -> Path:
    src = out.with_name(out.name + (".cc" if cxx else ".c"))
    src.write_text(source)
    cmd = ["g++" if cxx else "gcc", "-o", str(out), str(src), *[str(p) for p in link], *flags]
    if soname is not None:
        cmd[1:1] = ["-shared", "-fPIC", f"-Wl,-soname,{soname}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def elves(tmp_path_factory) -> dict[str, Path]:
    """libbase.so.1 <- libmid.so.2 <- libbackend.so (a backend, dlopen'd: bin/ollama does not link it)."""
    d = tmp_path_factory.mktemp("elves")
    e: dict[str, Path] = {}
    e["base"] = _cc(d / "libbase.so.1.0.0", "#include <stdlib.h>\nint base(void) { return rand(); }\n",
                    soname="libbase.so.1")
    e["mid"] = _cc(d / "libmid.so.2.0.0", "int base(void);\nint mid(void) { return base() + 1; }\n",
                   soname="libmid.so.2", link=(e["base"],))
    e["backend"] = _cc(d / "libbackend.so", "#include <stdlib.h>\nint mid(void);\n"
                       "int backend(void) { return mid() + rand(); }\n",
                       soname="libbackend.so", link=(e["mid"],))
    e["main"] = _cc(d / "ollama", "int main(void) { return 0; }\n")
    e["main_base"] = _cc(d / "ollama-base", "int base(void);\nint main(void) { return base(); }\n",
                         link=(e["base"],))
    e["cuda"] = _cc(d / "libcuda.so.1", "int cuInit(unsigned f) { return (int)f; }\n", soname="libcuda.so.1")
    e["gpu"] = _cc(d / "libggml-gpu.so", "int cuInit(unsigned);\nint mid(void);\n"
                   "int gpu(void) { return cuInit(0) + mid(); }\n",
                   soname="libggml-gpu.so", link=(e["cuda"], e["mid"]))
    # A vendor tree outside the default folders: libv finds libvdep through RUNPATH=$ORIGIN only.
    e["vdep"] = _cc(d / "libvdep.so.1", "int vdep(void) { return 3; }\n", soname="libvdep.so.1")
    e["v"] = _cc(d / "libv.so.1", "int vdep(void);\nint v(void) { return vdep(); }\n", soname="libv.so.1",
                 link=(e["vdep"],), flags=("-Wl,--enable-new-dtags", "-Wl,-rpath,$ORIGIN"))
    e["v_norunpath"] = _cc(d / "libv-plain.so.1", "int vdep(void);\nint v(void) { return vdep(); }\n",
                           soname="libv.so.1", link=(e["vdep"],))
    e["vbackend"] = _cc(d / "libggml-v.so", "int v(void);\nint vb(void) { return v(); }\n",
                        soname="libggml-v.so", link=(e["v"],),
                        flags=("-Wl,--enable-new-dtags", "-Wl,-rpath,/opt/vendor/lib"))
    e["plainbackend"] = _cc(d / "libggml-plain.so", "int v(void);\nint vb(void) { return v(); }\n",
                            soname="libggml-plain.so", link=(e["v"],))
    e["cpu"] = _cc(d / "libggml-cpu.so", "int base(void);\nint cpu(void) { return base(); }\n",
                   soname="libggml-cpu.so", link=(e["base"],))
    if shutil.which("g++"):
        e["cxx"] = _cc(d / "libggml-cxx.so", '#include <string>\n'
                       'extern "C" int cxx(const char *s) { return (int)std::string(s).size(); }\n',
                       soname="libggml-cxx.so", cxx=True)
    return e


def _place(root: Path, files: dict[str, Path | str]) -> Path:
    """Files (copied from a Path) and symlinks (a str is the link's target) under root."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, what in files.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(what, str):
            dest.symlink_to(what)
        else:
            shutil.copyfile(what, dest)
    return root


def _sysroot(tmp_path: Path, elves, extra: dict[str, Path | str] | None = None) -> Path:
    """A Debian-like library folder: real files with their soname links, like distro packages."""
    files: dict[str, Path | str] = {
        f"{MULTIARCH}/libbase.so.1.0.0": elves["base"], f"{MULTIARCH}/libbase.so.1": "libbase.so.1.0.0",
        f"{MULTIARCH}/libmid.so.2.0.0": elves["mid"], f"{MULTIARCH}/libmid.so.2": "libmid.so.2.0.0",
    }
    files.update(extra or {})
    return _place(tmp_path / "sysroot", files)


def _package(tmp_path: Path, elves, files: dict[str, str] | None = None) -> Path:
    """An Ollama release tree: bin/ollama (links only libc) and the backends given by name."""
    files = files if files is not None else {f"{CUDA}/libggml-cuda.so": "backend"}
    return _place(tmp_path / "pkg", {"bin/ollama": elves["main"],
                                     **{rel: elves[name] for rel, name in files.items()}})


def _policy(**over) -> policy_mod.Policy:
    doc = {"description": "test floor", "provided": ["libc.so.6", "ld-linux-x86-64.so.2"],
           "never_bundle": ["libcuda.so.1"], "max_versions": {"GLIBC": "99.0"}}
    doc.update(over)
    return policy_mod.parse_policy(doc, Path("test-floor.toml"))


def _load(lib: Path, *, library_path: Path) -> subprocess.CompletedProcess:
    """dlopen `lib` in a fresh process with LD_LIBRARY_PATH, as Ollama starts its runners."""
    env = {**os.environ, "LD_LIBRARY_PATH": str(library_path)}
    return subprocess.run([sys.executable, "-c", f"import ctypes; ctypes.CDLL({str(lib)!r})"], env=env,
                          capture_output=True, text=True, check=False)


# --- the walk -------------------------------------------------------------------------------------


def test_runtime_loaded_backend_pulls_its_whole_chain_into_its_runner_folder(tmp_path, elves):
    pkg, sysroot = _package(tmp_path, elves), _sysroot(tmp_path, elves)
    assert _load(pkg / CUDA / "libggml-cuda.so", library_path=pkg / CUDA).returncode != 0

    result = closure.compute(pkg, sysroot, _policy())

    assert [(b.dest, b.found_at, b.needed_by) for b in result.bundles] == [
        (f"{CUDA}/libbase.so.1", f"/{MULTIARCH}/libbase.so.1", (f"{CUDA}/libmid.so.2",)),
        (f"{CUDA}/libmid.so.2", f"/{MULTIARCH}/libmid.so.2", (f"{CUDA}/libggml-cuda.so",)),
    ]
    # The copy comes from the real file behind the soname link, inside the sysroot.
    assert {b.source for b in result.bundles} == {sysroot / MULTIARCH / "libbase.so.1.0.0",
                                                  sysroot / MULTIARCH / "libmid.so.2.0.0"}
    _install(result, pkg)
    assert _load(pkg / CUDA / "libggml-cuda.so", library_path=pkg / CUDA).returncode == 0
    again = closure.compute(pkg, sysroot, _policy())
    assert again.bundles == ()
    assert again.in_package == {"libbase.so.1": (f"{CUDA}/libmid.so.2",),
                                "libmid.so.2": (f"{CUDA}/libggml-cuda.so",)}


def _install(result, pkg: Path) -> None:
    """The bundles copied into the package folder, where the package stage puts them in the archive."""
    for bundle in result.bundles:
        dest = pkg / bundle.dest
        assert not os.path.lexists(dest), dest
        shutil.copyfile(bundle.source, dest)


def test_system_libraries_are_not_bundled(tmp_path, elves):
    result = closure.compute(_package(tmp_path, elves), _sysroot(tmp_path, elves), _policy())
    assert "libc.so.6" not in {b.soname for b in result.bundles}
    # libmid calls nothing of libc, so the linker left it out of its DT_NEEDED.
    assert sorted(result.system["libc.so.6"]) == ["bin/ollama", f"{CUDA}/libbase.so.1",
                                                  f"{CUDA}/libggml-cuda.so"]
    assert result.to_dict()["system"] == {"libc.so.6": list(result.system["libc.so.6"])}


def test_binary_needing_an_unprovided_library_is_an_error(tmp_path, elves):
    # bin/ollama is started without LD_LIBRARY_PATH and has no RPATH: a bundled copy would not load.
    pkg = _place(tmp_path / "pkg", {"bin/ollama": elves["main_base"]})
    with pytest.raises(ClosureError, match=r"bin/ollama needs libbase\.so\.1 .*started without "
                                           r"LD_LIBRARY_PATH"):
        closure.compute(pkg, _sysroot(tmp_path, elves), _policy())


def test_driver_library_is_never_bundled_even_when_found(tmp_path, elves):
    pkg = _package(tmp_path, elves, {f"{CUDA}/libggml-cuda.so": "gpu"})
    sysroot = _sysroot(tmp_path, elves, {f"{MULTIARCH}/libcuda.so.1": elves["cuda"]})
    result = closure.compute(pkg, sysroot, _policy())
    assert "libcuda.so.1" not in {b.soname for b in result.bundles}
    assert result.driver == {"libcuda.so.1": (f"{CUDA}/libggml-cuda.so",)}
    assert {b.soname for b in result.bundles} == {"libmid.so.2", "libbase.so.1"}


def test_missing_driver_library_is_not_an_error(tmp_path, elves):
    pkg = _package(tmp_path, elves, {f"{CUDA}/libggml-cuda.so": "gpu"})
    result = closure.compute(pkg, _sysroot(tmp_path, elves), _policy())
    assert result.missing == {}
    assert result.driver == {"libcuda.so.1": (f"{CUDA}/libggml-cuda.so",)}


def test_driver_library_in_the_package_is_an_error(tmp_path, elves):
    pkg = _package(tmp_path, elves, {f"{CUDA}/libggml-cuda.so": "gpu", f"{CUDA}/libcuda.so.1": "cuda"})
    with pytest.raises(ClosureError,
                       match=rf"{CUDA}/libcuda\.so\.1 is in the package.*comes with the driver"):
        closure.compute(pkg, _sysroot(tmp_path, elves), _policy())


def test_missing_library_is_an_error_naming_it_and_its_needer(tmp_path, elves):
    sysroot = _place(tmp_path / "sysroot", {f"{MULTIARCH}/libmid.so.2": elves["mid"]})
    with pytest.raises(ClosureError) as info:
        closure.compute(_package(tmp_path, elves), sysroot, _policy())
    assert isinstance(info.value, PackageError)
    message = str(info.value)
    assert f"libbase.so.1 not found in the builder image (searched /lib/x86_64-linux-gnu, /{MULTIARCH}" \
           in message
    assert f"needed by {CUDA}/libmid.so.2" in message
    assert info.value.closure.missing == {"libbase.so.1": (f"{CUDA}/libmid.so.2",)}


def test_a_provided_library_s_own_needs_are_the_system_s_business(tmp_path, elves):
    # libmid provided: libbase, which only it needs, is neither bundled nor missing.
    sysroot = _place(tmp_path / "sysroot", {})
    result = closure.compute(_package(tmp_path, elves), sysroot,
                             _policy(provided=["libc.so.6", "libmid.so.2"]))
    assert result.bundles == ()
    assert result.system["libmid.so.2"] == (f"{CUDA}/libggml-cuda.so",)
    assert "libbase.so.1" not in result.system


def test_unversioned_name_does_not_match_an_exact_soname(tmp_path, elves):
    # "libmid.so" in the policy does not cover libmid.so.2: it is bundled all the same.
    result = closure.compute(_package(tmp_path, elves), _sysroot(tmp_path, elves),
                             _policy(provided=["libc.so.6", "libmid.so"]))
    assert "libmid.so.2" in {b.soname for b in result.bundles}


def test_runpath_with_origin_is_honoured(tmp_path, elves):
    # The backend keeps the build's RUNPATH /opt/vendor/lib; libv finds libvdep through $ORIGIN.
    pkg = _package(tmp_path, elves, {f"{CUDA}/libggml-v.so": "vbackend"})
    sysroot = _place(tmp_path / "sysroot", {"opt/vendor/lib/libv.so.1": elves["v"],
                                            "opt/vendor/lib/libvdep.so.1": elves["vdep"]})
    result = closure.compute(pkg, sysroot, _policy())
    assert [(b.dest, b.found_at) for b in result.bundles] == [
        (f"{CUDA}/libv.so.1", "/opt/vendor/lib/libv.so.1"),
        (f"{CUDA}/libvdep.so.1", "/opt/vendor/lib/libvdep.so.1"),
    ]


def test_without_runpath_a_vendor_folder_is_not_searched(tmp_path, elves):
    pkg = _package(tmp_path, elves, {f"{CUDA}/libggml-v.so": "vbackend"})
    sysroot = _place(tmp_path / "sysroot", {"opt/vendor/lib/libv.so.1": elves["v_norunpath"],
                                            "opt/vendor/lib/libvdep.so.1": elves["vdep"]})
    with pytest.raises(ClosureError, match=rf"libvdep\.so\.1 not found .*needed by {CUDA}/libv\.so\.1"):
        closure.compute(pkg, sysroot, _policy())


def test_ld_so_conf_of_the_sysroot_is_searched(tmp_path, elves):
    pkg = _package(tmp_path, elves, {f"{CUDA}/libggml-plain.so": "plainbackend"})
    sysroot = _place(tmp_path / "sysroot", {
        "opt/vendor/lib/libv.so.1": elves["v"], "opt/vendor/lib/libvdep.so.1": elves["vdep"]})
    with pytest.raises(ClosureError, match=r"libv\.so\.1 not found"):
        closure.compute(pkg, sysroot, _policy())
    (sysroot / "etc").mkdir()
    (sysroot / "etc/ld.so.conf").write_text("# comment\ninclude /etc/ld.so.conf.d/*.conf\n")
    (sysroot / "etc/ld.so.conf.d").mkdir()
    (sysroot / "etc/ld.so.conf.d/vendor.conf").write_text("/opt/vendor/lib\n")
    result = closure.compute(pkg, sysroot, _policy())
    assert {b.found_at for b in result.bundles} == {"/opt/vendor/lib/libv.so.1",
                                                    "/opt/vendor/lib/libvdep.so.1"}


def test_library_path_is_searched_like_ld_library_path(tmp_path, elves):
    pkg = _package(tmp_path, elves, {f"{CUDA}/libggml-plain.so": "plainbackend"})
    sysroot = _place(tmp_path / "sysroot", {"opt/vendor/lib/libv.so.1": elves["v"],
                                            "opt/vendor/lib/libvdep.so.1": elves["vdep"]})
    result = closure.compute(pkg, sysroot, _policy(), library_path=["/opt/vendor/lib"])
    assert len(result.bundles) == 2


def test_symlink_escaping_the_sysroot_is_refused(tmp_path, elves):
    _place(tmp_path / "outside", {"libbase.so.1.0.0": elves["base"]})
    sysroot = _place(tmp_path / "sysroot", {
        f"{MULTIARCH}/libmid.so.2": elves["mid"],
        f"{MULTIARCH}/libbase.so.1": "../../../../outside/libbase.so.1.0.0",
    })
    with pytest.raises(ClosureError, match=rf"leaves the sysroot .*/{MULTIARCH}/libbase\.so\.1 points to "
                                           r"\.\./\.\./\.\./\.\./outside"):
        closure.compute(_package(tmp_path, elves), sysroot, _policy())


def test_absolute_symlink_is_taken_from_the_sysroot_not_the_host(tmp_path, elves):
    sysroot = _place(tmp_path / "sysroot", {
        f"{MULTIARCH}/libmid.so.2": elves["mid"],
        "opt/real/libbase.so.1.0.0": elves["base"],
        f"{MULTIARCH}/libbase.so.1": "/opt/real/libbase.so.1.0.0",
    })
    assert not Path("/opt/real/libbase.so.1.0.0").exists()
    result = closure.compute(_package(tmp_path, elves), sysroot, _policy())
    assert {b.source for b in result.bundles} >= {sysroot / "opt/real/libbase.so.1.0.0"}


def test_symlink_loop_is_an_error(tmp_path):
    sysroot = _place(tmp_path / "sysroot", {"lib/a.so": "b.so", "lib/b.so": "a.so"})
    with pytest.raises(ClosureError, match="too many levels of symbolic links"):
        Resolver(sysroot).locate("/lib/a.so")


def test_candidates_that_are_not_libraries_for_the_machine_are_skipped(tmp_path, elves):
    # The loader passes over a file it cannot use and goes on searching, and so does the resolver.
    sysroot = _sysroot(tmp_path, elves, {"lib/x86_64-linux-gnu/libmid.so.2": _amdgpu(tmp_path, elves)})
    (sysroot / "lib/x86_64-linux-gnu/libbase.so.1").write_text("not an ELF file\n")
    result = closure.compute(_package(tmp_path, elves), sysroot, _policy())
    assert {b.found_at for b in result.bundles} == {f"/{MULTIARCH}/libmid.so.2", f"/{MULTIARCH}/libbase.so.1"}


def test_library_already_in_lib_ollama_is_used_and_its_needs_go_beside_it(tmp_path, elves):
    pkg = _package(tmp_path, elves, {f"{CUDA}/libggml-cuda.so": "backend", "lib/ollama/libmid.so.2": "mid"})
    result = closure.compute(pkg, _sysroot(tmp_path, elves), _policy())
    assert [(b.dest, b.needed_by) for b in result.bundles] == [
        ("lib/ollama/libbase.so.1", ("lib/ollama/libmid.so.2",))]
    assert result.in_package == {"libmid.so.2": (f"{CUDA}/libggml-cuda.so",)}


def test_library_two_folders_need_lands_once_where_both_find_it(tmp_path, elves):
    pkg = _package(tmp_path, elves, {"lib/ollama/rocm/libggml-hip.so": "backend",
                                     "lib/ollama/libggml-cpu.so": "cpu"})
    result = closure.compute(pkg, _sysroot(tmp_path, elves), _policy())
    assert [(b.dest, b.needed_by) for b in result.bundles] == [
        ("lib/ollama/libbase.so.1", ("lib/ollama/libggml-cpu.so", "lib/ollama/rocm/libmid.so.2")),
        ("lib/ollama/rocm/libmid.so.2", ("lib/ollama/rocm/libggml-hip.so",)),
    ]


def test_dangling_link_in_the_package_is_an_error(tmp_path, elves):
    pkg = _package(tmp_path, elves)
    (pkg / CUDA / "libmid.so.2").symlink_to("libmid.so.2.0.0")
    with pytest.raises(ClosureError, match=rf"{CUDA}/libmid\.so\.2 .*is a link to libmid\.so\.2\.0\.0, which "
                                           "does not exist"):
        closure.compute(pkg, _sysroot(tmp_path, elves), _policy())


# --- roots ---------------------------------------------------------------------------------------


def _amdgpu(tmp_path: Path, elves) -> Path:
    """An ELF shared object for another machine, like the GPU code objects of rocblas/library."""
    data = bytearray(elves["base"].read_bytes())
    data[18:20] = (224).to_bytes(2, "little")  # EM_AMDGPU
    out = tmp_path / "amdgpu.co"
    out.write_bytes(bytes(data))
    return out


def test_roots_are_the_binary_and_every_shared_object_under_lib_ollama(tmp_path, elves):
    pkg = _package(tmp_path, elves, {f"{CUDA}/libggml-cuda.so": "backend",
                                     "lib/ollama/libggml-cpu.so": "cpu"})
    _place(pkg, {"lib/ollama/rocm/rocblas/library/TensileLibrary_gfx906.co": _amdgpu(tmp_path, elves),
                 "lib/ollama/libggml-cpu-link.so": "libggml-cpu.so"})
    (pkg / "lib/ollama/rocm/rocblas/library/TensileLibrary.dat").write_bytes(b"\x82msgpack")
    assert closure.ollama_roots(pkg) == [
        Root(path="bin/ollama"),
        Root(path="lib/ollama/libggml-cpu.so", search=("lib/ollama",), bundle_into="lib/ollama"),
        Root(path=f"{CUDA}/libggml-cuda.so", search=(CUDA, "lib/ollama"), bundle_into=CUDA),
    ]


def test_root_bundle_folder_must_be_searched():
    with pytest.raises(ValueError, match="not searched at run time"):
        Root(path="lib/ollama/x/a.so", search=("lib/ollama",), bundle_into="lib/ollama/x")


# --- symbol versions -----------------------------------------------------------------------------


def test_glibc_above_the_floor_is_an_error_naming_object_and_version(tmp_path, elves):
    pkg, sysroot = _package(tmp_path, elves), _sysroot(tmp_path, elves)
    needed = _max_version(elf.read_elf(pkg / "bin/ollama"), "GLIBC", ["libc.so.6"])
    assert needed and needed.startswith("GLIBC_2.")
    with pytest.raises(ClosureError, match=rf"bin/ollama needs {needed} from libc\.so\.6, newer than policy "
                                           r"test-floor allows \(GLIBC_2\.2\)"):
        closure.compute(pkg, sysroot, _policy(max_versions={"GLIBC": "2.2"}))


def test_glibc_at_or_below_the_floor_passes_and_the_highest_is_recorded(tmp_path, elves):
    pkg, sysroot = _package(tmp_path, elves), _sysroot(tmp_path, elves)
    result = closure.compute(pkg, sysroot, _policy(max_versions={"GLIBC": "99.0"}))
    highest = result.max_versions["GLIBC"]
    assert highest.library == "libc.so.6"
    each = [_max_version(elf.read_elf(f), "GLIBC") for f in
            (pkg / "bin/ollama", pkg / CUDA / "libggml-cuda.so", elves["mid"], elves["base"])]
    assert highest.version == max(filter(None, each),
                                  key=lambda v: [int(x) for x in v.split("_")[1].split(".")])
    exact = highest.version.split("_")[1]
    assert closure.compute(pkg, sysroot, _policy(max_versions={"GLIBC": exact})).problems == ()


def _max_version(info, prefix: str, libraries=None) -> str | None:
    """The highest PREFIX_x.y an object needs (from `libraries` only, when given), or None."""
    versions = [name for library, name in info.version_needs if name.rpartition("_")[0] == prefix
                and (libraries is None or library in libraries)
                and NUMERIC.fullmatch(name.rpartition("_")[2])]
    return max(versions, key=lambda v: vkey(v.rpartition("_")[2]), default=None)


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ for a C++ fixture")
def test_libstdcxx_versions_are_capped_like_glibc(tmp_path, elves):
    pkg = _package(tmp_path, elves, {f"{CUDA}/libggml-cxx.so": "cxx"})
    policy = _policy(provided=["libc.so.6", "libm.so.6", "libgcc_s.so.1", "libstdc++.so.6"],
                     max_versions={"GLIBC": "99", "GLIBCXX": "3.4"})
    with pytest.raises(ClosureError, match=rf"{CUDA}/libggml-cxx\.so needs GLIBCXX_3\.4\.\d+ from "
                                           r"libstdc\+\+\.so\.6"):
        closure.compute(pkg, tmp_path, policy)
    # The shipped policies accept what this machine's g++ produces when its glibc is old enough.
    needed = elf.read_elf(pkg / CUDA / "libggml-cxx.so").version_needs
    for name in ("debian-bookworm", "debian-trixie"):
        shipped = policy_mod.load_policy(name)
        if all(shipped.allows(v) for _, v in needed):
            assert closure.compute(pkg, tmp_path, shipped).too_new == ()


def test_policy_version_comparison():
    p = _policy(max_versions={"GLIBC": "2.36", "GCC": "14.0.0"})
    assert p.allows("GLIBC_2.36") and p.allows("GLIBC_2.2.5") and not p.allows("GLIBC_2.37")
    assert p.allows("GCC_14.0") and not p.allows("GCC_14.1")
    assert not p.allows("GLIBC_PRIVATE")
    assert p.allows("LIBSELINUX_1.0")  # not capped by this policy


# --- policies ------------------------------------------------------------------------------------


def test_shipped_policies_load_and_keep_the_driver_out():
    assert {"debian-bookworm", "debian-trixie"} <= set(policy_mod.available_policies())
    bookworm, trixie = policy_mod.load_policy("debian-bookworm"), policy_mod.load_policy("debian-trixie")
    assert (bookworm.glibc, trixie.glibc) == ("2.36", "2.41")
    for p in (bookworm, trixie):
        assert "libcuda.so.1" in p.never_bundle and "libcuda.so.1" not in p.provided
        assert {"libc.so.6", "ld-linux-x86-64.so.2", "libstdc++.so.6"} <= set(p.provided)
        assert {"GLIBC", "GLIBCXX", "CXXABI", "GCC"} == set(p.max_versions)


def test_every_shipped_policy_states_a_full_floor_and_a_debian_suite_to_verify_on():
    suites = {"bullseye": "2.31", "bookworm": "2.36", "trixie": "2.41"}  # glibc of each suite
    for name in policy_mod.available_policies():
        p = policy_mod.load_policy(name)
        assert {"GLIBC", "GLIBCXX", "CXXABI", "GCC"} == set(p.max_versions), name
        assert "libcuda.so.1" in p.never_bundle and "libstdc++.so.6" in p.provided, name
        # The verify container's glibc covers the floor.
        assert p.suite in suites and p.allows(f"GLIBC_{p.glibc}")
        assert not p.allows(f"GLIBC_{suites[p.suite]}.1")
        assert policy_mod.vkey(p.glibc) <= policy_mod.vkey(suites[p.suite]), name


def test_lowered_floors():
    """bullseye for the cpu and K80 packages, what the Debian ROCm libraries need for the ROCm ones, and
    Ubuntu 22.04 for the vendor ROCm flavor."""
    floors = {n: (policy_mod.load_policy(n).suite, dict(closure.load_policy(n).max_versions))
              for n in ("debian-bullseye", "debian-rocm", "ubuntu-22.04")}
    assert floors["debian-bullseye"] == ("bullseye", {"GLIBC": "2.31", "GLIBCXX": "3.4.28",
                                                      "CXXABI": "1.3.12", "GCC": "7.0.0"})
    assert floors["debian-rocm"][1]["GLIBC"] == "2.38" and floors["debian-rocm"][1]["GLIBCXX"] == "3.4.32"
    assert floors["ubuntu-22.04"][1]["GLIBC"] == "2.35" and floors["ubuntu-22.04"][1]["GLIBCXX"] == "3.4.30"
    bullseye = policy_mod.load_policy("debian-bullseye")
    assert not bullseye.allows("GLIBC_2.34") and not bullseye.allows("GLIBCXX_3.4.29")


def test_unknown_policy_name_is_refused_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown library policy 'debian-bookwrm' .did you mean "
                                          r"'debian-bookworm'"):
        policy_mod.load_policy("debian-bookwrm")


def test_policy_unknown_key_is_refused_with_suggestion():
    with pytest.raises(ConfigError, match=r"test-floor\.toml: \[policy\] unknown key 'provides' "
                                          r"\(did you mean 'provided'\?\)"):
        _policy(provides=["libc.so.6"])


@pytest.mark.parametrize(("over", "message"), [
    ({"provided": ["libc.so.6", "libc.so.6"]}, r"'libc\.so\.6' is listed twice"),
    ({"never_bundle": ["libc.so.6"]}, r"'libc\.so\.6' is listed in both 'provided' and 'never_bundle'"),
    ({"provided": ["libc.so*"]}, r"'libc\.so\*' is not a soname"),
    ({"provided": ["/lib/x86_64-linux-gnu/libc.so.6"]}, "is not a soname"),
    ({"max_versions": {"GLIBCXX": "3.4.30"}}, "must set GLIBC"),
    ({"max_versions": {"GLIBC": "2.36-9"}}, "is not a version"),
    ({"provided": "libc.so.6"}, "key 'provided' must be a list of strings, got a string"),
    ({"name": "other"}, "key 'name' is not allowed"),
])
def test_policy_validation_errors(over, message):
    with pytest.raises(ConfigError, match=message):
        _policy(**over)


def test_policy_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "mine.toml"
    bad.write_text("provided = [\n")
    with pytest.raises(ConfigError, match=rf"{bad}: not valid TOML"):
        policy_mod.load_policy(bad)
    bad.write_text('description = "x"\nprovided = ["libc.so.6"]\n')
    with pytest.raises(ConfigError, match=rf"{bad}: \[policy\] missing key 'max_versions'"):
        policy_mod.load_policy(bad)
    bad.write_text('description = "x"\nprovided = ["libc.so.6"]\n[max_versions]\nGLIBC = "2.36"\n')
    assert policy_mod.load_policy(bad).name == "mine"
