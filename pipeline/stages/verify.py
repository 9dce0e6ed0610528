"""Verify stage: a package checked as a user's machine would see it.

    Packaged ─▶ Verified (dist/<target>/verified.json records the package hash it verified)

The archive is unpacked (safely: see pipeline.infra.archive) and every file checked against the
manifest inside it; then, in a clean container of each suite the library policy verifies on (its floor
first: bullseye, bookworm and trixie for the ROCm packages; no toolchain in them), as a user's machine
would run it:

* every shared object of lib/ollama is loaded with every symbol bound (LD_BIND_NOW), with the library
  path Ollama gives its runners, by our load probe (pipeline.smoke.loadprobe, compiled on the floor):
  each alone, then each folder together, so an undefined symbol or a missing library fails the build.
  A backend that needs a driver library (libggml-cuda.so: libcuda.so.1) is loaded against the stand-in
  its builder image has (Builder.driver_stubs), which is never shipped; the host's Vulkan loader is
  installed first where the policy says so. The GPU runtimes then answer without a GPU: the HIP
  runtime its version and "no device", comgr and rocBLAS their versions, hipblasCreate its status;
* bin/ollama starts with every symbol bound, the served GPU archs have code objects and rocBLAS
  Tensile files, and the package's own install script installs a bin/ollama that reports its version;
* the package does what a user does with it: it serves with OLLAMA_DEBUG=2, imports a tiny random-weight
  llama GGUF the pipeline makes itself (pipeline.smoke.tinymodel) and generates at least 8 tokens through
  the HTTP API, on CPU (pipeline.smoke.modelrun); the server log must show what the policy's
  [verify] server_log asks (the ROCm backend loaded, no device found), and a failure shows its tail.
  The systemd unit is checked with `systemd-analyze verify` where the suite has it.
* a package with a Vulkan backend runs the model a second time on it, on Mesa's software Vulkan
  device (lavapipe: pipeline.smoke.lavapipe), on the newest suite, with the package's runtime
  environment: the log shows the device and the layers it took.
"""

from __future__ import annotations

import re
from pathlib import Path

import docker.errors
from docker.types import Mount

from pipeline.config.paths import LOAD_PROBE_SOURCE
from pipeline.config.policy import Policy, load_policy
from pipeline.config.settings import Settings
from pipeline.errors import VerifyError
from pipeline.formats import PackageLayout
from pipeline.gpu import offload, tensile
from pipeline.hashing import file_sha256
from pipeline.infra import archive, baseimage, ctools, engine, fsutil, owner
from pipeline.infra.container import Container
from pipeline.infra.log import Log
from pipeline.smoke import lavapipe, loadprobe, modelrun, tinymodel
from pipeline.stages import manifest as schema
from pipeline.stages.plan import Context, Plan
from pipeline.stages.results import Packaged, Verified

# Bumped when verification checks more: a package verified by fewer checks is verified again.
CHECKS = 4
# A package with a Vulkan backend also runs the model on it (Mesa's lavapipe, pipeline.smoke.lavapipe).
BACKEND_NOTE = f"the package has {lavapipe.BACKEND}"
PKG = "/opt/ollama"
PREFIX = "/opt/prefix"
MODEL_DIR = "/opt/model"
TOOLS = "/opt/verify-tools"
# The server's log level for the model run: trace, since Ollama (v0.12.5 discover/runner.go) passes the
# GPU discovery runner's output, where a GPU backend says it loaded and found no device, to the server log
# at trace level only (OLLAMA_DEBUG=1 is debug and drops it).
DEBUG = "2"
STUBS = f"{TOOLS}/driver-stubs"
LIBDIR = PackageLayout.LIBDIR


def key(plan: Plan, settings: Settings) -> object:
    return [CHECKS, file_sha256(LOAD_PROBE_SOURCE)]


def reuse(ctx: Context, verified: Verified, *, package: Packaged) -> str | None:
    """Verified once per package hash and archive: the record beside the archive names what it verified."""
    if package.manifest.archive is None or verified.sha256 != package.manifest.archive.sha256:
        return None
    return f"{package.archive.name} verified earlier"


def run(ctx: Context, *, package: Packaged) -> Verified:
    return verify_archive(package.archive, ctx.settings, ctx.log, manifest=package.manifest)


def verify_archive(path: Path, settings: Settings, log: Log, *,
                   manifest: schema.Manifest | None = None) -> Verified:
    """Raise VerifyError listing every problem; return what was checked. `manifest` is the one beside
    the archive when the caller has it (the archive's own checksum is then checked too)."""
    sha256 = None
    if manifest is not None and manifest.archive is not None:
        if manifest.archive.name != path.name:
            raise VerifyError(f"{path.name}: its manifest describes {manifest.archive.name}; verify the "
                              "archive the manifest names, or rebuild")
        sha256 = file_sha256(path)
        if path.stat().st_size != manifest.archive.size or sha256 != manifest.archive.sha256:
            raise VerifyError(f"{path.name}: differs from the sha256 its manifest records (changed after the "
                              "build); rebuild it")
    # Decompression is bounded by what the manifest beside says the files add up to, where there is one.
    limit = archive.bound_for(manifest.files) if manifest is not None else None
    owner.claim(settings.places)
    with fsutil.scratch_dir(settings.places.scratch, "verify") as tmp:
        root = Path(tmp) / "pkg"
        inside = archive.unpack(path, root, Path(tmp), limit=limit)
        inner = schema.Manifest.from_dict(inside, f"{path.name}:{PackageLayout.INSIDE}")
        if manifest is not None and inner.files != manifest.files:
            raise VerifyError(f"{path.name}: the manifest inside lists other files than the one beside it; "
                              "rebuild the package")
        problems = archive.check_files(root, inner.files, path.name)
        problems += tensile.coverage(inner.tensile.serves, inner.gpu_code_objects,
                                     [f.path for f in inner.files])
        for rel, record in inner.stripped.items():
            problems += [f"{rel}: {p}" for p in offload.stray_code(root / rel, record.get("keep_archs", []))]
        if problems:
            # Found without running anything: no container is started for a package already refused.
            raise VerifyError(f"{path.name} failed verification:\n  " + "\n  ".join(problems))
        policy = load_policy(inner.floor.policy) if inner.floor else None
        suites = policy.verify_suites if policy else (inner.builder.suite,)
        tools = Path(tmp) / "tools"
        _probe(tools, suites[0], settings, log)
        stubs = _driver_stubs(inner, policy, tools / "driver-stubs", log)
        model = tinymodel.write(Path(tmp) / "model" / "tiny.gguf")
        mounts = [Mount(PKG, str(root), type="bind", read_only=True),
                  Mount(MODEL_DIR, str(model.parent), type="bind", read_only=True),
                  Mount(TOOLS, str(tools), type="bind", read_only=True)]
        folders = loadprobe.groups(root)
        results = {}
        for suite in suites:
            results[suite] = _on_suite(suite, policy, inner, folders, stubs, mounts, model, settings, log,
                                       path.name, vulkan=suite == suites[-1])
    first = results[suites[0]]
    ran = first["model_run"]
    vulkan = results[suites[-1]].get("vulkan_run")
    log.line(f"verified on clean {', '.join(suites)}: every library loads with every symbol bound, "
             f"{first['version']}, {ran['tokens']} tokens generated on {ran['backend']}"
             + (f"; on Vulkan ({suites[-1]}): {vulkan['summary']}" if vulkan else ""))
    return Verified(package=Packaged(archive=path, manifest=manifest or inner), suite=suites[0],
                    version_output=first["version"], sha256=sha256 or file_sha256(path),
                    details={"model_run": first["model_run"], "unit_checked": first["unit_checked"],
                             **({"vulkan_run": vulkan} if vulkan else {}), "suites": results})


def _on_suite(suite: str, policy: Policy | None, inner: schema.Manifest, folders: dict[str, list[str]],
              stubs: list[str], mounts: list[Mount], model: Path, settings: Settings, log: Log,
              name: str, *, vulkan: bool = False) -> dict:
    """Everything a clean `suite` is asked, in one container of it (with `vulkan`, the model run on a
    Vulkan backend the package has, too); raises VerifyError on problems."""
    image = baseimage.name(settings.image_prefix, suite)
    baseimage.ensure(image, suite, settings, log)
    log.line(f"-- verifying on a clean {suite}")
    problems: list[str] = []
    with Container(image, log, mounts=mounts, keep=settings.keep_containers) as box:
        if policy and policy.host_packages:
            # What a host installs for the package (the Vulkan loader): from the suite's own archive.
            _install(box, policy.host_packages, log)
        answers = []
        for folder, files in folders.items():
            path = loadprobe.library_path(PKG, folder, [STUBS] if stubs else [])
            out = box.exec(loadprobe.argv(f"{TOOLS}/loadprobe", path, [f"{PKG}/{f}" for f in files]),
                           capture=True)
            report = loadprobe.parse(out)
            found, lines = loadprobe.judge(report, folder)
            problems += [p.replace(f"{PKG}/", "") for p in found]
            answers += lines
            log.line(f"{suite}: {folder}: {len(report.loaded)} of {len(files)} libraries load with every "
                     "symbol bound" + (f" ({', '.join(stubs)} from the driver's stand-in)" if stubs else ""))
        for line in answers:
            log.line(f"{suite}: {line}")
        bound = box.exec(["sh", "-c", 'LD_BIND_NOW=1 "$0" --version 2>&1; echo "exit $?"',
                          f"{PKG}/{PackageLayout.BIN}"], capture=True)
        if not bound.rstrip().endswith("exit 0"):
            problems.append(f"{PackageLayout.BIN} does not start with every symbol bound: "
                            f"{bound.strip()[-300:]}")
        # The package's own install script, into a prefix of the clean system; then run from there.
        box.exec(["sh", f"{PKG}/{PackageLayout.SHARE}/install.sh", PREFIX])
        version = box.exec([f"{PREFIX}/{PackageLayout.BIN}", "--version"], capture=True)
        if inner.version not in version:
            problems.append(f"{PackageLayout.BIN} --version does not name {inner.version}: "
                            f"{version.strip()!r}")
        if problems:  # a package that does not load is not run
            raise VerifyError(f"{name} failed verification on {suite}:\n  " + "\n  ".join(problems))
        unit = modelrun.check_unit(lambda argv: box.exec(argv, capture=True), PKG, PREFIX)
        checked = f"checked, {'; '.join(unit.problems) or 'no problems'}" if unit.checked \
            else "not checked (no systemd-analyze on the floor)"
        log.line(f"{suite}: systemd unit: {checked}")
        problems += [f"{PackageLayout.SHARE}/ollama.service: {p}" for p in unit.problems]
        ran = modelrun.run(lambda argv: box.exec(argv, capture=True, env={"OLLAMA_DEBUG": DEBUG}),
                           prefix=PREFIX, model_path=f"{MODEL_DIR}/{model.name}")
        log.line(f"{suite}: model run: {ran.summary()}")
        shown = []
        for pattern in policy.verify.server_log if policy else ():
            hit = next((line for line in ran.server_log.splitlines() if re.search(pattern, line)), None)
            if hit is None:
                problems.append(f"the server log (OLLAMA_DEBUG={DEBUG}) has no line matching {pattern!r}")
            else:
                shown.append(hit.strip())
                log.line(f"{suite}: server log: {hit.strip()}")
        run_on_vulkan = None
        if vulkan and lavapipe.applies(f.path for f in inner.files):
            run_on_vulkan = _vulkan_run(box, policy, inner, f"{MODEL_DIR}/{model.name}", log)
    if problems:
        raise VerifyError(f"{name} failed verification on {suite}:\n  " + "\n  ".join(problems))
    version = _client_version(version)
    out = {"version": version, "unit_checked": unit.checked, "answers": answers, "server_log": shown,
           "model_run": {"tokens": ran.tokens, "tokens_per_s": ran.tokens_per_s, "backend": ran.backend}}
    if run_on_vulkan is not None:
        out["vulkan_run"] = {"device": run_on_vulkan.device, "tokens": run_on_vulkan.model_run.tokens,
                             "tokens_per_s": run_on_vulkan.model_run.tokens_per_s,
                             "offloaded": list(run_on_vulkan.model_run.offloaded or ()),
                             "env": dict(run_on_vulkan.env), "summary": run_on_vulkan.summary()}
    return out


def _client_version(output: str) -> str:
    """`ollama --version`'s answer as one line: without a server it says "Warning: could not connect to a
    running Ollama instance" and "Warning: client version is X"; with none, "ollama version is X"."""
    found = re.search(r"version is (\S+)", output)
    return f"ollama version is {found[1]}" if found else output.strip()


def _probe(tools: Path, suite: str, settings: Settings, log: Log) -> Path:
    """The load probe, compiled on the floor's suite (its base image with gcc from its own archive), in
    the folder mounted at TOOLS."""
    image = baseimage.name(settings.image_prefix, suite)
    baseimage.ensure(image, suite, settings, log)
    made = ctools.build("loadprobe", image, LOAD_PROBE_SOURCE, loadprobe.COMPILER, settings, log,
                        setup=ctools.APT_GCC)
    tools.mkdir(parents=True, exist_ok=True)
    dest = tools / "loadprobe"
    dest.write_bytes(made.read_bytes())
    dest.chmod(0o755)
    return dest


def _driver_stubs(inner: schema.Manifest, policy: Policy | None, folder: Path, log: Log) -> list[str]:
    """Copy the stand-ins of the driver libraries the package's objects need out of the builder image
    (manifest: builder.driver_stubs) into `folder`; returns their sonames. A driver library without a
    stand-in, or a builder image that is gone, is a VerifyError: the objects needing it cannot be loaded."""
    driver = dict((inner.libraries or {}).get("driver", {}))
    wanted = sorted(s for s in driver if not policy or s not in policy.host_libraries)
    if not wanted:
        return []
    stubs = inner.builder.driver_stubs
    lacking = [s for s in wanted if s not in stubs]
    if lacking:
        raise VerifyError(f"{', '.join(lacking)} (needed by {', '.join(driver[lacking[0]])}) comes with the "
                          f"GPU driver and builder {inner.builder.name} names no stand-in for it "
                          "(driver_stubs in targets.toml): the objects needing it cannot be loaded here")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        container = engine.client().containers.create(inner.builder.image, ["true"], network_disabled=True)
    except docker.errors.DockerException as exc:
        raise VerifyError(f"the stand-ins of {', '.join(wanted)} lie in the builder image "
                          f"{inner.builder.image}, which this engine does not have ({exc}); build the target "
                          "here first") from None
    try:
        for soname in wanted:
            bits, _ = container.get_archive(stubs[soname])
            data = b"".join(bits)
            (folder / f"{soname}.tar").write_bytes(data)
            _untar_one(folder / f"{soname}.tar", folder / soname)
            log.line(f"{soname}: the stand-in {stubs[soname]} of {inner.builder.image}, for the load test "
                     "only")
    finally:
        container.remove(force=True)
    return wanted


def _install(box: Container, packages: tuple[str, ...], log: Log) -> None:
    """apt-get install on the floor, from its own suite, as a host would."""
    log.line(f"installing on the floor, as a host would: {' '.join(packages)}")
    box.exec(["sh", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get "
              "install -y -qq --no-install-recommends " + " ".join(packages)])


def _vulkan_run(box: Container, policy: Policy | None, inner: schema.Manifest, model_path: str,
                log: Log) -> lavapipe.LavapipeRun:
    """The model run on the Vulkan backend, on lavapipe from the floor policy's driver_packages."""
    if policy is None or not policy.driver_packages:
        named = inner.floor.policy if inner.floor else "none"
        raise VerifyError(f"{BACKEND_NOTE}: its floor policy ({named}) names no driver_packages "
                          "(mesa-vulkan-drivers) to run it with")
    _install(box, policy.driver_packages, log)
    run = lavapipe.run(lambda argv, env: box.exec(argv, env=env, capture=True), PREFIX, model_path,
                       inner.runtime_env)
    for line in run.evidence():
        log.line(f"  {line}")
    log.line(f"model run on Vulkan, device {run.device_name}: {run.model_run.summary()}")
    return run


def manifest_beside(path: Path) -> schema.Manifest | None:
    """The manifest beside an archive when it describes that archive (as `nox -s build` leaves them in
    dist/<target>/), else None: the archive is then checked against the manifest inside only."""
    beside = path.parent / PackageLayout.BESIDE
    if not beside.is_file():
        return None
    found = schema.Manifest.load(beside)
    if found.archive is None or found.archive.name != path.name:
        return None
    return found



def _untar_one(tarball: Path, dest: Path) -> None:
    """The one regular file of a tar stream (what `docker cp` of one file gives) written to `dest`."""
    import tarfile

    with tarfile.open(tarball) as tar:
        member = next((m for m in tar.getmembers() if m.isfile()), None)
        if member is None:
            raise VerifyError(f"{tarball.name}: the builder image holds no file there")
        with tar.extractfile(member) as src:
            dest.write_bytes(src.read())
    tarball.unlink()
