"""Image stage: the runtime Docker image of a verified package, and its saved tarball for the release.

    Verified ─▶ RuntimeImage (ollama-pipeline/ollama:<version>-<target>,
                              dist/<target>/ollama-<version>-<target>.image.tar.gz)

The image is the package's floor system (the same Debian base verify ran on) with ca-certificates and
what its floor policy says a host adds (the Vulkan loader and Mesa's drivers for the vulkan target), the
package unpacked into /usr as upstream's image lays it out, the target's runtime environment (and, for
CUDA targets, NVIDIA_VISIBLE_DEVICES and NVIDIA_DRIVER_CAPABILITIES, which NVIDIA's container runtime
reads), `ollama serve` on 0.0.0.0:11434 as entrypoint, a models volume, a health check and OCI labels:
org.opencontainers.image.source and .revision name this project's repository and commit (the setting
PIPELINE_PROJECT_URL, the workflow's repository or the git remote), the upstream URL, commit and version
are under org.ollama-pipeline.upstream.*, beside the archive's name and sha256. It is made only from the
verified archive, and only when its hash changed: a second run with nothing changed is a no-op. (The
revision is the commit that made the image; a reused image keeps it.)

Before it is saved, the image is checked as it was built (every label and environment variable above as
computed here) and run as a user runs it: its own entrypoint serves, the client in the image must reach
that server (`ollama --version` names the version, no "could not connect"), and the model run of verify
(tiny GGUF: serve, create, generate) runs inside it.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Sequence
from pathlib import Path

from docker.types import Mount

from pipeline.config.paths import PROJECT_ROOT
from pipeline.config.policy import load_policy
from pipeline.config.settings import Settings
from pipeline.errors import CommandError, DockerError, ModelRunError
from pipeline.formats import PackageLayout
from pipeline.hashing import file_sha256
from pipeline.infra import archive, baseimage, fsutil, git, images, templates
from pipeline.infra.container import Container
from pipeline.smoke import modelrun, tinymodel
from pipeline.stages import manifest as schema
from pipeline.stages.plan import Context, Plan
from pipeline.stages.results import RuntimeImage, Verified

TEMPLATE = "runtime-image.Dockerfile.j2"
MODEL_DIR = "/opt/model"
READY_TRIES = 60
# Where the runtime image installs the package (as upstream's image does).
PREFIX = "/usr"
# What NVIDIA's container runtime reads to hand a container the GPUs and driver libraries (upstream's
# image sets the same): without them a host on the older nvidia runtime gives the container no GPU.
# LD_LIBRARY_PATH: where the older nvidia-docker runtime mounts the driver's libraries.
NVIDIA_ENV = {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
              "LD_LIBRARY_PATH": "/usr/local/nvidia/lib:/usr/local/nvidia/lib64"}
MODELS = "/root/.ollama/models"


def key(plan: Plan, settings: Settings) -> object:
    template = settings.templates_dir / TEMPLATE
    return [file_sha256(template) if template.is_file() else "", plan.image_prefix]


def tag(plan: Plan) -> str:
    return f"{plan.image_prefix}/ollama:{plan.version.replace('+', '-')}"


def tarball_path(plan: Plan, settings: Settings) -> Path:
    return settings.places.target(plan.out) / plan.archive_name.replace(f".{plan.target.package.format}",
                                                                         ".image.tar.gz")


def discard(ctx: Context, result: RuntimeImage) -> int:
    """Free the engine of the image once it is saved (`--lean`): the tarball in dist/ stays."""
    return images.remove(result.tag)


def reuse(ctx: Context, made: RuntimeImage, *, verify: Verified) -> str | None:
    """The recorded image holds while the engine has it, labelled with this hash, and the saved tarball
    is the one recorded."""
    found = images.find(made.tag)
    if found is None or (found.labels or {}).get(images.LABEL_HASH) != ctx.hash:
        return None
    if made.tarball != tarball_path(ctx.plan, ctx.settings) or not made.tarball.is_file() \
            or file_sha256(made.tarball) != made.sha256:
        return None
    return f"image {made.tag} is this hash's; {made.tarball.name} saved earlier"


def run(ctx: Context, *, verify: Verified) -> RuntimeImage:
    plan, log, settings = ctx.plan, ctx.log, ctx.settings
    name, saved = tag(plan), tarball_path(plan, settings)
    manifest = verify.package.manifest
    suite = verify.suite
    base = baseimage.name(plan.image_prefix, suite)
    baseimage.ensure(base, suite, settings, log)
    project = git.checkout(PROJECT_ROOT, log, settings.project_url)
    if not project.url:
        log.line("no project URL (set PIPELINE_PROJECT_URL or a git remote 'origin'): the image carries no "
                 "org.opencontainers.image.source")
    env = environment(manifest, cuda=any(b.gpu_code == "cuda" for b in plan.backends))
    labels = oci_labels(manifest, project)
    dockerfile = render(settings.templates_dir, manifest, base, suite, env, labels, host_packages(manifest))
    with fsutil.scratch_dir(ctx.places.scratch, f"{plan.name}-image") as tmp:
        packed = archive.gzip_tar(verify.package.archive, Path(tmp))
        log.line(f"building {name} on {base} from {verify.package.archive.name}")
        image_id = images.build(dockerfile, name, log,
                                buildargs={"DEBIAN_MIRROR": baseimage.mirror(settings)},
                                labels={images.LABEL_HASH: ctx.hash,
                                        "org.ollama-pipeline.target": plan.name},
                                files={"package.tar.gz": packed}, what="runtime image")
        _check_config(name, env, labels, log)
        _check(name, manifest.version, Path(tmp), settings, log)
    _save(name, saved, log)
    log.line(f"{name}: saved as {saved.name} ({saved.stat().st_size / 1e6:.1f} MB); "
             f"load with: docker load -i {saved.name}")
    return RuntimeImage(tag=name, id=image_id, tarball=saved, sha256=file_sha256(saved))


def host_packages(manifest: schema.Manifest) -> list[str]:
    """What a host adds for the package, from its floor policy: host_packages (the Vulkan loader) and
    driver_packages (Mesa's Vulkan drivers); none for a package without a floor policy."""
    if manifest.floor is None:
        return []
    policy = load_policy(manifest.floor.policy)
    return list(dict.fromkeys([*policy.host_packages, *policy.driver_packages]))


def render(folder: Path, manifest, base: str, suite: str, env: dict[str, str], labels: dict[str, str],
           packages: Sequence[str] = ()) -> str:
    """The runtime image's Dockerfile (docker/runtime-image.Dockerfile.j2)."""
    return templates.render(folder, TEMPLATE, manifest=manifest, base_image=base, suite=suite, env=env,
                            labels=labels, packages=list(packages))


def environment(manifest, *, cuda: bool) -> dict[str, str]:
    """The image's environment, in order: the serving address, the target's runtime environment, the
    models' folder, and NVIDIA's for targets with a CUDA backend."""
    env = {"OLLAMA_HOST": "0.0.0.0:11434", **dict(sorted(manifest.runtime_env.items())),
           "OLLAMA_MODELS": MODELS}
    if cuda:
        env.update(NVIDIA_ENV)
    return env


def oci_labels(manifest, project: git.Checkout) -> dict[str, str]:
    """The image's labels: OCI's for this project's build, org.ollama-pipeline.* for the upstream it
    carries and the archive it was made from."""
    labels = {
        "org.opencontainers.image.title": f"ollama-{manifest.target}",
        "org.opencontainers.image.description": f"Ollama {manifest.version} for {manifest.description}",
        "org.opencontainers.image.version": manifest.version,
        "org.ollama-pipeline.upstream.source": manifest.upstream.url,
        "org.ollama-pipeline.upstream.revision": manifest.upstream.commit,
        "org.ollama-pipeline.upstream.version": manifest.upstream.version,
        "org.ollama-pipeline.archive": manifest.archive.name,
        "org.ollama-pipeline.archive.sha256": manifest.archive.sha256,
    }
    if project.url:
        labels["org.opencontainers.image.source"] = project.url
    if project.commit:
        labels["org.opencontainers.image.revision"] = project.commit
        if project.modified:
            labels["org.ollama-pipeline.revision.modified"] = "true"
    return labels


def _check_config(name: str, env: dict[str, str], labels: dict[str, str], log) -> None:
    """The built image has every label and environment variable the stage computed, with those values."""
    found = images.find(name)
    config = (found.attrs.get("Config") or {}) if found is not None else {}
    have_env = dict(item.partition("=")[::2] for item in config.get("Env") or [])
    have_labels = config.get("Labels") or {}
    wrong = [f"label {k}={have_labels.get(k)!r} (want {v!r})" for k, v in labels.items()
             if have_labels.get(k) != v]
    wrong += [f"env {k}={have_env.get(k)!r} (want {v!r})" for k, v in env.items() if have_env.get(k) != v]
    if wrong:
        raise DockerError(f"image {name} was not built as its Dockerfile says: " + "; ".join(wrong))
    log.line(f"image {name}: source {labels.get('org.opencontainers.image.source', '(unknown)')}, revision "
             f"{labels.get('org.opencontainers.image.revision', '(unknown)')}; upstream "
             f"{labels['org.ollama-pipeline.upstream.revision'][:12]}"
             + (f"; {', '.join(k for k in NVIDIA_ENV)} set" if set(NVIDIA_ENV) <= set(env) else ""))


def _check(name: str, version: str, scratch: Path, settings: Settings, log) -> None:
    """Run the image with its own entrypoint, wait until it serves, and run the model in it."""
    model = tinymodel.write(scratch / "model" / "tiny.gguf")
    mounts = [Mount(MODEL_DIR, str(model.parent), type="bind", read_only=True)]
    with Container(name, log, mounts=mounts, command=None, keep=settings.keep_containers) as box:
        for attempt in range(READY_TRIES):
            try:
                box.exec([f"{PREFIX}/{PackageLayout.BIN}", "list"], capture=True)
                break
            except CommandError:
                if attempt == READY_TRIES - 1:
                    raise ModelRunError("ready", f"the image's `ollama serve` did not answer within "
                                                 f"{READY_TRIES} seconds") from None
                time.sleep(1)
        answer = box.exec([f"{PREFIX}/{PackageLayout.BIN}", "--version"], capture=True)
        if version not in answer or "could not connect" in answer:
            raise ModelRunError("version", f"the image's server did not answer /api/version with {version}: "
                                           f"{answer.strip()!r}")
        ran = modelrun.run(lambda argv: box.exec(argv, capture=True), prefix=PREFIX,
                           model_path=f"{MODEL_DIR}/{model.name}")
        log.line(f"image {name}: serves {version}; model run: {ran.summary()}")


def _save(name: str, dest: Path, log) -> None:
    """`docker save NAME | gzip` into dest, atomically (gzip: `docker load` reads it everywhere)."""
    try:
        chunks = images.save(name)
        with fsutil.atomic_file(dest) as f, gzip.GzipFile(filename="", mode="wb", fileobj=f,
                                                            compresslevel=6, mtime=0) as z:
            for chunk in chunks:
                z.write(chunk)
    except OSError as exc:
        raise DockerError(f"cannot save image {name} to {dest}: {exc.strerror or exc}") from None
