"""Every shared object of a package loaded with every symbol bound, the way a runner loads them.

`ldd -r` cannot be trusted for this: it exits 0 even when it prints `undefined symbol`, and it is a
bash script, so with LD_LIBRARY_PATH on a package folder holding a bundled libtinfo.so.6 the shell
itself loads the package's libraries first. The probe (loadprobe.c) is a small C program of ours,
compiled on the floor (pipeline.infra.ctools), that dlopens the files itself under LD_BIND_NOW=1:
each alone in its own process (RTLD_LOCAL: its own dependencies must bring in all it needs), then all
of a folder together, after which it asks the GPU runtimes among them what they answer without a GPU
(the HIP runtime's version and device count, comgr's version, rocBLAS's version, hipblasCreate).

    groups = loadprobe.groups(package_root)             # {folder: [files]}, as Ollama's runners see them
    report = loadprobe.parse(output)                    # ProbeReport: failures, answers
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline.formats import PackageLayout
from pipeline.records import record

COMPILER = ("gcc", "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", "{out}", "{src}", "-ldl")

# $1: the probe, $2: LD_LIBRARY_PATH, the rest: files. Both modes, each ending in a marked exit status,
# so that a failing load still reports (the script itself exits 0).
SCRIPT = r"""
probe=$1 path=$2; shift 2
LD_BIND_NOW=1 LD_LIBRARY_PATH="$path" "$probe" --each "$@"; echo "exit	each	$?"
LD_BIND_NOW=1 LD_LIBRARY_PATH="$path" "$probe" "$@"; echo "exit	all	$?"
"""


def groups(root: Path, libdir: str = PackageLayout.LIBDIR) -> dict[str, list[str]]:
    """The package's shared objects (x86-64 ET_DYN, not GPU code objects) by folder under `libdir`."""
    out: dict[str, list[str]] = {}
    base = Path(root) / libdir
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d != "library")  # rocBLAS' GPU code objects
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink() or ".so" not in name or not _x86_64_shared_object(path):
                continue
            folder = path.parent.relative_to(root).as_posix()
            out.setdefault(folder, []).append(path.relative_to(root).as_posix())
    return dict(sorted(out.items()))


def _x86_64_shared_object(path: Path) -> bool:
    """An ELF64 ET_DYN file for x86-64 (e_type 3, e_machine 62), from its header."""
    with open(path, "rb") as f:
        head = f.read(20)
    return len(head) == 20 and head[:5] == b"\x7fELF\x02" and struct.unpack_from("<HH", head, 16) == (3, 62)


def library_path(pkg: str, folder: str, extra: Sequence[str] = (), libdir: str = PackageLayout.LIBDIR) -> str:
    """The LD_LIBRARY_PATH Ollama gives a runner of `folder`: the folder, then lib/ollama (then `extra`)."""
    dirs = [f"{pkg}/{folder}"] + ([f"{pkg}/{libdir}"] if folder != libdir else []) + list(extra)
    return ":".join(dirs)


def argv(probe: str, path: str, files: Sequence[str]) -> list[str]:
    return ["sh", "-c", SCRIPT, "loadprobe", probe, path, *files]


@record
class ProbeReport:
    loaded: tuple[str, ...]
    # (mode, file, the loader's message): mode "alone" or "load".
    failures: tuple[tuple[str, str, str], ...]
    # (runtime, call) -> (return code, value): ("hip", "device_count") -> (100, "0").
    answers: Mapping[tuple[str, str], tuple[int, str]]
    # Both modes reported their exit status (the probe ran to the end).
    complete: bool


def parse(output: str) -> ProbeReport:
    loaded: list[str] = []
    failures: list[tuple[str, str, str]] = []
    answers: dict[tuple[str, str], tuple[int, str]] = {}
    ends = set()
    for line in output.splitlines():
        fields = line.split("\t")
        if fields[0] in ("load", "alone") and len(fields) >= 3:
            if fields[2] == "ok":
                if fields[0] == "load":
                    loaded.append(fields[1])
            else:
                failures.append((fields[0], fields[1], fields[3] if len(fields) > 3 else fields[2]))
        elif fields[0] == "answer" and len(fields) >= 5:
            try:
                answers[(fields[1], fields[2])] = (int(fields[3]), fields[4])
            except ValueError:
                answers[(fields[1], fields[2])] = (-1, "\t".join(fields[3:]))
        elif fields[0] == "exit" and len(fields) == 3:
            ends.add(fields[1])
    return ProbeReport(loaded=tuple(loaded), failures=tuple(failures), answers=answers,
                       complete=ends == {"each", "all"})


# HIP's hipErrorNoDevice: what the runtime answers on a machine without an AMD GPU (or without /dev/kfd).
HIP_NO_DEVICE = 100


def judge(report: ProbeReport, folder: str) -> tuple[list[str], list[str]]:
    """(problems, log lines) of one folder's report: a failed load is a problem; so is a HIP runtime
    that cannot name its version or answers the device count with anything but a count or 'no device',
    or a rocBLAS without a version."""
    problems = [f"{file}: does not load with every symbol bound "
                f"({'alone' if mode == 'alone' else 'with its folder'}): {message}"
                for mode, file, message in report.failures]
    if not report.complete:
        problems.append(f"{folder}: the load probe did not run to its end")
    lines = []
    a = report.answers
    if ("hip", "runtime_version") in a:
        rc, version = a[("hip", "runtime_version")]
        count_rc, count = a.get(("hip", "device_count"), (-1, ""))
        devices = ("no device (hipErrorNoDevice)" if count_rc == HIP_NO_DEVICE
                   else f"{count} devices (rc {count_rc})")
        lines.append(f"HIP runtime {version}: {devices}")
        if rc != 0 or not version.strip("0"):
            problems.append(f"{folder}: hipRuntimeGetVersion answered rc {rc}, version {version!r}")
        if count_rc not in (0, HIP_NO_DEVICE):
            problems.append(f"{folder}: hipGetDeviceCount answered rc {count_rc}")
    if ("comgr", "version") in a:
        lines.append(f"comgr {a[('comgr', 'version')][1]}, {a.get(('comgr', 'isa_count'), (0, '?'))[1]} ISAs")
    if ("rocblas", "version") in a:
        rc, version = a[("rocblas", "version")]
        lines.append(f"rocBLAS {version}")
        if rc != 0 or not version:
            problems.append(f"{folder}: rocblas_get_version_string answered rc {rc}, {version!r}")
    if ("hipblas", "create") in a:
        rc, text = a[("hipblas", "create")]
        lines.append(f"hipblasCreate: {rc} {text}".rstrip())
    return problems, lines
