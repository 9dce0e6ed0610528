"""Benchmarks of the pipeline itself. Numbers go to a JSON file; no test asserts them.

* no-op rebuild: wall time of `python -m pipeline build TARGET` when every stage is cached
  (goal: under 10 s, all of it cache checks);
* cold build: a build with an empty pipeline cache and empty compiler caches (the builder image is
  kept), split into time spent in the toolchain's steps and time spent outside them: source export,
  patching, image checks, container start, packaging (goal: under 5 %).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import docker.errors

from pipeline import orchestrate, stages
from pipeline.config import targets
from pipeline.config.paths import PROJECT_ROOT
from pipeline.config.settings import Settings
from pipeline.infra import engine, fsutil, runner, toolchain
from pipeline.infra.log import Log
from pipeline.tools import gpubench

GOALS = {"noop_rebuild_seconds": 10.0, "cold_outside_toolchain_share": 0.05}


def run(selection: list[str], settings: Settings, output: Path, *, cold: bool, gpu: bool = False) -> dict:
    matrix = targets.load(settings.targets_file)
    report: dict = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "goals": GOALS,
        "targets": {},
    }
    if gpu:  # only GPU compile times (pipeline/gpubench.py): the warm-up builds below take hours on GPUs
        report["gpu"] = {}
        for plan in gpubench.plans(matrix, selection, settings):
            report["gpu"][plan.name] = gpubench.measure(plan, settings)
            fsutil.write_text(output, json.dumps(report, indent=2) + "\n")  # keep partial results
        return report
    for target in matrix.select(selection):
        plan = stages.plan_for(matrix, target, settings)
        entry = report["targets"][target.name] = {}
        outcome = orchestrate.build_target(plan, settings)  # warm every cache first
        entry["package"] = _package(plan, outcome, settings)
        entry["noop_rebuild"] = _noop(target.name, settings)
        if cold:
            entry["cold"] = _cold(matrix, target, settings)
        fsutil.write_text(output, json.dumps(report, indent=2) + "\n")  # keep partial results
    fsutil.write_text(output, json.dumps(report, indent=2) + "\n")
    return report


# Upstream's v0.12.5 ROCm archive (all archs) was about 1.2 GB as .tgz.
UPSTREAM_ROCM_ARCHIVE_BYTES = 1.2e9


def _package(plan, outcome, settings: Settings) -> dict:
    """Packaged size, what Tensile pruning saved, and packing + verifying time of the warm-up build."""
    manifest = outcome.results["package"].manifest
    times = {name: round(sec, 2) for name, state, sec in outcome.stages if state == "done"}
    size = manifest.archive.size
    out = {"archive": manifest.archive.name, "bytes": size,
           "tensile_pruned_bytes": manifest.tensile.pruned_bytes,
           "bundled_libraries": len((manifest.libraries or {}).get("bundled", [])),
           # Measured only when the warm-up run packed and verified (not reused from an earlier run).
           "package_and_verify_seconds": (round(times["package"] + times["verify"], 2)
                                          if "package" in times and "verify" in times else None)}
    if any(b.gpu_code == "hip" for b in plan.backends):
        out["share_of_upstream_rocm_archive"] = round(size / UPSTREAM_ROCM_ARCHIVE_BYTES, 3)
    return out


def _noop(name: str, settings: Settings) -> dict:
    cmd = [sys.executable, "-m", "pipeline", "build", name, "--targets-file", str(settings.targets_file),
           "--dist", str(settings.dist)]
    env = {"PIPELINE_CACHE": str(settings.cache)}
    if settings.source:
        env["OLLAMA_SOURCE"] = settings.source
    start = time.monotonic()
    with Log(name, settings.dist / "bench-noop.log") as log:
        proc = runner.run(log, cmd, cwd=PROJECT_ROOT, env=env, capture=True, quiet=True, check=False)
    seconds = time.monotonic() - start
    cached = proc.stderr.decode(errors="replace").count("cached (")
    return {"seconds": round(seconds, 2), "exit_code": proc.returncode, "stages_cached": cached,
            "meets_goal": proc.returncode == 0 and seconds < GOALS["noop_rebuild_seconds"]}


def _cold(matrix: targets.Matrix, target: targets.Target, settings: Settings) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="ollama-pipeline-bench-"))
    volumes = f"ollama-pipeline-bench-{os.getpid()}"
    cold = dataclasses.replace(settings, cache=tmp / "cache", dist=tmp / "dist", volume_prefix=volumes)
    try:
        plan = stages.plan_for(matrix, target, cold)
        outcome = orchestrate.build_target(plan, cold)
        built = outcome.results["build"]
        in_toolchain = sum(s.seconds for s in built.steps)
        outside = outcome.seconds - in_toolchain
        return {
            "seconds": round(outcome.seconds, 1),
            "toolchain_seconds": round(in_toolchain, 1),
            "outside_toolchain_seconds": round(outside, 1),
            "outside_toolchain_share": round(outside / outcome.seconds, 4),
            "stages": {name: round(sec, 2) for name, _, sec in outcome.stages},
            "steps": [{"step": s.step, "seconds": s.seconds} for s in built.steps],
            "meets_goal": outside / outcome.seconds < GOALS["cold_outside_toolchain_share"],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for name in toolchain.VOLUMES:
            try:
                engine.client().volumes.get(toolchain.volume_name(cold, name)).remove(force=True)
            except docker.errors.DockerException:
                pass  # best effort: the benchmark's own throw-away volumes
