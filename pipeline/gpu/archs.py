"""Which GPU architectures a built backend really contains, read from its code objects.

HIP: every translation unit leaves an offload bundle in .hip_fatbin whose entries are named
'hipv4-amdgcn-amd-amdhsa--<arch>'; a library holds one bundle per unit, so the names are searched
over the whole file (clang-offload-bundler --list shows only the first bundle).
CUDA: `cuobjdump --list-elf` names one cubin per real arch (…sm_37.cubin), `--list-ptx` one PTX per
virtual arch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pipeline.errors import GpuCodeError

HIP_BUNDLE = re.compile(r"hipv4-amdgcn-amd-amdhsa--(gfx[0-9a-f]+(?::[a-z]+[+-])*)")
CUDA_ELF = re.compile(r"\.(sm_\d+[a-z]?)\.cubin\b")
CUDA_PTX = re.compile(r"\.(sm_\d+[a-z]?)\.ptx\b")

# NVIDIA's last driver branch for GPUs below a compute capability (major version): Kepler (3.x) ends
# with R470, whose CUDA is at most 11.4; later branches no longer see these GPUs.
LAST_DRIVER_BRANCH = {3: "470"}


def nvidia_driver_branch(gpu_archs: Iterable[str]) -> str:
    """The NVIDIA driver branch a host needs for CUDA archs in CMake's form (37-real: "470"), or ""
    when any current driver serves them."""
    branches = set()
    for arch in gpu_archs:
        number = arch.partition("-")[0]
        if number.isdigit() and int(number) // 10 in LAST_DRIVER_BRANCH:
            branches.add(LAST_DRIVER_BRANCH[int(number) // 10])
    return min(branches, key=int) if branches else ""


def expected(gpu_code: str, gpu_archs: Iterable[str]) -> set[str]:
    """The code objects a library must hold for the requested archs, in the form found() reports."""
    if gpu_code == "hip":
        return set(gpu_archs)
    out = set()
    for arch in gpu_archs:  # CMake's forms: 37 (SASS and PTX), 37-real (SASS), 37-virtual (PTX)
        number, _, kind = arch.partition("-")
        if kind in ("", "real"):
            out.add(f"sass:sm_{number}")
        if kind in ("", "virtual"):
            out.add(f"ptx:sm_{number}")
    return out


def inspect_command(gpu_code: str, library: str) -> list[str]:
    if gpu_code == "hip":
        return ["grep", "-aoE", HIP_BUNDLE.pattern.replace("(?::", "(:"), library]
    return ["sh", "-c", 'cuobjdump --list-elf "$0"; cuobjdump --list-ptx "$0"', library]


def found(gpu_code: str, output: str) -> set[str]:
    if gpu_code == "hip":
        return set(HIP_BUNDLE.findall(output))
    return {f"sass:{m}" for m in CUDA_ELF.findall(output)} | {f"ptx:{m}" for m in CUDA_PTX.findall(output)}


def check(gpu_code: str, library: str, gpu_archs: Iterable[str], output: str) -> list[str]:
    """The sorted code objects of `library`; raises when they are not exactly the requested ones."""
    want, have = expected(gpu_code, gpu_archs), found(gpu_code, output)
    if want != have:
        missing = ", ".join(sorted(want - have)) or "none"
        extra = ", ".join(sorted(have - want)) or "none"
        raise GpuCodeError(f"{library} holds code for {', '.join(sorted(have)) or 'nothing'}, but the target "
                           f"asks for {', '.join(sorted(want))} (missing: {missing}; unexpected: {extra})")
    return sorted(have)
