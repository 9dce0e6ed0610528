"""Run Ollama's build (cmake per backend, then go build) in a container of the builder image.

The patched tree is mounted read-only at /src with fresh build/ and dist/ folders mounted over it, so
the cached tree is never touched; ccache and the Go caches live in named volumes; the container runs
as the invoking user so nothing it writes is owned by root. The result moves into the cache only
when every step succeeded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from docker.types import Mount

from . import archs, builder, fsutil
from . import plan as planning
from .container import Container
from .log import Log, StageResult
from .plan import SRC, Plan
from .settings import Settings
from .targets import Matrix

HOST_CA = "/etc/ssl/host-ca-bundle.crt"
VOLUMES = {"ccache": "/cache/ccache", "go-build": "/cache/go-build", "go-mod": "/cache/go-mod"}


def volume_name(settings: Settings, cache: str) -> str:
    # One set per user: ccache and the Go module cache write files only their owner may change.
    return f"{settings.volume_prefix}-{cache}-u{os.getuid()}"


def toolchain_mounts(settings: Settings) -> tuple[list[Mount], dict[str, str]]:
    """Mounts and environment every container running the toolchain gets: the per-user cache volumes,
    the host's CA bundle (downloads through a TLS-inspecting proxy) and the Go proxy setting."""
    mounts = [Mount(path, volume_name(settings, name), type="volume") for name, path in VOLUMES.items()]
    env = {}
    if settings.ca_bundle:
        mounts.append(Mount(HOST_CA, str(settings.ca_bundle.resolve()), type="bind", read_only=True))
        env["SSL_CERT_FILE"] = HOST_CA
    if settings.go_proxy:
        env["GOPROXY"] = settings.go_proxy
    return mounts, env


def user() -> str:
    return f"{os.getuid()}:{os.getgid()}"


@contextlib.contextmanager
def tool_container(matrix: Matrix, settings: Settings, log: Log, tree: Path,
                   go_target: str = "cpu") -> Iterator[Container]:
    """A container of `go_target`'s builder with `tree` at /src (writable) and the toolchain caches:
    where maintainer tools run Go on a source tree (patches test, memtest, ...)."""
    plan = planning.make(matrix, matrix.targets[go_target], settings)
    builder.ensure(plan, settings, log, StageResult())
    mounts, env = toolchain_mounts(settings)
    mounts.append(Mount(SRC, str(tree), type="bind"))
    with Container(plan.image_tag, log, mounts=mounts, user=user(), env=env, workdir=SRC,
                   keep=settings.keep_containers) as box:
        yield box


def result_dir(plan: Plan, settings: Settings) -> Path:
    return settings.cache / "builds" / f"{plan.name}-{plan.hashes['build'][:24]}"


def run(plan: Plan, tree: Path, image_id: str, source_date_epoch: int, settings: Settings, log: Log,
        result: StageResult) -> tuple[Path, dict]:
    out = result_dir(plan, settings)
    info_file = out / "build.json"
    if info_file.exists():
        result.cached(f"build {plan.hashes['build'][:12]} done earlier")
        return out, json.loads(info_file.read_text())

    scratch = settings.cache / "scratch" / plan.name
    shutil.rmtree(scratch, ignore_errors=True)
    for sub in ("build", "dist"):
        (scratch / sub).mkdir(parents=True)
    mounts, env = toolchain_mounts(settings)
    mounts[:0] = [
        Mount(SRC, str(tree), type="bind", read_only=True),
        Mount(f"{SRC}/build", str(scratch / "build"), type="bind"),
        Mount(f"{SRC}/dist", str(scratch / "dist"), type="bind"),
    ]
    env.update(CMAKE_BUILD_PARALLEL_LEVEL=str(settings.jobs), SOURCE_DATE_EPOCH=str(source_date_epoch))
    started = time.monotonic()
    timings = []
    with Container(plan.image_tag, log, mounts=mounts, user=user(), env=env,
                   workdir=SRC, keep=settings.keep_containers) as box:
        for step in plan.steps:
            log.line(f"-- {step.label}")
            step_start = time.monotonic()
            box.exec(step.argv, env=dict(step.env))
            timings.append({"step": step.label, "seconds": round(time.monotonic() - step_start, 2)})
        code_objects = _check_gpu_code(plan, box, log)
    info = {
        "target": plan.name,
        "version": plan.version,
        "hashes": plan.hashes,
        "image": plan.image_tag,
        "image_id": image_id,
        "source_date_epoch": source_date_epoch,
        "seconds": round(time.monotonic() - started, 1),
        "steps": timings,
        "code_objects": code_objects,
    }
    with fsutil.staging_dir(out) as staging:
        os.rename(scratch / "dist", staging / "dist")
        (staging / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(scratch, ignore_errors=True)
    return out, info


def _check_gpu_code(plan: Plan, box: Container, log: Log) -> dict[str, list[str]]:
    """Read the GPU archs out of each built backend: exactly the target's, or the build fails."""
    found = {}
    for backend in plan.backends:
        if not backend.gpu_code:
            continue
        library = "/".join(p for p in ("dist/lib/ollama", backend.runner_dir, backend.library) if p)
        output = box.exec(archs.inspect_command(backend.gpu_code, library), capture=True)
        found[backend.library] = archs.check(backend.gpu_code, library, plan.target.gpu_archs, output)
        log.line(f"{backend.library}: {', '.join(found[backend.library])} (as requested)")
    return found
