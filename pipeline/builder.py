"""Builder images: the rendered docker/ template, built with the Docker SDK and tagged by its hash.

An image whose tag exists is reused as it is: the tag is the hash of everything that went into it.
"""

from __future__ import annotations

import io
import json
import os
import tarfile

import docker.errors

from . import baseimage, engine
from .errors import DockerError
from .log import Log, StageResult
from .plan import Plan
from .settings import Settings


def ensure(plan: Plan, settings: Settings, log: Log, result: StageResult) -> str:
    """Return the builder image's id, building it when its tag is absent."""
    client = engine.client()
    try:
        image = client.images.get(plan.image_tag)
        result.cached(f"image {plan.image_tag} exists")
        return image.id
    except docker.errors.ImageNotFound:
        pass
    if plan.builder.flavor == "vendor":
        baseimage.ensure_vendor(plan.base_image, log)
        buildargs = {}
    else:
        baseimage.ensure(plan.base_image, plan.builder.suite, settings, log)
        buildargs = {"DEBIAN_MIRROR": baseimage.mirror(settings)}
    for download in plan.builder.downloads:
        if override := os.environ.get(f"PIPELINE_URL_{download.name.upper()}"):
            log.line(f"{download.name}: fetched from {override} (checksum still {download.sha256[:12]}...)")
            buildargs[download.build_arg] = override
    log.line(f"building {plan.image_tag} from docker/{plan.builder.template}")
    context = _context(plan.dockerfile, settings)
    stream = client.api.build(
        fileobj=context, custom_context=True, tag=plan.image_tag, rm=True, forcerm=True, pull=False,
        decode=True, buildargs=buildargs,
        labels={"org.ollama-pipeline.builder": plan.builder_name,
                "org.ollama-pipeline.hash": plan.hashes["builder"]},
    )
    for event in stream:
        if "stream" in event:
            for line in event["stream"].splitlines():
                if line.strip():
                    log.line(line)
        elif "error" in event:
            detail = event.get("errorDetail", {}).get("message", event["error"])
            raise DockerError(f"builder image {plan.image_tag} failed: {detail.strip()} "
                              f"(template docker/{plan.builder.template}; full log: {log.path})")
        elif "aux" in event:
            log.line(f"image {json.dumps(event['aux'])}")
    return client.images.get(plan.image_tag).id


def _context(dockerfile: str, settings: Settings | None = None) -> io.BytesIO:
    """A build context holding the Dockerfile and host-ca.crt, the host's CA bundle (empty without one),
    which a download stage may use to pass a TLS-inspecting proxy: nothing from the project leaks in."""
    buf = io.BytesIO()
    ca = settings.ca_bundle.read_bytes() if settings and settings.ca_bundle else b""
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", dockerfile.encode()), ("host-ca.crt", ca)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf
