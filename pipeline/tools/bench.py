"""Benchmarks of the pipeline itself. Numbers go to a JSON file; no test asserts them.

* no-op rebuild: wall time of `python -m pipeline build TARGET` when every stage is cached
  (goal: under 10 s, all of it cache checks);
* cold build: a build with an empty pipeline cache and empty compiler caches (the builder image is
  kept), split into time spent in the toolchain's steps and time spent outside them: source export,
  patching, image checks, container start, packaging (goal: under 5 %);
* disk (--disk): peak disk of a target's release job, a cold `build TARGET --image` on a private Docker
  engine with an empty data root, per component (Docker data root, pipeline cache, dist), sampled every
  few seconds (goal: under 12 GB, so that the job fits a hosted runner with room to spare).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker.errors

import docker
from pipeline import orchestrate, stages
from pipeline.config import targets
from pipeline.config.paths import PROJECT_ROOT
from pipeline.config.settings import Settings
from pipeline.errors import DockerError, UsageError, one_line
from pipeline.infra import builderpkgs, engine, fsutil, runner, toolchain
from pipeline.infra.log import Log
from pipeline.tools import gpubench

GOALS = {"noop_rebuild_seconds": 10.0, "cold_outside_toolchain_share": 0.05}


def run(selection: list[str], settings: Settings, output: Path, *, cold: bool, gpu: bool = False,
        backend_archs: list[list[str]] | None = None) -> dict:
    matrix = targets.load(settings.targets_file)
    report: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "goals": GOALS,
        "targets": {},
    }
    if backend_archs:  # only the whole GPU backend, cold, once per arch list (pipeline/tools/gpubench.py)
        report["backend"] = {}
        for plan in gpubench.plans(matrix, selection, settings):
            report["backend"][plan.name] = gpubench.backend_runs(plan, settings, backend_archs)
            fsutil.write_text(output, json.dumps(report, indent=2) + "\n")  # keep partial results
        return report
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
           # Installed: what the files add up to; GPU code of other archs is zeroed in bundled ROCm
           # libraries, and install.sh turns those zeros into holes where the file system can.
           "installed_bytes": sum(f.size or 0 for f in manifest.files),
           "gpu_code_stripped": {path: {"code_bytes_before": s["code_bytes_before"],
                                        "code_bytes_after": s["code_bytes_after"]}
                                 for path, s in manifest.stripped.items()},
           "installed_bytes_without_zeroed_code": sum(f.size or 0 for f in manifest.files)
                                                  - sum(s["zeroed_bytes"]
                                                        for s in manifest.stripped.values()),
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
    with Log(name, settings.places.log("bench-noop")) as log:
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
            # Best effort: the benchmark's own throw-away volumes.
            with contextlib.suppress(docker.errors.DockerException):
                engine.client().volumes.get(toolchain.volume_name(cold, name)).remove(force=True)


# --- Disk: peak disk of one release build job, measured on an engine of its own ----------------------
#
# A release job builds one builder's targets on a fresh runner: the builder image (and the Debian base
# it starts from), the source tree and the pipeline cache, the compiler caches (Docker volumes), the
# archive and the saved runtime image. `bench --disk TARGET...` starts a private dockerd whose data root
# is an empty folder, runs `python -m pipeline build TARGET... --image` against it with an empty cache,
# dist and TMPDIR, and samples `du` of those folders every few seconds. The private engine has no bridge and
# touches no iptables rule, so the machine's own engine is undisturbed; builds and containers use the
# host network (PIPELINE_DOCKER_NETWORK=host).

DISK_GOAL_BYTES = 12e9  # a standard hosted runner's free disk (about 14 GB) with room to spare
# Folders of the scratch root: the engine's data root, the pipeline cache, dist, and TMPDIR of the build
# (the runtime image's build context is unpacked there).
DISK_COMPONENTS = ("docker", "cache", "dist", "tmp")
# What a release job passes to `build` after its targets (.github/workflows/release.yml; a test keeps
# the two equal): the job measured is the job CI runs.
RELEASE_JOB_FLAGS = ("--image", "--lean")
SAMPLE_SECONDS = 5.0


def disk(selection: list[str], settings: Settings, output: Path, *, interval: float = SAMPLE_SECONDS,
         report: dict | None = None, ref: str | None = None) -> dict:
    """Peak and final disk of a cold `build TARGET... --image --lean` per release job (the selected
    targets of one builder, as the release workflow groups them), each on a fresh engine; numbers go
    under "disk" of the report, keyed by the job's targets joined with '+' (and @REF with ref: the jobs
    build that pinned tag; partial results are written as they come)."""
    if os.geteuid() != 0:
        raise UsageError("bench --disk starts a private dockerd and so must run as root (sudo)")
    if not shutil.which("dockerd"):
        raise UsageError("bench --disk needs dockerd on PATH (`sudo ./bootstrap` installs it)")
    matrix = targets.load(settings.targets_file)
    report = report if report is not None else _earlier(output)
    report["disk_goal_bytes"] = int(DISK_GOAL_BYTES)
    results = report.setdefault("disk", {})
    for builder, names in targets.build_jobs(matrix.select_at(selection, ref)).items():
        name = "+".join(names) + (f"@{ref}" if ref else "")
        results[name] = {"builder": builder, "targets": names, "ref": ref,
                         **_disk_job(name, names, settings, output.parent, interval, ref)}
        fsutil.write_text(output, json.dumps(report, indent=2) + "\n")
    return report


def builder_twice(selection: list[str], settings: Settings, output: Path) -> dict:
    """Each selected target's builder built twice: on the machine's engine (or found there) and again
    on a private engine with an empty data root; the two package lists (name -> version, what the
    manifest records) must be the same. With PIPELINE_DEBIAN_SNAPSHOT both builds see one apt universe;
    without, only suites that no longer change (bullseye) can be expected to match."""
    if os.geteuid() != 0:
        raise UsageError("bench --builder-twice starts a private dockerd and so must run as root (sudo)")
    matrix = targets.load(settings.targets_file)
    report = _earlier(output)
    results = report.setdefault("builder_twice", {})
    for builder, names in targets.build_jobs(matrix.select(selection)).items():
        plan = stages.plan_for(matrix, matrix.targets[names[0]], settings)
        with Log(f"twice-{builder}", output.parent / f"bench-twice-{builder}.log") as log:
            first = orchestrate.results_of(plan, settings, log, ["builder"])["builder"].tag
            mine = builderpkgs.package_versions(first)
            root = Path(tempfile.mkdtemp(prefix="optwice-"))
            try:
                with PrivateEngine(root / "engine", root / "docker",
                                   output.parent / f"bench-twice-{builder}.dockerd.log") as eng, \
                        engine.using(eng.host, "host"):
                    fresh = dataclasses.replace(settings, cache=root / "cache")
                    second = orchestrate.results_of(plan, fresh, log, ["builder"])["builder"].tag
                    theirs = builderpkgs.package_versions(second)
            finally:
                _remove_tree(root)
        differences = {k: [mine.get(k), theirs.get(k)] for k in sorted(set(mine) | set(theirs))
                       if mine.get(k) != theirs.get(k)}
        results[builder] = {"image": first, "snapshot": settings.debian_snapshot, "packages": len(mine),
                            "identical": not differences, "differences": differences}
        fsutil.write_text(output, json.dumps(report, indent=2) + "\n")
    return report


def _earlier(output: Path) -> dict:
    """The bench file's other numbers are kept: its report with a new date and machine."""
    try:
        report = json.loads(output.read_text())
    except (OSError, ValueError):
        report = None
    return {**(report if isinstance(report, dict) else {}), **_header()}


def _header() -> dict:
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "goals": GOALS}


def _disk_job(name: str, names: list[str], settings: Settings, logs: Path, interval: float,
              ref: str | None = None) -> dict:
    # Short: the engine's sockets live under it (a unix socket path has about 100 characters).
    root = Path(tempfile.mkdtemp(prefix="opdisk-"))
    folders = {c: root / c for c in DISK_COMPONENTS}
    for f in folders.values():
        f.mkdir()
    peak = dict.fromkeys(DISK_COMPONENTS, 0)
    peak_total, peak_at, samples = 0, 0.0, 0
    log_path = logs / f"bench-disk-{name}.log"
    start = time.monotonic()
    try:
        with PrivateEngine(root / "engine", folders["docker"],
                           logs / f"bench-disk-{name}.dockerd.log") as eng:
            cmd = [sys.executable, "-m", "pipeline", "build", *names, *RELEASE_JOB_FLAGS, "--quiet",
                   "--targets-file", str(settings.targets_file), "--dist", str(folders["dist"]),
                   *(["--ref", ref] if ref else [])]
            env = {**os.environ, "DOCKER_HOST": eng.host, "PIPELINE_DOCKER_NETWORK": "host",
                   "PIPELINE_CACHE": str(folders["cache"]), "TMPDIR": str(folders["tmp"])}
            if settings.source:
                env["OLLAMA_SOURCE"] = settings.source
            logs.mkdir(parents=True, exist_ok=True)
            with open(log_path, "wb") as out:
                proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                        preexec_fn=runner.child_setup())
                try:
                    while True:
                        done = proc.poll() is not None
                        used = du(folders)
                        samples += 1
                        for c, n in used.items():
                            peak[c] = max(peak[c], n)
                        if sum(used.values()) > peak_total:
                            peak_total, peak_at = sum(used.values()), time.monotonic() - start
                        if done:
                            break
                        time.sleep(interval)
                finally:
                    if proc.poll() is None:  # interrupted: let the build remove its containers first
                        proc.terminate()
                        try:
                            proc.wait(timeout=120)
                        except subprocess.TimeoutExpired:
                            proc.kill()
                            proc.wait()
            final = used
            docker_df = eng.usage()
        seconds = time.monotonic() - start
        return {
            "exit_code": proc.returncode,
            "seconds": round(seconds, 1),
            "samples": samples,
            "sample_seconds": interval,
            "peak_bytes": peak_total,
            "peak_at_seconds": round(peak_at, 1),
            "peak_by_component_bytes": peak,
            "final_by_component_bytes": final,
            "final_docker": docker_df,
            "artifacts_bytes": {p.name: p.stat().st_size for p in sorted(folders["dist"].glob("*/ollama-*"))
                                if p.is_file()},
            "log": str(log_path),
            "meets_goal": proc.returncode == 0 and peak_total < DISK_GOAL_BYTES,
        }
    finally:
        _remove_tree(root)


def du(folders: dict[str, Path]) -> dict[str, int]:
    """Bytes on disk under each folder (`du -sx`: a hard link once, other file systems such as a running
    container's overlay mount not entered)."""
    proc = subprocess.run(["du", "-s", "-x", "-B1", *map(str, folders.values())], capture_output=True,
                          text=True, check=False)  # files vanish while du walks: its complaints are noise
    sizes = {}
    for line in proc.stdout.splitlines():
        n, _, path = line.partition("\t")
        sizes[path] = int(n)
    return {c: sizes.get(str(f), 0) for c, f in folders.items()}


class PrivateEngine:
    """A dockerd of its own: data root, exec root, pidfile and socket under folders given; a bridge device
    of its own and no iptables or ip6tables rules, so the machine's engine and its networks are untouched.
    Stopped (and what it mounted unmounted, its bridge deleted) on exit, also after Ctrl-C.

    Not `--bridge=none`: a dockerd started with it deletes the device docker0 (moby's
    removeDefaultBridgeInterface), the default network of the machine's own engine."""

    def __init__(self, state: Path, data_root: Path, log: Path, *, start_seconds: float = 90.0):
        self.state, self.data_root, self.log_path, self.start_seconds = state, data_root, log, start_seconds
        self.socket = state / "docker.sock"
        self.host = f"unix://{self.socket}"
        self._proc: subprocess.Popen | None = None
        # Interface names have at most 15 characters.
        self.bridge = f"opdisk{os.getpid() % 10**8}"

    def __enter__(self) -> PrivateEngine:
        self.state.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        ns = f"ollama-pipeline-bench-{os.getpid()}"
        made = subprocess.run(["ip", "link", "add", "name", self.bridge, "type", "bridge"],
                              capture_output=True, text=True, check=False)
        if made.returncode != 0:
            raise DockerError(f"could not create the private engine's bridge {self.bridge}: "
                              f"{one_line(made.stderr) or made.returncode}")
        cmd = ["dockerd", "--host", self.host, "--data-root", str(self.data_root),
               "--exec-root", str(self.state / "exec"), "--pidfile", str(self.state / "docker.pid"),
               f"--bridge={self.bridge}", "--iptables=false", "--ip6tables=false", "--ip-masq=false",
               "--containerd-namespace", ns, "--containerd-plugins-namespace", f"{ns}-plugins"]
        with open(self.log_path, "wb") as out:
            # A session of its own: Ctrl-C reaches the build, which removes its containers while the
            # engine still runs; __exit__ stops the engine after.
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                          preexec_fn=runner.child_setup())
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_seconds
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise DockerError(f"the private dockerd exited ({self._proc.returncode}); see "
                                  f"{self.log_path}")
            try:
                docker.DockerClient(base_url=self.host, timeout=10).ping()
                return
            except docker.errors.DockerException:
                time.sleep(0.5)
        raise DockerError(f"the private dockerd did not answer within {self.start_seconds:.0f} s; "
                          f"see {self.log_path}")

    def usage(self) -> dict:
        """The engine's own account (`docker system df`): layers, images, volumes, build cache."""
        try:
            df = docker.DockerClient(base_url=self.host, timeout=120).df()
        except docker.errors.DockerException as exc:
            return {"error": one_line(str(exc))}
        return {"layers_bytes": df.get("LayersSize", 0),
                "images": {", ".join(i.get("RepoTags") or [i["Id"][:19]]): i.get("Size", 0)
                           for i in df.get("Images") or []},
                "volumes": {v["Name"]: (v.get("UsageData") or {}).get("Size", -1)
                            for v in df.get("Volumes") or []},
                "build_cache_bytes": sum(b.get("Size", 0) for b in df.get("BuildCache") or [])}

    def __exit__(self, *exc) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True, check=False)


def _remove_tree(root: Path) -> None:
    """Unmount what the engine left mounted under `root` (deepest first), then remove it."""
    prefix = str(root) + "/"
    try:
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    except OSError:
        mounts = []
    for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    shutil.rmtree(root, ignore_errors=True)
