"""`clean`: remove what the pipeline keeps between runs, and say how much space that freed.

Only what can be proved the pipeline's is removed, each item with the reason it is the pipeline's:

* the cache folder's own folders (places.CACHE_FOLDERS), when the folder carries the marker the pipeline
  writes (owner.CACHE_TAG); never a folder without it, a link, the project, a home or a system folder,
  and never an empty PIPELINE_CACHE taken for the default;
* containers labelled org.ollama-pipeline.build that run an image under the image prefix, unless their
  owner process still runs (or ran on another host, or no owner is recorded and the container runs):
  those are kept and named;
* images tagged under the image prefix (builder-*, debian, ollama), by tag (an image tagged elsewhere
  too keeps its other tags), and untagged images the pipeline labelled as made under this prefix; never
  one a kept container uses;
* this user's compiler and Go cache volumes (<volume prefix>-<cache>-u<uid>).

`dry_run` lists the same without removing anything. dist/ is left alone: it holds the packages.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import docker.errors

from pipeline.config import places
from pipeline.config.paths import PROJECT_ROOT
from pipeline.config.settings import Settings
from pipeline.errors import DockerError, UsageError
from pipeline.infra import engine, images, owner, toolchain
from pipeline.infra.container import LABEL as CONTAINER_LABEL
from pipeline.infra.log import size as log_size
from pipeline.records import record

# Folders no cache setting may name, whatever they hold (the marker could have been copied there).
SYSTEM_FOLDERS = frozenset(Path(p) for p in (
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt",
    "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/usr/bin",
    "/usr/include", "/usr/lib", "/usr/lib64", "/usr/libexec", "/usr/local", "/usr/local/bin", "/usr/sbin",
    "/usr/share", "/usr/src", "/var/cache", "/var/lib", "/var/log", "/var/tmp", "/var/spool"))
# What the cache's folders hold, for the report.
CACHE_WHAT = {places.GIT: "mirrors of upstream repositories", places.TREES: "exported and patched trees",
              places.BUILDS: "finished builds", places.SYSROOTS: "libraries taken from builder images",
              places.SCRATCH: "work folders of stages", places.LOCKS: "build locks",
              places.MEMTEST: "the memory workbench's test binaries",
              places.MEMTEST_SRC: "the memory workbench's compile folder"}
IMAGE_NAMES = ("builder-", "debian:", "ollama:")


@record(positional=True)
class Item:
    kind: str  # cache | container | image | volume
    name: str
    size: int | None  # bytes, where known
    why: str = ""  # why it is the pipeline's (or, when kept, why it stays)
    ref: str = ""  # what the engine removes (a container or image id, an image tag)
    keep: bool = False


def folder_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


OWN_CACHE = "set PIPELINE_CACHE to the pipeline's own cache folder"


def cache_problem(settings: Settings, env: dict[str, str] | None = None) -> str | None:
    """Why the cache folder of `settings` is not one clean may remove, or None."""
    env = dict(os.environ if env is None else env)
    if "PIPELINE_CACHE" in env and not env["PIPELINE_CACHE"].strip():
        return ("PIPELINE_CACHE is set but empty; clean removes only a cache folder named outright: unset it "
                "for the default, or name the folder")
    cache = Path(os.path.abspath(settings.cache))
    if cache.is_symlink():
        return f"cache {cache} is a symbolic link; set PIPELINE_CACHE to the folder itself"
    real = cache.resolve()
    named = [(what, path.resolve()) for what, path in (
        ("your home folder", Path.home()), ("the project", PROJECT_ROOT), ("the current folder", Path.cwd()),
        ("the output folder", settings.dist))]
    # The folder itself first (a project checked out at /project is the project, not a system folder),
    # then the system folders, then a folder that holds one of those named.
    for what, path in named:
        if real == path:
            return f"cache {cache} is {what} or holds it; {OWN_CACHE}"
    if real in SYSTEM_FOLDERS or (len(real.parts) <= 2 and real.parent == Path("/")):
        return f"cache {cache} is a system folder; set PIPELINE_CACHE to the pipeline's own cache folder"
    for what, path in named:
        if real in path.parents:
            return f"cache {cache} is {what} or holds it; {OWN_CACHE}"
    if real.exists() and not real.is_dir():
        return f"cache {cache} is not a folder"
    if real.is_dir() and not owner.cache_marked(real):
        return (f"cache {cache} carries no {owner.CACHE_TAG} of the pipeline, so nothing proves it is the "
                "pipeline's cache; not removing it (remove it by hand if it is)")
    return None


def _cache_items(settings: Settings) -> list[Item]:
    cache = settings.cache
    if not cache.is_dir():
        return []
    items = []
    for entry in sorted(cache.iterdir()):
        if entry.name in CACHE_WHAT and entry.is_dir() and not entry.is_symlink():
            items.append(Item("cache", str(entry), folder_size(entry),
                              f"{CACHE_WHAT[entry.name]}, in the pipeline's cache ({owner.CACHE_TAG})",
                              ref=str(entry)))
        elif owner.owned_form(entry.name) and owner.debris(entry):
            items.append(Item("cache", str(entry), folder_size(entry), "left by a run that was killed (its "
                              "owner has ended)", ref=str(entry)))
        elif entry.name != owner.CACHE_TAG:
            items.append(Item("cache", str(entry), None, "not a folder the pipeline makes: left alone",
                              keep=True))
    return items


def find(settings: Settings, *, docker_too: bool = True) -> list[Item]:
    """What clean would remove, and what it keeps that looks like the pipeline's; refuses a cache folder
    it cannot prove the pipeline's (UsageError)."""
    if problem := cache_problem(settings):
        raise UsageError(problem)
    items = _cache_items(settings)
    if not docker_too:
        return items
    prefix = f"{settings.image_prefix}/"
    c = engine.client()
    try:
        kept_images: set[str] = set()
        kept_volumes: set[str] = set()
        for box in c.containers.list(all=True, filters={"label": CONTAINER_LABEL}):
            image_name = box.attrs.get("Config", {}).get("Image", "")
            if not image_name.startswith(prefix):
                continue
            keep, why = _container_fate(box)
            name = f"{box.name} ({box.short_id}, {image_name})"
            items.append(Item("container", name, None, why, ref=box.id, keep=keep))
            if keep:
                kept_images.add(box.attrs.get("Image", ""))
                kept_volumes.update(m.get("Name", "") for m in box.attrs.get("Mounts", []))
        seen: set[str] = set()
        for image in c.images.list(filters={"label": images.LABEL}) + c.images.list():
            if image.id in seen:
                continue
            seen.add(image.id)
            ours = [t for t in image.tags or []
                    if t.startswith(prefix) and t[len(prefix):].startswith(IMAGE_NAMES)]
            labelled = images.LABEL in (image.labels or {})
            # Made under this prefix, as the image says (one without the label could be anyone's).
            mine = (image.labels or {}).get(images.LABEL_PREFIX) == settings.image_prefix
            size = image.attrs.get("Size")
            if image.id in kept_images and (ours or (labelled and not image.tags)):
                items.append(Item("image", ", ".join(ours) or image.short_id, size,
                                  "used by a container that is kept", keep=True))
            elif ours:
                for tag in ours:
                    items.append(Item("image", tag, size if tag == ours[0] else None,
                                      f"tagged under {prefix}", ref=tag))
            elif labelled and mine and not image.tags:
                items.append(Item("image", image.short_id, size,
                                  f"untagged, labelled {images.LABEL} (a rebuilt image of the pipeline)",
                                  ref=image.id))
        for volume in c.volumes.list():
            if not volume.name.startswith(f"{settings.volume_prefix}-"):
                continue
            mine = {toolchain.volume_name(settings, cache) for cache in toolchain.VOLUMES}
            if volume.name in kept_volumes:
                items.append(Item("volume", volume.name, None, "used by a container that is kept", keep=True))
            elif volume.name in mine:
                items.append(Item("volume", volume.name, None, "this user's compiler or Go cache volume",
                                  ref=volume.name))
            else:
                items.append(Item("volume", volume.name, None, "another user's cache volume: left alone",
                                  keep=True))
    except docker.errors.APIError as exc:
        raise DockerError(f"cannot list the pipeline's containers, images and volumes: "
                          f"{exc.explanation or exc}") from None
    return items


def _container_fate(box) -> tuple[bool, str]:
    """(keep, why) of a labelled container: kept while its owner may still run."""
    labels = box.labels or {}
    pid, where = labels.get(owner.PID_LABEL, ""), labels.get(owner.HOST_LABEL, "")
    running = box.status == "running"
    if pid.isdigit() and where == owner.host():
        if int(pid) == os.getpid() or owner.alive(int(pid)):
            return True, f"its owner, pid {pid} on this host, is running: left alone"
        return False, f"its owner, pid {pid} on this host, has ended"
    if pid and where:
        return True, f"its owner ran on host {where}: left alone (its owner may still run there)"
    if running:
        return True, "running, and no owner recorded: left alone"
    return False, "labelled by the pipeline, stopped, no owner recorded"


def remove(settings: Settings, items: list[Item]) -> list[str]:
    """Remove `items` that are not kept (containers first: they hold images and volumes); returns what
    could not go."""
    failed = []
    order = {"container": 0, "image": 1, "volume": 2, "cache": 3}
    doomed = [i for i in items if not i.keep]
    c = engine.client() if any(i.kind != "cache" for i in doomed) else None
    for item in sorted(doomed, key=lambda i: order[i.kind]):
        try:
            if item.kind == "cache":
                shutil.rmtree(item.ref)
            elif item.kind == "container":
                c.containers.get(item.ref).remove(force=True)
            elif item.kind == "image":
                c.images.remove(item.ref)
            else:
                c.volumes.get(item.ref).remove()
        except docker.errors.NotFound:
            continue
        except (docker.errors.APIError, OSError) as exc:
            failed.append(f"{item.kind} {item.name}: {getattr(exc, 'explanation', None) or exc}")
    if not failed and settings.cache.is_dir():
        with contextlib.suppress(OSError):
            left = {e.name for e in settings.cache.iterdir()}
            if left <= {owner.CACHE_TAG}:
                shutil.rmtree(settings.cache)
    return failed


def report(items: list[Item], *, dry_run: bool) -> str:
    verb = "would remove" if dry_run else "removed"
    lines = []
    for i in items:
        size = f" ({log_size(i.size)})" if i.size else ""
        lines.append(f"{'keeping' if i.keep else verb:12} {i.kind:9} {i.name}{size}: {i.why}")
    gone = [i for i in items if not i.keep]
    total = sum(i.size or 0 for i in gone)
    lines.append(f"{'would free' if dry_run else 'freed'} {log_size(total)} "
                 f"({len(gone)} item(s); container and volume sizes not counted)" if gone else
                 "nothing to clean")
    return "\n".join(lines)
