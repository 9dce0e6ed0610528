"""GPU compile-time benchmark: what building only a target's archs saves against upstream's full list.

For each target with a GPU backend, one container of the target's builder image configures the
backend twice over the exported, patched tree (the plan's own configure argv, with Ninja and its own
binary folder): once with the target's archs, once with the list upstream's CMakePresets.json gives
the same preset. In each it compiles a fixed subset of ggml's GPU sources one object at a time, cold
(an empty ccache) and warm (objects deleted, ccache filled), and reports seconds and full/target ratios.
The ccache of each configuration lives in the scratch folder, so the user's cache volume is untouched.

HIP archs of the upstream list that the builder's clang does not know (gfx940 and gfx941 are gone from
LLVM 21) fail the configure or the compile: then every arch of the list is probed with a one-kernel
compile, only those that fail are dropped, and the report records them.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from docker.types import Mount

from pipeline import orchestrate, stages
from pipeline.config import names, targets
from pipeline.config.settings import Settings
from pipeline.config.targets import Backend
from pipeline.errors import CommandError, ConfigError, PipelineError, SelectionError, UsageError
from pipeline.gpu import archs as gpu_archs
from pipeline.infra import engine, progress, toolchain
from pipeline.infra.container import Container
from pipeline.infra.log import Log, duration
from pipeline.infra.toolchain import SRC
from pipeline.stages.plan import Plan

# Small-to-medium sources that ggml-cuda and ggml-hip both compile, timed one object at a time.
SOURCES = ("arange.cu", "concat.cu", "softmax.cu")
CONFIGS = ("target", "full")
PROBE_SOURCE = "#include <hip/hip_runtime.h>\n__global__ void probe(float *p) { p[threadIdx.x] = 1.0f; }\n"


def plans(matrix: targets.Matrix, selection: Sequence[str], settings: Settings) -> list[Plan]:
    """Plans of the selected targets that compile GPU code; a selection without one is an error."""
    chosen = matrix.select(selection)
    found = [stages.plan_for(matrix, t, settings) for t in chosen
             if any(matrix.backends[b].gpu_code for b in t.backends)]
    if not found:
        gpu = [n for n, t in matrix.targets.items() if any(matrix.backends[b].gpu_code for b in t.backends)]
        raise SelectionError(f"no GPU target selected ({', '.join(t.name for t in chosen)}); "
                             f"targets with a GPU backend: {', '.join(gpu) or 'none'}")
    return found


def gpu_backend(plan: Plan) -> Backend:
    backend = next((b for b in plan.backends if b.gpu_code), None)
    if backend is None:
        raise ConfigError(f"target {plan.name} has no GPU backend")
    return backend


def library_target(backend: Backend) -> str:
    """The CMake target of the backend's library: libggml-hip.so -> ggml-hip."""
    return backend.library.removeprefix("lib").split(".so")[0]


def preset_archs(presets: dict, preset: str, variable: str) -> list[str]:
    """The arch list a configure preset sets in `variable`, following `inherits` like CMake does."""
    table = {p.get("name"): p for p in presets.get("configurePresets", [])}

    def lookup(name: str, seen: tuple[str, ...]) -> str | None:
        if name in seen:
            raise ConfigError(f"CMakePresets.json: preset {name!r} inherits itself")
        if name not in table:
            raise ConfigError(f"CMakePresets.json: no configure preset {name!r}; "
                              f"presets: {', '.join(map(str, table))}")
        value = table[name].get("cacheVariables", {}).get(variable)
        if isinstance(value, dict):  # {"type": "STRING", "value": "..."}
            value = value.get("value")
        if value is not None:
            return str(value)
        parents = table[name].get("inherits", [])
        for parent in [parents] if isinstance(parents, str) else parents:
            found = lookup(parent, (*seen, name))
            if found is not None:
                return found
        return None

    value = lookup(preset, ())
    if not value:
        raise ConfigError(f"CMakePresets.json: preset {preset!r} does not set {variable}")
    return [a for a in value.split(";") if a]


def configure_step(plan: Plan, backend: Backend) -> tuple[str, ...]:
    """The plan's configure argv for the backend (`cmake --preset NAME -D...`)."""
    for step in plan.steps:
        if step.argv[:3] == ("cmake", "--preset", backend.preset):
            return step.argv
    raise PipelineError(f"the plan of {plan.name} has no configure step for preset {backend.preset!r}")


def configure_argv(argv: Sequence[str], variable: str, archs: Sequence[str], binary_dir: str) -> list[str]:
    """The plan's configure with `variable` set to `archs`, Ninja, and its own binary folder.

    `cmake --preset X -B DIR` builds in DIR instead of the preset's binaryDir; Ninja lets single
    object files be built.
    """
    define = f"-D{variable}={';'.join(archs)}"
    out = [define if a.startswith((f"-D{variable}=", f"-D{variable}:")) else a for a in argv]
    if define not in out:
        out.append(define)
    return [*out, "-B", binary_dir, "-G", "Ninja"]


def object_targets(listing: str, library: str, sources: Sequence[str]) -> list[str]:
    """From `ninja -t targets all`, the object file of each source in the library's target."""
    paths = [line.rsplit(": ", 1)[0].strip() for line in listing.splitlines() if ": " in line]
    mine = [p for p in paths if f"CMakeFiles/{library}.dir/" in p]
    found = []
    for source in sources:
        hits = [p for p in mine if p.endswith(f"/{source}.o")]
        if len(hits) != 1:
            raise PipelineError(f"expected one object of {source} in target {library}, ninja lists "
                                f"{len(hits)}: {', '.join(hits) or 'none'}")
        found.append(hits[0])
    return found


def order_target(listing: str, library: str) -> str | None:
    """The phony target CMake's Ninja generator puts before a library's objects, if any."""
    name = f"cmake_object_order_depends_target_{library}"
    return name if any(line.split(": ", 1)[0] == name for line in listing.splitlines()) else None


def ratio(full: float, target: float) -> float | None:
    return round(full / target, 2) if target > 0 else None


def ratios(result: dict) -> dict:
    """full/target for each phase, in total and per source."""
    full, target = result["full"], result["target"]
    return {phase: {"total": ratio(full[phase]["seconds"], target[phase]["seconds"]),
                    **{src: ratio(full[phase]["objects"][src], target[phase]["objects"][src])
                       for src in target[phase]["objects"]}}
            for phase in ("cold", "warm")}


def probe_failures(output: str) -> list[str]:
    """Archs the probe loop reported as `bad ARCH`."""
    return [line.split(None, 1)[1] for line in output.splitlines() if line.startswith("bad ")]


def ccache_stats(output: str) -> dict[str, int]:
    """Hits and misses from `ccache --print-stats` (tab-separated key and value)."""
    stats = dict(line.split("\t", 1) for line in output.splitlines() if "\t" in line)
    get = lambda key: int(stats.get(key, "0").strip() or 0)  # noqa: E731
    return {"hits": get("direct_cache_hit") + get("preprocessed_cache_hit"), "misses": get("cache_miss")}


def measure(plan: Plan, settings: Settings) -> dict:
    """Cold and warm compile seconds of SOURCES for the target's archs and upstream's full list."""
    backend = gpu_backend(plan)
    with Log(plan.name, settings.places.target_log(plan.out, "gpubench")) as log:
        ready = orchestrate.results_of(plan, settings, log, ["patches", "builder"])
        tree, image = ready["patches"].path, ready["builder"].tag
        presets = json.loads((tree / "CMakePresets.json").read_text())
        full_archs = preset_archs(presets, backend.preset, backend.arch_variable)
        entry: dict = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "backend": backend.preset,
            "image": image,
            "image_size_bytes": engine.client().images.get(image).attrs["Size"],
            "sources": list(SOURCES),
        }
        scratch = settings.places.scratch / f"gpubench-{plan.name}-{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        mounts = [Mount(SRC, str(tree), type="bind", read_only=True),
                  Mount(f"{SRC}/build", str(scratch), type="bind")]
        try:
            with log.stage("gpubench"), Container(
                    image, log, mounts=mounts, user=toolchain.user(), workdir=SRC,
                    keep=settings.keep_containers) as box:
                argv = configure_step(plan, backend)
                library = library_target(backend)
                entry["target"] = _config(box, log, argv, backend, list(plan.target.gpu_archs), "target",
                                          library)
                try:
                    entry["full"] = _config(box, log, argv, backend, full_archs, "full", library)
                    entry["full"]["dropped_archs"] = []
                except CommandError:
                    if backend.gpu_code != "hip":
                        raise
                    bad = _probe_hip(box, log, scratch, full_archs)
                    if not bad or set(bad) == set(full_archs):
                        raise
                    log.line(f"dropping archs the compiler refuses: {', '.join(bad)}")
                    kept = [a for a in full_archs if a not in bad]
                    entry["full"] = _config(box, log, argv, backend, kept, "full-kept", library)
                    entry["full"]["dropped_archs"] = bad
                entry["full"]["preset_archs"] = full_archs
            entry["ratio_full_over_target"] = ratios(entry)
            log.line(f"full/target: {json.dumps(entry['ratio_full_over_target'])}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return entry


def _config(box: Container, log: Log, argv: Sequence[str], backend: Backend, archs: list[str], name: str,
            library: str) -> dict:
    """Configure into build/NAME, then compile the objects cold and warm with a private ccache."""
    binary_dir = f"build/{name}"
    env = {"CCACHE_DIR": f"{SRC}/build/ccache-{name}"}
    log.line(f"-- configure {name}: {backend.arch_variable}={';'.join(archs)}")
    start = time.monotonic()
    box.exec(configure_argv(argv, backend.arch_variable, archs, binary_dir), env=env)
    configure = time.monotonic() - start
    listing = box.exec(["ninja", "-C", binary_dir, "-t", "targets", "all"], capture=True)
    objects = object_targets(listing, library, SOURCES)
    order = order_target(listing, library)
    if order:  # generated headers and the like, not part of the timing
        box.exec(["ninja", "-C", binary_dir, order], env=env)
    result = {"archs": archs, "configure_seconds": round(configure, 1)}
    result["cold"] = _compile(box, log, binary_dir, objects, env, f"{name} cold")
    box.exec(["rm", "-f", *objects], workdir=f"{SRC}/{binary_dir}")
    result["warm"] = _compile(box, log, binary_dir, objects, env, f"{name} warm")
    result["ccache"] = ccache_stats(box.exec(["ccache", "--print-stats"], env=env, capture=True))
    return result


def _compile(box: Container, log: Log, binary_dir: str, objects: list[str], env: dict, label: str) -> dict:
    seconds = {}
    for source, obj in zip(SOURCES, objects):
        start = time.monotonic()
        box.exec(["ninja", "-C", binary_dir, obj], env=env)
        seconds[source] = round(time.monotonic() - start, 2)
    total = round(sum(seconds.values()), 2)
    log.line(f"-- {label}: {total}s ({', '.join(f'{s} {t}s' for s, t in seconds.items())})")
    return {"seconds": total, "objects": seconds}


def _probe_hip(box: Container, log: Log, scratch: Path, archs: list[str]) -> list[str]:
    """Compile one kernel per arch with the configured HIP compiler; the archs that fail."""
    cache = (scratch / "target" / "CMakeCache.txt").read_text()
    compiler = next((line.split("=", 1)[1] for line in cache.splitlines()
                     if line.startswith("CMAKE_HIP_COMPILER:")), "clang++")
    (scratch / "probe.hip").write_text(PROBE_SOURCE)
    script = ('c=$1; shift; for a; do if "$c" -x hip --offload-arch="$a" -c build/probe.hip -o /dev/null '
              '2>/dev/null; then echo "ok $a"; else echo "bad $a"; fi; done')
    log.line(f"-- probing {len(archs)} HIP archs with {compiler}")
    return probe_failures(box.exec(["sh", "-c", script, "probe", compiler, *archs], capture=True))


# --- The whole GPU backend, cold, once per arch list ---------------------------------------------------
#
# `bench TARGET --backend-archs A,B --backend-archs A` compiles the target's real GPU backend library
# (ggml-hip or ggml-cuda and what it needs: the build preset's own target) from nothing once per arch
# list, in one container of the target's builder image, with ccache off: the number is the real cold
# compile, not three sources. Each run configures with the plan's own configure (its environment
# included) into a fresh binary folder, compiles under `nice` and reads the archs back out of the
# library, which must hold exactly the list.

NICE = 10


def without_launchers(argv: Sequence[str], backend: Backend) -> list[str]:
    """The configure argv without the compiler launchers (ccache): a cold compile compiles."""
    prefixes = tuple(f"-D{v}=" for v in backend.launchers)
    return [a for a in argv if not a.startswith(prefixes)]


def configure_env(plan: Plan, backend: Backend) -> dict[str, str]:
    for step in plan.steps:
        if step.argv[:3] == ("cmake", "--preset", backend.preset):
            return dict(step.env)
    raise PipelineError(f"the plan of {plan.name} has no configure step for preset {backend.preset!r}")


def backend_runs(plan: Plan, settings: Settings, arch_lists: Sequence[Sequence[str]]) -> dict:
    """Cold compile seconds of the target's whole GPU backend for each arch list, in one run."""
    backend = gpu_backend(plan)
    if not arch_lists:
        raise ConfigError("give at least one arch list (--backend-archs gfx1100,gfx1103)")
    for archs in arch_lists:
        for arch in archs:
            if problem := names.arch_problem(backend.gpu_code, arch):
                raise UsageError(f"--backend-archs {','.join(archs)}: {arch!r}: {problem}")
    with Log(plan.name, settings.places.target_log(plan.out, "backendbench")) as log:
        ready = orchestrate.results_of(plan, settings, log, ["patches", "builder"])
        tree, image = ready["patches"].path, ready["builder"].tag
        entry: dict = {
            "date": _now(),
            "cpus": os.cpu_count(),
            "jobs": settings.jobs,
            "nice": NICE,
            "ccache": "off",
            "upstream": plan.tag,
            "backend": backend.preset,
            "library": backend.library,
            "image": image,
            "runs": [],
        }
        scratch = settings.places.scratch / f"backendbench-{plan.name}-{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        mounts = [Mount(SRC, str(tree), type="bind", read_only=True),
                  Mount(f"{SRC}/build", str(scratch), type="bind")]
        argv = without_launchers(configure_step(plan, backend), backend)
        env = {**configure_env(plan, backend), "CCACHE_DISABLE": "1"}
        try:
            with log.stage("backendbench"), Container(
                    image, log, mounts=mounts, user=toolchain.user(), workdir=SRC,
                    keep=settings.keep_containers) as box:
                for i, archs in enumerate(arch_lists):
                    entry["runs"].append(_backend_run(box, log, argv, env, backend, list(archs), f"run{i}",
                                                      settings.jobs, len(arch_lists), i))
                    shutil.rmtree(scratch / f"run{i}", ignore_errors=True)
            first, last = entry["runs"][0], entry["runs"][-1]
            if len(entry["runs"]) > 1 and last["compile_seconds"]:
                entry["first_over_last"] = round(first["compile_seconds"] / last["compile_seconds"], 2)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return entry


def _backend_run(box: Container, log: Log, argv: Sequence[str], env: dict, backend: Backend,
                 archs: list[str], name: str, jobs: int, count: int, index: int) -> dict:
    binary_dir = f"build/{name}"
    load = [round(x, 2) for x in os.getloadavg()]
    start = time.monotonic()
    with log.step(f"{backend.library} for {','.join(archs)}, cold", index + 1, count):
        box.exec(configure_argv(argv, backend.arch_variable, archs, binary_dir), env=env)
        configured = time.monotonic()
        box.exec(["nice", "-n", str(NICE), "ninja", "-C", binary_dir, "-j", str(jobs),
                  library_target(backend)], env={**env, **progress.TOOL_ENV})
        compiled = time.monotonic()
    library = box.exec(["find", binary_dir, "-name", backend.library, "-type", "f"], capture=True).split()
    if len(library) != 1:
        raise PipelineError(f"expected one {backend.library} under {binary_dir}, found {len(library)}")
    code = archs_of(box, backend, library[0], archs)
    size = int(box.exec(["stat", "-c", "%s", library[0]], capture=True).strip())
    result = {"archs": archs, "configure_seconds": round(configured - start, 1),
              "compile_seconds": round(compiled - configured, 1), "library_bytes": size,
              "code_objects": code, "load_average_at_start": load,
              "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}
    log.line(f"{backend.library} for {','.join(archs)}: compiled in {duration(result['compile_seconds'])}, "
             f"{size} bytes, code for {', '.join(code)}")
    return result


def archs_of(box: Container, backend: Backend, library: str, archs: Sequence[str]) -> list[str]:
    output = box.exec(gpu_archs.inspect_command(backend.gpu_code, library), capture=True)
    return gpu_archs.check(backend.gpu_code, library, archs, output)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
