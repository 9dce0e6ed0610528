"""archs.py: code objects read from real tool output formats (clang offload bundles, cuobjdump)."""

from __future__ import annotations

import pytest

from pipeline.errors import GpuCodeError
from pipeline.gpu import archs

HIP_GREP = ("hipv4-amdgcn-amd-amdhsa--gfx1100\nhipv4-amdgcn-amd-amdhsa--gfx1103\n"
            "hipv4-amdgcn-amd-amdhsa--gfx1100\nhipv4-amdgcn-amd-amdhsa--gfx1103\n")
CUOBJDUMP = ("ELF file    1: libggml-cuda.1.sm_37.cubin\nELF file    2: libggml-cuda.2.sm_37.cubin\n"
             "cuobjdump info    : File 'libggml-cuda.so' does not contain device code\n")


def test_hip_library_with_exactly_the_requested_archs_passes():
    assert archs.check("hip", "libggml-hip.so", ["gfx1100", "gfx1103"], HIP_GREP) == ["gfx1100", "gfx1103"]


def test_hip_library_missing_an_arch_names_it():
    with pytest.raises(GpuCodeError, match=r"missing: gfx906; unexpected: gfx1100, gfx1103"):
        archs.check("hip", "libggml-hip.so", ["gfx906"], HIP_GREP)


def test_xnack_feature_suffixes_are_kept():
    assert archs.found("hip", "hipv4-amdgcn-amd-amdhsa--gfx90a:xnack-\n") == {"gfx90a:xnack-"}


def test_real_cuda_arch_means_sass_and_no_ptx():
    assert archs.check("cuda", "libggml-cuda.so", ["37-real"], CUOBJDUMP) == ["sass:sm_37"]


def test_ptx_where_only_sass_was_asked_for_is_refused():
    output = CUOBJDUMP + "PTX file    1: libggml-cuda.1.sm_50.ptx\n"
    with pytest.raises(GpuCodeError, match="unexpected: ptx:sm_50"):
        archs.check("cuda", "libggml-cuda.so", ["37-real"], output)


def test_cmake_cuda_arch_forms():
    assert archs.expected("cuda", ["37-real", "50-virtual", "61"]) == {
        "sass:sm_37", "ptx:sm_50", "sass:sm_61", "ptx:sm_61"}


def test_hip_inspection_is_a_grep_extended_regex():
    argv = archs.inspect_command("hip", "lib.so")
    assert argv[:2] == ["grep", "-aoE"] and "(?" not in argv[2]
