"""Build stage: Ollama's build (cmake per backend, then go build) in a container of the builder image.

    PatchedTree + BuilderImage + host BuilderImage ─▶ BuildResult (cache/builds/<target>-<hash>/dist)

A builder with a host builder (Builder.host) compiles only the GPU backends; the CPU backends and
bin/ollama are then compiled from the same tree, into the same output, in a container of the host
builder (bullseye: their floor is its glibc and gcc 10's libstdc++), ccache making that CPU compile as
cheap as the cpu target's. The patched tree is mounted read-only at /src with fresh build/ and dist/
folders mounted over it, so the cached tree is never touched; ccache and the Go caches live in named
volumes; the container runs as the invoking user so nothing it writes is owned by root. Every GPU
backend's archs are read back out of its code objects: a backend with an arch missing or one too many
fails the build. rocBLAS
Tensile files of archs the runtime never asks for (2.9 GB of Debian's 3 GB folder) are dropped before
the output is kept: no package ever contains them, and a release job's disk is the tightest budget.
The result moves into the cache only when every step succeeded.
"""

from __future__ import annotations

import os
import shutil
import time
import types
from pathlib import Path

from docker.types import Mount

from pipeline.config.places import Places
from pipeline.config.settings import Settings
from pipeline.formats import PackageLayout
from pipeline.gpu import archs, tensile
from pipeline.infra import builderpkgs, fsutil, progress, toolchain
from pipeline.infra import log as logs
from pipeline.infra.container import Container
from pipeline.infra.log import Log
from pipeline.infra.toolchain import SRC
from pipeline.stages.plan import Context, Plan
from pipeline.stages.results import BuilderImage, BuildResult, PatchedTree, StepTime
from pipeline.upstream import layouts


def key(plan: Plan, settings: Settings) -> object:
    # SOURCE_DATE_EPOCH reaches the build (and the archive's mtimes through it): it is an input too. The
    # archs a runtime asks for decide which Tensile files the output keeps (only ROCm targets have any).
    key = [plan.steps, plan.source_date_epoch]
    return [*key, list(plan.target.runtime.archs)] if plan.target.runtime.archs else key


def where(places: Places, plan: Plan, stage_hash: str) -> Path:
    return places.build(plan.name, stage_hash)


def reuse(ctx: Context, result: BuildResult, *, patches: PatchedTree, builder: BuilderImage,
          host_builder: BuilderImage) -> str:
    return f"build {ctx.hash[:12]} done earlier"


def discard(ctx: Context, result: BuildResult) -> int:
    """Remove the cached build output once the target is packaged (`--lean`); returns the bytes freed.
    The next build of this hash compiles again (from ccache)."""
    size = fsutil.tree_size(ctx.folder)
    shutil.rmtree(ctx.folder, ignore_errors=True)
    return size


def run(ctx: Context, *, patches: PatchedTree, builder: BuilderImage,
        host_builder: BuilderImage) -> BuildResult:
    plan, log, settings = ctx.plan, ctx.log, ctx.settings
    epoch = plan.source_date_epoch if plan.source_date_epoch is not None else patches.source.commit_time
    with fsutil.scratch_dir(ctx.places.scratch, f"{plan.name}-build") as scratch:
        for sub in (layouts.BUILD, layouts.OUTPUT):
            (scratch / sub).mkdir()
        mounts, env = toolchain.mounts(settings)
        mounts[:0] = [
            Mount(SRC, str(patches.path), type="bind", read_only=True),
            *(Mount(f"{SRC}/{sub}", str(scratch / sub), type="bind")
              for sub in (layouts.BUILD, layouts.OUTPUT)),
        ]
        env.update(CMAKE_BUILD_PARALLEL_LEVEL=str(settings.jobs), SOURCE_DATE_EPOCH=str(epoch))
        started = time.monotonic()
        timings: list[StepTime] = []
        with Container(builder.tag, log, mounts=mounts, user=toolchain.user(), env=env,
                       workdir=SRC, keep=settings.keep_containers) as box:
            in_builder = [s for s in plan.steps if not s.host]
            _steps(box, in_builder, timings, log, len(plan.steps))
            code_objects = _check_gpu_code(plan, box, log)
            packages = builderpkgs.in_container(box)
            log.line(f"builder: {len(packages)} packages installed (versions in the manifest)")
        host_packages: dict[str, str] = {}
        if on_host := [s for s in plan.steps if s.host]:
            log.line(f"-- the CPU backends and bin/ollama in the host builder {host_builder.tag}")
            with Container(host_builder.tag, log, mounts=mounts, user=toolchain.user(), env=env,
                           workdir=SRC, keep=settings.keep_containers) as box:
                _steps(box, on_host, timings, log, len(plan.steps), len(in_builder) + 1)
                host_packages = builderpkgs.in_container(box)
            log.line(f"host builder: {len(host_packages)} packages installed (versions in the manifest)")
        dropped = tensile.drop(scratch / layouts.OUTPUT, plan.target.runtime.archs)
        if dropped[0]:
            log.line(f"dropped {dropped[0]} rocBLAS Tensile files ({logs.size(dropped[1])}) of archs the "
                     f"runtime never asks for; kept {', '.join(plan.target.runtime.archs)}")
        os.rename(scratch / layouts.OUTPUT, ctx.staging / layouts.OUTPUT)
    return BuildResult(root=ctx.staging / layouts.OUTPUT, image=builder, version=plan.version,
                       source_date_epoch=epoch, seconds=round(time.monotonic() - started, 1),
                       steps=tuple(timings),
                       code_objects=types.MappingProxyType(code_objects),
                       builder_packages=types.MappingProxyType(packages), tensile_dropped=dropped,
                       host_image=host_builder if on_host else None,
                       host_packages=types.MappingProxyType(host_packages))


def _steps(box: Container, steps: list[layouts.Step], timings: list[StepTime], log: Log,
           total: int, first: int = 1) -> None:
    """Run `steps` in `box`, numbered from `first` of `total` for the progress display."""
    for i, step in enumerate(steps, first):
        step_start = time.monotonic()
        with log.step(step.label, i, total):
            # Ninja's counter as the progress display reads it (display only: not in the hash).
            box.exec(step.argv, env={**dict(step.env), **progress.TOOL_ENV})
        timings.append(StepTime(step=step.label, seconds=round(time.monotonic() - step_start, 2)))


def _check_gpu_code(plan: Plan, box: Container, log) -> dict[str, tuple[str, ...]]:
    """Read the GPU archs out of each built backend: exactly the target's, or the build fails."""
    found = {}
    for backend in plan.backends:
        if not backend.gpu_code:
            continue
        parts = (layouts.OUTPUT, PackageLayout.LIBDIR, backend.runner_dir, backend.library)
        library = "/".join(p for p in parts if p)
        output = box.exec(archs.inspect_command(backend.gpu_code, library), capture=True)
        found[backend.library] = tuple(archs.check(backend.gpu_code, library, plan.target.gpu_archs, output))
        log.line(f"{backend.library}: {', '.join(found[backend.library])} (as requested)")
    return found
