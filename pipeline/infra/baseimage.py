"""Debian base images. No registry may be reachable, so an image that is neither present nor
pullable is made with debootstrap from a Debian mirror and `docker import`."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import docker.errors

from pipeline.config.settings import Settings, machine_debian_mirror
from pipeline.errors import DockerError
from pipeline.infra import engine, fsutil, runner
from pipeline.infra.log import Log


def name(image_prefix: str, suite: str) -> str:
    """The Debian base image of a suite, as the pipeline names it (made by debootstrap when missing)."""
    return f"{image_prefix}/debian:{suite}"


def mirror(settings: Settings) -> str:
    if settings.debian_snapshot:
        # Settings.from_env refuses a snapshot without its URL; a Settings made by hand may lack it.
        if not settings.debian_snapshot_url:
            raise DockerError("a Debian snapshot is set without PIPELINE_DEBIAN_SNAPSHOT_URL")
        return f"{settings.debian_snapshot_url}/{settings.debian_snapshot}"
    found = settings.debian_mirror or machine_debian_mirror() or debootstrap_mirror()
    if not found:
        raise DockerError("no Debian mirror: this machine's apt sources name none and debootstrap (which "
                          "knows Debian's default) is not installed; set PIPELINE_DEBIAN_MIRROR or pass "
                          "--debian-mirror URL")
    return found


_DEFAULT_MIRROR = re.compile(r"""^\s*(?:default_mirror\s+|DEF_MIRROR=["']?)"""
                             r"""(https?://\S+?/debian)/?["']?\s*$""",
                             re.MULTILINE)


DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")


def debootstrap_mirror(suite: str = "sid", scripts: Path = DEBOOTSTRAP_SCRIPTS) -> str | None:
    """The Debian archive debootstrap uses when given no mirror: the suite script's `default_mirror`, else
    the DEF_MIRROR of the debootstrap program. Only a Debian archive (a .../debian URL) counts: on
    distributions whose debootstrap defaults to their own archive this finds nothing."""
    candidates = [scripts / suite]
    if program := shutil.which("debootstrap"):
        candidates.append(Path(program))
    for path in candidates:
        try:
            m = _DEFAULT_MIRROR.search(path.read_text(errors="replace"))
        except OSError:
            continue
        if m:
            return m[1]
    return None


def ensure(name: str, suite: str, settings: Settings, log: Log) -> str:
    """Make sure image `name` (Debian `suite`) exists; returns its id."""
    client = engine.client()
    try:
        image = client.images.get(name)
        log.line(f"base image {name} present ({image.short_id})")
        return image.id
    except docker.errors.ImageNotFound:
        pass
    official = f"debian:{suite}"
    try:
        log.line(f"base image {name} missing; trying to pull {official}")
        image = client.images.pull("debian", tag=suite)
        image.tag(name)
        return image.id
    except docker.errors.APIError as exc:
        log.line(f"cannot pull {official} ({exc.explanation or exc}); making it with debootstrap")
    return bootstrap(name, suite, mirror(settings), log, settings.places.scratch)


def ensure_vendor(name: str, log: Log) -> str:
    """A vendor base image (ROCm's or NVIDIA's): present, or pulled; it cannot be made here."""
    client = engine.client()
    try:
        return client.images.get(name).id
    except docker.errors.ImageNotFound:
        pass
    repository, _, tag = name.partition("@") if "@" in name else name.rpartition(":")
    log.line(f"pulling vendor image {name}")
    try:
        return client.images.pull(repository, tag=tag or None).id
    except docker.errors.APIError as exc:
        raise DockerError(f"cannot pull the vendor image {name} ({exc.explanation or exc}). The vendor "
                          "flavor needs a registry, or the image loaded with `docker load`; the debian "
                          "flavor needs only a Debian mirror") from None


def bootstrap(name: str, suite: str, mirror_url: str, log: Log, scratch: Path) -> str:
    """Make image `name` with debootstrap of `suite` and docker import, in a scratch folder of the cache
    (owned: a killed run's root file system is removed by the next run)."""
    if shutil.which("debootstrap") is None:
        raise DockerError(f"base image {name} is missing, no registry answers and debootstrap is not "
                          "installed: install debootstrap (apt-get install debootstrap) or load a "
                          f"{suite} image with `docker load`")
    if os.geteuid() != 0:
        raise DockerError(f"base image {name} is missing and debootstrap needs root: run "
                          f"`sudo debootstrap --variant=minbase {suite} DIR {mirror_url}` and "
                          f"`sudo tar -C DIR -c . | docker import - {name}`, or build once as root")
    with fsutil.scratch_dir(scratch, f"rootfs-{suite}") as tmp:
        rootfs = Path(tmp) / "rootfs"
        runner.run(log, ["debootstrap", "--variant=minbase", suite, rootfs, mirror_url])
        # The .debs debootstrap installed from stay behind in the rootfs: no image needs them.
        for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        tarball = Path(tmp) / "rootfs.tar"
        runner.run(log, ["tar", "--numeric-owner", "-C", rootfs, "-cf", tarball, "."])
        repository, _, tag = name.rpartition(":")
        log.line(f"importing {tarball.name} as {name}")
        engine.client().api.import_image_from_file(str(tarball), repository=repository, tag=tag)
    return engine.client().images.get(name).id
