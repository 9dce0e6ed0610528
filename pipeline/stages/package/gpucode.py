"""GPU code of archs the runtime never asks for, removed from the bundled ROCm libraries.

Debian's librocblas.so.4.4 carries code objects for ten archs (about 1 GB); a package serves the archs
of runtime.archs. Each bundled library with clang offload bundles is rewritten by
pipeline.gpu.offload: its bundles keep the host entry, the served archs' code objects (byte for
byte), their generic targets and SPIR-V, and everything else becomes zeros, which the zstd archive
stores almost for free. Offsets do not move, so the HIP runtime finds every bundle where its wrapper
points. Every library of the package is considered (upstream's CMake installs librocblas beside the
backend itself; the closure bundles others) except the build's own GPU backends, which hold exactly
the target's gpu_archs already. `package.strip_gpu_code = false` in targets.toml turns it off.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from pipeline.formats import PackageLayout
from pipeline.gpu import offload
from pipeline.infra.log import Log


def strip(entries: list[tuple[str, Path]], backends: Iterable[str], keep: Sequence[str], scratch: Path,
          log: Log) -> tuple[list[tuple[str, Path]], dict[str, dict]]:
    """Entries with every library under lib/ollama that holds offload bundles, except the GPU backends
    named in `backends` (file names such as libggml-hip.so), replaced by a stripped copy in `scratch`;
    returns (entries, {package path: what was stripped})."""
    own = set(backends)
    out, reports = [], {}
    for rel, path in entries:
        name = rel.rsplit("/", 1)[-1]
        if (rel.startswith(f"{PackageLayout.LIBDIR}/") and ".so" in name and name not in own
                and "/library/" not in rel and path.is_file() and not path.is_symlink()
                and offload.has_offload_code(path)):
            dest = scratch / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            report = offload.strip_file(path, dest, keep)
            if report.changed:
                # The manifest names the package's file, never the scratch copy (a path of this
                # machine that changes each run and would make the archive differ).
                reports[rel] = {**report.to_dict(), "path": rel}
                log.line(f"{rel}: kept the code objects of {', '.join(keep)} "
                         f"({report.code_bytes_after / 1e6:.0f} of {report.code_bytes_before / 1e6:.0f} "
                         f"MB of GPU code; {len(report.entries('dropped'))} other entries zeroed)")
                out.append((rel, dest))
                continue
        out.append((rel, path))
    return out, reports
