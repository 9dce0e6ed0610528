"""Docker images the pipeline makes: built from a Dockerfile text (the context holds nothing else, plus
files handed in explicitly), tagged, labelled, with the engine's output streamed into the log."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Mapping
from pathlib import Path

import docker.errors

from pipeline.errors import DockerError
from pipeline.infra import engine
from pipeline.infra.log import Log

# Every image and container the pipeline makes carries this label (value: what made it).
LABEL = "org.ollama-pipeline"
# The stage hash an image was made for (builder and runtime images).
LABEL_HASH = f"{LABEL}.hash"
# The image prefix it was made under (ollama-pipeline): `clean` of another prefix leaves it alone.
LABEL_PREFIX = f"{LABEL}.prefix"


def find(tag: str):
    """The image with this tag, or None."""
    try:
        return engine.client().images.get(tag)
    except docker.errors.ImageNotFound:
        return None


def save(tag: str):
    """The chunks of `docker save` of the image tagged `tag` (its name kept)."""
    return engine.client().images.get(tag).save(named=True)


def remove(tag: str) -> int:
    """Remove the image tagged `tag` from the engine (its layers go when nothing else uses them);
    returns its size, 0 when there was none."""
    found = find(tag)
    if found is None:
        return 0
    try:
        engine.client().images.remove(tag, noprune=False)
    except docker.errors.APIError as exc:
        raise DockerError(f"cannot remove image {tag}: {exc.explanation or exc}") from None
    return int(found.attrs.get("Size", 0))


def build(dockerfile: str, tag: str, log: Log, *, buildargs: Mapping[str, str] | None = None,
          labels: Mapping[str, str] | None = None, files: Mapping[str, Path | bytes] | None = None,
          what: str = "image") -> str:
    """Build `dockerfile` as `tag`; `files` (name in the context -> a file here, or its bytes) join the
    context.
    Returns the image id; a failed build is a DockerError naming the tag and the log."""
    context = _context(dockerfile, files or {})
    stream = engine.client().api.build(
        fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True, pull=False, decode=True,
        buildargs=dict(buildargs or {}),
        labels={LABEL: what, LABEL_PREFIX: tag.rpartition("/")[0], **(labels or {})},
        network_mode=engine.network_mode(),
    )
    # A RUN step can be silent for minutes (apt, a download): the heartbeat says what still runs.
    with log.heartbeat(f"docker build of {tag}"):
        for event in stream:
            if "stream" in event:
                for line in event["stream"].splitlines():
                    if line.strip():
                        log.line(line)
            elif "error" in event:
                detail = event.get("errorDetail", {}).get("message", event["error"])
                raise DockerError(f"{what} {tag} failed to build: {detail.strip()} (full log: {log.path})")
            elif "aux" in event:
                aux = event["aux"]
                log.line(f"image id {aux['ID']}" if isinstance(aux, dict) and "ID" in aux
                         else f"image {json.dumps(aux)}")
    return engine.client().images.get(tag).id


def _context(dockerfile: str, files: Mapping[str, Path | bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
        for name, source in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            if isinstance(source, bytes):
                info.size = len(source)
                tar.addfile(info, io.BytesIO(source))
                continue
            info.size = source.stat().st_size
            with open(source, "rb") as f:
                tar.addfile(info, f)
    buf.seek(0)
    return buf
