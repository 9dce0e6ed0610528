"""`clean`: remove what the pipeline keeps between runs, and say how much space that freed.

* the cache folder (Settings.cache: mirrors, exported trees, finished builds, scratch);
* containers labelled org.ollama-pipeline.build (build, verify and tool containers);
* images labelled org.ollama-pipeline (builder, base and runtime images made through infra/images.py)
  and images tagged under the image prefix (`ollama-pipeline/...`);
* named volumes whose name starts with the volume prefix (ccache, Go caches).

`dry_run` lists the same without removing anything. dist/ is left alone: it holds the packages.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import docker.errors

from pipeline.config.settings import Settings
from pipeline.errors import DockerError
from pipeline.infra import engine, images
from pipeline.infra.container import LABEL as CONTAINER_LABEL
from pipeline.infra.log import size as log_size
from pipeline.records import record


@record(positional=True)
class Item:
    kind: str  # cache | container | image | volume
    name: str
    size: int | None  # bytes, where known


def folder_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def find(settings: Settings, *, docker_too: bool = True) -> list[Item]:
    items: list[Item] = []
    if settings.cache.exists():
        items.append(Item("cache", str(settings.cache), folder_size(settings.cache)))
    if not docker_too:
        return items
    c = engine.client()
    try:
        for box in c.containers.list(all=True, filters={"label": CONTAINER_LABEL}):
            items.append(Item("container", f"{box.name} ({box.short_id})", None))
        seen: set[str] = set()
        for image in c.images.list(filters={"label": images.LABEL}) + c.images.list():
            tags = image.tags or []
            ours = images.LABEL in (image.labels or {}) or any(
                t.startswith(f"{settings.image_prefix}/") for t in tags)
            if ours and image.id not in seen:
                seen.add(image.id)
                items.append(Item("image", ", ".join(tags) or image.short_id, image.attrs.get("Size")))
        for volume in c.volumes.list():
            if volume.name.startswith(f"{settings.volume_prefix}-"):
                items.append(Item("volume", volume.name, None))
    except docker.errors.APIError as exc:
        raise DockerError(f"cannot list the pipeline's containers, images and volumes: "
                          f"{exc.explanation or exc}") from None
    return items


def remove(settings: Settings, items: list[Item]) -> list[str]:
    """Remove `items` (containers first: they hold images and volumes); returns what could not go."""
    failed = []
    order = {"container": 0, "image": 1, "volume": 2, "cache": 3}
    c = engine.client() if any(i.kind != "cache" for i in items) else None
    for item in sorted(items, key=lambda i: order[i.kind]):
        try:
            if item.kind == "cache":
                shutil.rmtree(settings.cache)
            elif item.kind == "container":
                c.containers.get(item.name.rsplit("(", 1)[-1].rstrip(")")).remove(force=True)
            elif item.kind == "image":
                for ref in item.name.split(", "):
                    c.images.remove(ref, force=True)
            else:
                c.volumes.get(item.name).remove(force=True)
        except docker.errors.NotFound:
            continue
        except (docker.errors.APIError, OSError) as exc:
            failed.append(f"{item.kind} {item.name}: {getattr(exc, 'explanation', None) or exc}")
    return failed




def report(items: list[Item], *, dry_run: bool) -> str:
    verb = "would remove" if dry_run else "removed"
    lines = [f"{verb} {i.kind:9} {i.name}" + (f" ({log_size(i.size)})" if i.size else "") for i in items]
    total = sum(i.size or 0 for i in items)
    lines.append(f"{'would free' if dry_run else 'freed'} {log_size(total)} "
                 f"({len(items)} item(s); container and volume sizes not counted)" if items else
                 "nothing to clean")
    return "\n".join(lines)
