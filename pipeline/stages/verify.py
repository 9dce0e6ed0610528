"""Verify stage: a package checked as a user's machine would see it.

    Packaged ─▶ Verified (dist/<target>/verified.json records the package hash it verified)

The archive is unpacked (safely: see pipeline.infra.archive) and every file checked against the
manifest inside it; then, in a clean container of the runtime floor (the library policy's suite; no
toolchain in it): every ELF must resolve with the library path Ollama gives its runners (driver
libraries such as libcuda.so.1 excepted: they come with the driver), the served GPU archs must have
code objects and rocBLAS Tensile files, and the package's own install script must install a
bin/ollama that starts and reports its version. Then the package does what a user does with it: it
serves, imports a tiny random-weight llama GGUF the pipeline makes itself (pipeline.smoke.tinymodel)
and generates at least 8 tokens through the HTTP API, on CPU (pipeline.smoke.modelrun); the log shows
tokens/s and the backend the runner loaded, and a failure shows the server log's tail. The systemd
unit is checked with `systemd-analyze verify` where the floor has it. A package with a Vulkan backend
runs the model a second time on it, on Mesa's software Vulkan device (lavapipe: pipeline.smoke.lavapipe),
with the package's runtime environment: the log shows the device and the layers it took.
"""

from __future__ import annotations

from pathlib import Path

from docker.types import Mount

from pipeline.config.policy import Policy, load_policy
from pipeline.config.settings import Settings
from pipeline.errors import VerifyError
from pipeline.formats import PackageLayout
from pipeline.gpu import offload, tensile
from pipeline.hashing import file_sha256
from pipeline.infra import archive, baseimage, fsutil, owner
from pipeline.infra.container import Container
from pipeline.infra.log import Log
from pipeline.smoke import lavapipe, modelrun, tinymodel
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
LIBDIR = PackageLayout.LIBDIR
# For every shared object of lib/ollama: ldd with lib/ollama/<runner>:lib/ollama, as the runners get.
_LDD = rf"""
cd "$0"
find {LIBDIR} -type f -name '*.so*' ! -path '*/library/*' | sort | while read -r f; do
  dir=$(dirname "$f"); path="$PWD/{LIBDIR}"
  [ "$dir" != {LIBDIR} ] && path="$PWD/$dir:$path"
  LD_LIBRARY_PATH="$path" ldd "$f" 2>&1 | sed -n "s|^\s*\(\S*\) => not found|$f needs \1|p"
done
"""


def key(plan: Plan, settings: Settings) -> object:
    return CHECKS


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
        suite = policy.suite if policy else inner.builder.suite
        # Driver libraries (libcuda.so.1) come with the GPU driver, which a clean system lacks.
        driver = set(policy.never_bundle) - set(policy.host_libraries) if policy else set()
        image = baseimage.name(settings.image_prefix, suite)
        baseimage.ensure(image, suite, settings, log)
        model = tinymodel.write(Path(tmp) / "model" / "tiny.gguf")
        mounts = [Mount(PKG, str(root), type="bind", read_only=True),
                  Mount(MODEL_DIR, str(model.parent), type="bind", read_only=True)]
        with Container(image, log, mounts=mounts, keep=settings.keep_containers) as box:
            if policy and policy.host_packages:
                # What a host installs for the package (the Vulkan loader): from the floor's own suite.
                _install(box, policy.host_packages, log)
            ldd = box.exec(["sh", "-c", _LDD, PKG], capture=True)
            unresolved = [line.strip() for line in ldd.splitlines() if line.strip()]
            problems += [f"{line}: not found on a clean {suite}" for line in unresolved
                         if line.rsplit(" ", 1)[-1] not in driver]
            if wanted := sorted({line.rsplit(" ", 1)[-1] for line in unresolved} & driver):
                log.line(f"from the GPU driver at run time: {', '.join(wanted)}")
            # The package's own install script, into a prefix of the clean system; then run from there.
            box.exec(["sh", f"{PKG}/{PackageLayout.SHARE}/install.sh", PREFIX])
            version = box.exec([f"{PREFIX}/{PackageLayout.BIN}", "--version"], capture=True)
            if inner.version not in version:
                problems.append(f"{PackageLayout.BIN} --version does not name {inner.version}: "
                                f"{version.strip()!r}")
            if problems:  # a package that does not resolve is not run
                raise VerifyError(f"{path.name} failed verification:\n  " + "\n  ".join(problems))
            unit = modelrun.check_unit(lambda argv: box.exec(argv, capture=True), PKG, PREFIX)
            checked = f"checked, {'; '.join(unit.problems) or 'no problems'}" if unit.checked \
                else "not checked (no systemd-analyze on the floor)"
            log.line(f"systemd unit: {checked}")
            problems += [f"{PackageLayout.SHARE}/ollama.service: {p}" for p in unit.problems]
            vulkan = None
            ran = modelrun.run(lambda argv: box.exec(argv, capture=True), prefix=PREFIX,
                               model_path=f"{MODEL_DIR}/{model.name}")
            log.line(f"model run: {ran.summary()}")
            if lavapipe.applies(f.path for f in inner.files):
                vulkan = _vulkan_run(box, policy, inner, f"{MODEL_DIR}/{model.name}", log)
    if problems:
        raise VerifyError(f"{path.name} failed verification:\n  " + "\n  ".join(problems))
    # `ollama --version` without a server also prints "could not connect": keep the line naming the version.
    version = next((line.strip() for line in version.splitlines() if inner.version in line), version.strip())
    log.line(f"verified on a clean {suite}: every library resolves, {version}, "
             f"{ran.tokens} tokens generated at {ran.tokens_per_s:.1f} tokens/s on {ran.backend}"
             + (f"; on Vulkan: {vulkan.summary()}" if vulkan else ""))
    return Verified(package=Packaged(archive=path, manifest=manifest or inner), suite=suite,
                    version_output=version.strip(), sha256=sha256 or file_sha256(path),
                    details={"model_run": {"tokens": ran.tokens, "tokens_per_s": ran.tokens_per_s,
                                           "backend": ran.backend}, "unit_checked": unit.checked,
                             **({"vulkan_run": {"device": vulkan.device, "tokens": vulkan.model_run.tokens,
                                                "tokens_per_s": vulkan.model_run.tokens_per_s,
                                                "offloaded": list(vulkan.model_run.offloaded or ()),
                                                "env": dict(vulkan.env)}} if vulkan else {})})


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

