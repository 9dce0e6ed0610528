"""Small C programs and libraries of the pipeline's own, compiled on a given system and kept in the cache.

The glibc compatibility library must be compiled against the floor's glibc, and the load probe of
verify must run on every suite a package is verified on, so both are compiled in a container of an
image of the oldest system (the host builder, or a floor's base image with gcc installed from its own
suite). The result is kept in cache/tools/<name>-<hash>, the hash covering the source, the image's
id, the set-up commands and the compiler's arguments: a second use compiles nothing.

    path = ctools.build("loadprobe", "ollama-pipeline/debian:bullseye", source, ["gcc", "-O2", ...],
                        settings, log, setup=APT_GCC, glibc="2.31")
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import docker.errors
from docker.types import Mount

from pipeline.config.settings import Settings
from pipeline.errors import CommandError, PackageError
from pipeline.hashing import digest, file_sha256
from pipeline.infra import engine, fsutil, toolchain
from pipeline.infra.container import Container
from pipeline.infra.log import Log

SRC = "/tool-src"
OUT = "/tool-out"
# Installs a C compiler from the system's own suite, in a base image that has none.
APT_GCC = ("sh", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
           "--no-install-recommends gcc libc6-dev >/dev/null")
# Refuses a glibc other than the one given ($1): what is compiled here is for that floor.
_GLIBC = ('v=$(getconf GNU_LIBC_VERSION | cut -d" " -f2); [ "$v" = "$1" ] || '
          '{ echo "glibc $v in this image, not the floor glibc $1: compile on the floor system" >&2; '
          'exit 1; }')


def build(name: str, image: str, source: Path, compiler: Sequence[str], settings: Settings, log: Log, *,
          setup: Sequence[str] = (), glibc: str = "") -> Path:
    """`name` compiled from `source` in a container of `image` (after `setup` runs as root there), with
    `compiler` + [-o OUT, SOURCE] ({out} and {src} are the container's paths); returns the file."""
    try:
        image_id = engine.client().images.get(image).id
    except docker.errors.DockerException as exc:  # the caller makes the image first
        raise PackageError(f"cannot compile {name}: image {image} is not on the engine ({exc})") from None
    key = digest([name, image_id, file_sha256(source), list(setup), list(compiler), glibc])[:24]
    folder = settings.places.tool(name, key)
    made = folder / name
    if made.is_file():
        log.line(f"{name}: compiled earlier ({folder.name})")
        return made
    with fsutil.scratch_dir(settings.places.scratch, f"tool-{name}") as scratch:
        work = Path(scratch)
        mounts = [Mount(SRC, str(source.parent), type="bind", read_only=True),
                  Mount(OUT, str(work), type="bind")]
        argv = [a.format(out=f"{OUT}/{name}", src=f"{SRC}/{source.name}") for a in compiler]
        with Container(image, log, mounts=mounts, keep=settings.keep_containers) as box:
            try:
                if setup:
                    box.exec(list(setup))
                if glibc:
                    box.exec(["sh", "-c", _GLIBC, "glibc", glibc], capture=True)
                box.exec(argv, workdir=OUT, user=toolchain.user())
            except CommandError as exc:
                raise PackageError(f"cannot compile {name} in {image}: {exc}") from None
        folder.parent.mkdir(parents=True, exist_ok=True)
        staged = work / name
        if not staged.is_file():
            raise PackageError(f"compiling {name} in {image} left no {name}")
        # Into place whole: a folder that exists holds a complete file (another run made it meanwhile).
        tmp = work / "done"
        tmp.mkdir()
        shutil.copy2(staged, tmp / name)
        if not folder.exists():
            os.replace(tmp, folder)
    log.line(f"{name}: compiled in {image} ({made.stat().st_size} bytes)")
    return made
