"""Verify a package as a user's machine would see it: unpacked in a clean container of the runtime
floor (the builder's library policy names it; no toolchain in it), every ELF must resolve with the
library path Ollama gives its runners, the served GPU archs must have code objects and rocBLAS
Tensile files, and the package's install script must install a bin/ollama that starts and reports
its version."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

from docker.types import Mount

from . import baseimage, closure, package
from .container import Container
from .errors import PackageError
from .log import Log
from .settings import Settings

PKG = "/opt/ollama"
# For every shared object of lib/ollama: ldd with lib/ollama/<runner>:lib/ollama, as the runners get.
_LDD = r"""
cd "$0"
find lib/ollama -type f -name '*.so*' ! -path '*/library/*' | sort | while read -r f; do
  dir=$(dirname "$f"); path="$PWD/lib/ollama"
  [ "$dir" != lib/ollama ] && path="$PWD/$dir:$path"
  LD_LIBRARY_PATH="$path" ldd "$f" 2>&1 | sed -n "s|^\s*\(\S*\) => not found|$f needs \1|p"
done
"""


class VerifyError(PackageError):
    pass


def verify(archive: Path, settings: Settings, log: Log) -> dict:
    """Raise VerifyError listing every problem; return what was checked."""
    with tempfile.TemporaryDirectory(prefix="ollama-pipeline-verify-") as tmp:
        root = Path(tmp) / "pkg"
        with package.open_archive(archive, Path(tmp)) as tar:
            tar.extractall(root, filter="data")
        manifest = json.loads((root / package.MANIFEST_IN_ARCHIVE).read_text())
        problems = coverage_problems(manifest)
        policy_name = (manifest.get("libraries") or {}).get("policy") or ""
        policy = closure.load_policy(policy_name) if policy_name else None
        suite = policy.suite if policy else manifest["builder"]["suite"]
        # Driver libraries (libcuda.so.1) come with the GPU driver, which a clean system lacks.
        driver = set(policy.never_bundle) if policy else set()
        image = f"{settings.image_prefix}/debian:{suite}"
        baseimage.ensure(image, suite, settings, log)
        with Container(image, log, mounts=[Mount(PKG, str(root), type="bind", read_only=True)],
                       keep=settings.keep_containers) as box:
            unresolved = [line.strip() for line in box.exec(["sh", "-c", _LDD, PKG], capture=True).splitlines()
                          if line.strip()]
            problems += [f"{line}: not found on a clean {suite}" for line in unresolved
                         if line.rsplit(" ", 1)[-1] not in driver]
            if wanted := sorted({line.rsplit(" ", 1)[-1] for line in unresolved} & driver):
                log.line(f"from the GPU driver at run time: {', '.join(wanted)}")
            # The package's own install script, into a prefix of the clean system; then run from there.
            box.exec(["sh", f"{PKG}/share/ollama/install.sh", "/opt/prefix"])
            version = box.exec(["/opt/prefix/bin/ollama", "--version"], capture=True)
        if manifest["version"] not in version:
            problems.append(f"bin/ollama --version does not name {manifest['version']}: {version.strip()!r}")
        shutil.rmtree(root, ignore_errors=True)
    if problems:
        raise VerifyError(f"{archive.name} failed verification:\n  " + "\n  ".join(problems))
    log.line(f"verified on a clean {suite}: every library resolves, {version.strip().splitlines()[-1]}")
    return {"suite": suite, "version": version.strip()}


def coverage_problems(manifest: dict) -> list[str]:
    """Each arch the runtime asks for needs GPU code in the backend and, where rocBLAS ships,
    Tensile files."""
    serves = manifest.get("tensile", {}).get("serves", [])
    code = {arch for archs in manifest.get("gpu_code_objects", {}).values() for arch in archs}
    files = [f["path"] for f in manifest.get("files", [])]
    tensile = [p for p in files if "/rocblas/" in p and "/library/" in p]
    problems = []
    for arch in serves:
        if code and arch not in code:
            problems.append(f"no GPU code for {arch} in the backend (it has {', '.join(sorted(code))})")
        if tensile and not any(re.search(rf"[-_]{arch}(?:-xnack[+-])?\.", p) for p in tensile):
            problems.append(f"no rocBLAS Tensile files for {arch}")
    return problems
