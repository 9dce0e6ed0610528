"""The package stage's GPU-code stripping: every fat library of lib/ollama except the build's own GPU
backends keeps only the served archs (synthetic offload bundles, as tests/unit/test_offload.py makes)."""

from __future__ import annotations

from pipeline.gpu import offload
from pipeline.stages.package import gpucode

from .test_offload import code_object, elf_with, fatbin, plain_bundle

HOST = "host-x86_64-unknown-linux-gnu-"


def fat(path, archs):
    path.parent.mkdir(parents=True, exist_ok=True)
    bundle = plain_bundle({HOST: b"", **{f"hipv4-amdgcn-amd-amdhsa--{a}": code_object(i, 4096)
                                         for i, a in enumerate(archs)}})
    path.write_bytes(elf_with(fatbin(bundle)))
    return path


def test_libraries_installed_beside_the_backend_are_stripped_and_the_backend_is_not(tmp_path, log):
    root = tmp_path / "dist"
    rocblas = fat(root / "lib/ollama/rocm/librocblas.so.4", ["gfx906", "gfx1100", "gfx1030"])
    backend = fat(root / "lib/ollama/rocm/libggml-hip.so", ["gfx1100", "gfx1103"])
    entries = [("lib/ollama/rocm/librocblas.so.4", rocblas), ("lib/ollama/rocm/libggml-hip.so", backend)]
    out, reports = gpucode.strip(entries, ["libggml-hip.so"], ["gfx1100"], tmp_path / "scratch", log)
    paths = dict(out)
    assert paths["lib/ollama/rocm/libggml-hip.so"] == backend  # untouched: it holds exactly gpu_archs
    stripped = paths["lib/ollama/rocm/librocblas.so.4"]
    assert stripped != rocblas and stripped.stat().st_size == rocblas.stat().st_size
    assert {o.processor for o in offload.list_code_objects(stripped)} == {"gfx1100"}
    assert offload.stray_code(stripped, ["gfx1100"]) == []
    assert list(reports) == ["lib/ollama/rocm/librocblas.so.4"]
    assert reports["lib/ollama/rocm/librocblas.so.4"]["keep_archs"] == ["gfx1100"]
    # The package's path, not the scratch copy's: the manifest (and so the archive) is the same each run.
    assert reports["lib/ollama/rocm/librocblas.so.4"]["path"] == "lib/ollama/rocm/librocblas.so.4"
    assert str(tmp_path) not in repr(reports)
    assert offload.stray_code(rocblas, ["gfx1100"])  # the original still holds the other archs
