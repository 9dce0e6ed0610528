"""The load probe verify runs on every shared object: the C program itself, compiled here with gcc and run
on real libraries (an undefined symbol, a missing dependency), and the reading of its report."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.config.paths import LOAD_PROBE_SOURCE
from pipeline.smoke import loadprobe

from .test_closure import _cc, _place

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("probe")
    argv = [a.format(out=str(d / "loadprobe"), src=str(LOAD_PROBE_SOURCE)) for a in loadprobe.COMPILER]
    subprocess.run(argv, check=True, capture_output=True)
    return d / "loadprobe"


@pytest.fixture(scope="module")
def libs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("libs")
    e = {"dep": _cc(d / "libdep.so.1", "int dep(void) { return 1; }\n", soname="libdep.so.1")}
    e["good"] = _cc(d / "libgood.so", "int dep(void);\nint good(void) { return dep(); }\n",
                    soname="libgood.so", link=(e["dep"],))
    # Links against a libdep that has the symbol; shipped beside one that lacks it: an undefined symbol
    # only a load with every symbol bound sees (ldd says nothing).
    (d / "new").mkdir()
    e["newdep"] = _cc(d / "new" / "libdep.so.1",
                      "int dep(void) { return 1; }\nint dep2(void) { return 2; }\n", soname="libdep.so.1")
    e["undefined"] = _cc(d / "libundef.so", "int dep2(void);\nint u(void) { return dep2(); }\n",
                         soname="libundef.so", link=(e["newdep"],))
    e["gpu_object"] = d / "Kernels.so-000-gfx906.hsaco"
    e["gpu_object"].write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x03\x00\xe0\x00" + b"\0" * 44)
    return e


def run(probe: Path, path: str, files: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    return subprocess.run(loadprobe.argv(str(probe), path, files), capture_output=True, text=True,
                          check=False, env=env)


def test_a_folder_that_loads_reports_every_file_and_both_modes(tmp_path, probe, libs):
    pkg = _place(tmp_path / "pkg", {"lib/ollama/libdep.so.1": libs["dep"],
                                    "lib/ollama/libgood.so": libs["good"]})
    groups = loadprobe.groups(pkg)
    assert groups == {"lib/ollama": ["lib/ollama/libdep.so.1", "lib/ollama/libgood.so"]}
    out = run(probe, loadprobe.library_path(str(pkg), "lib/ollama"),
              [str(pkg / f) for f in groups["lib/ollama"]])
    assert out.returncode == 0, out.stderr
    report = loadprobe.parse(out.stdout)
    assert report.complete and report.failures == () and len(report.loaded) == 2
    assert loadprobe.judge(report, "lib/ollama") == ([], [])


def test_an_undefined_symbol_fails_where_ldd_would_pass(tmp_path, probe, libs):
    pkg = _place(tmp_path / "pkg", {"lib/ollama/rocm/libundef.so": libs["undefined"],
                                    "lib/ollama/libdep.so.1": libs["dep"]})
    path = loadprobe.library_path(str(pkg), "lib/ollama/rocm")
    assert path == f"{pkg}/lib/ollama/rocm:{pkg}/lib/ollama"
    out = run(probe, path, [str(pkg / "lib/ollama/rocm/libundef.so")])
    report = loadprobe.parse(out.stdout)
    assert {mode for mode, _, _ in report.failures} == {"alone", "load"}
    assert all("undefined symbol: dep2" in message for _, _, message in report.failures)
    problems, _ = loadprobe.judge(report, "lib/ollama/rocm")
    assert problems and problems[0].startswith(f"{pkg}/lib/ollama/rocm/libundef.so: does not load with every "
                                               "symbol bound (alone): ")
    # The loader's own listing (what ldd prints) finds nothing wrong without binding every symbol.
    ldd = subprocess.run(["/lib64/ld-linux-x86-64.so.2", "--list", str(pkg / "lib/ollama/rocm/libundef.so")],
                         capture_output=True, text=True, check=False,
                         env={"LD_LIBRARY_PATH": path})
    assert ldd.returncode == 0 and "not found" not in ldd.stdout


def test_alone_catches_a_library_whose_own_dependencies_do_not_cover_it(tmp_path, probe, libs):
    # libgood needs libdep but finds it only through the folder: alone, with nothing on the path, it
    # fails even though loading the folder together (libdep first, RTLD_GLOBAL) succeeds.
    pkg = _place(tmp_path / "pkg", {"x/libdep.so.1": libs["dep"], "x/libgood.so": libs["good"]})
    out = run(probe, "/nowhere", [str(pkg / "x/libdep.so.1"), str(pkg / "x/libgood.so")])
    report = loadprobe.parse(out.stdout)
    assert [(m, Path(f).name) for m, f, _ in report.failures] == [("alone", "libgood.so")]
    assert len(report.loaded) == 2


def test_gpu_code_objects_and_links_are_not_probed(tmp_path, libs):
    pkg = _place(tmp_path / "pkg", {"lib/ollama/rocm/rocblas/library/Kernels.so-000-gfx906.hsaco":
                                    libs["gpu_object"],
                                    "lib/ollama/rocm/libdep.so.1.0": libs["dep"],
                                    "lib/ollama/rocm/libdep.so.1": "libdep.so.1.0"})
    assert loadprobe.groups(pkg) == {"lib/ollama/rocm": ["lib/ollama/rocm/libdep.so.1.0"]}


def test_the_runtimes_answers_are_judged():
    out = "\n".join(["load\t/p/libamdhip64.so.6\tok", "answer\thip\truntime_version\t0\t60443484",
                     "answer\thip\tdevice_count\t100\t0", "answer\tcomgr\tversion\t0\t3.0",
                     "answer\tcomgr\tisa_count\t0\t51", "answer\trocblas\tversion\t0\t4.4.1.",
                     "answer\thipblas\tcreate\t6\tHIPBLAS_STATUS_INTERNAL_ERROR", "exit\teach\t0",
                     "exit\tall\t0"])
    problems, lines = loadprobe.judge(loadprobe.parse(out), "lib/ollama/rocm")
    assert problems == []
    assert lines == ["HIP runtime 60443484: no device (hipErrorNoDevice)", "comgr 3.0, 51 ISAs",
                     "rocBLAS 4.4.1.", "hipblasCreate: 6 HIPBLAS_STATUS_INTERNAL_ERROR"]
    bad = out.replace("runtime_version\t0\t60443484", "runtime_version\t1\t0").replace("version\t0\t4.4.1.",
                                                                                       "version\t3\t")
    problems, _ = loadprobe.judge(loadprobe.parse(bad), "lib/ollama/rocm")
    calls = [p.split(":", 1)[1].split()[0] for p in problems]
    assert calls == ["hipRuntimeGetVersion", "rocblas_get_version_string"]
    cut = loadprobe.parse("load\t/p/x.so\tok\nexit\teach\t0\n")
    assert not cut.complete and "did not run to its end" in loadprobe.judge(cut, "f")[0][0]
