"""Builder stage: the target's builder image, rendered from docker/<template> and tagged by its hash.

    Plan ─▶ BuilderImage (ollama-pipeline/builder-<name>:<hash>)

An image whose tag exists is reused as it is: the tag is the hash of everything that went into it.
Debian-flavor builders start from a Debian base image (made with debootstrap when no registry answers);
vendor builders from AMD's or NVIDIA's image, which must be pullable or loaded.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config.settings import Settings
from pipeline.config.targets import Builder
from pipeline.gpu import tensile
from pipeline.infra import baseimage, images, registries, templates
from pipeline.stages.plan import Context, Plan
from pipeline.stages.results import BuilderImage


def render(templates_dir: Path, builder: Builder, base_image: str, debian_snapshot: str | None = None,
           serves: tuple[str, ...] = ()) -> str:
    """The builder's Dockerfile: docker/<template> rendered with the builder's table (and the Debian
    snapshot timestamp, when one pins the apt universe). With `serves` (the archs its targets' runtimes
    ask for), the rocBLAS Tensile files of every other arch are deleted where the packages are
    installed: no build copies them into its output and the image is smaller by gigabytes."""
    prune = tensile.shell_command(serves) if serves else ""
    return templates.render(templates_dir, builder.template, builder=builder, base_image=base_image,
                            debian_snapshot=debian_snapshot, tensile_prune=prune)


def key(plan: Plan, settings: Settings) -> object:
    return render(settings.templates_dir, plan.builder, plan.base_image, settings.debian_snapshot,
                  plan.builder_serves)


def image_tag(plan: Plan) -> str:
    return f"{plan.image_prefix}/builder-{plan.builder_name}:{plan.hashes['builder'][:16]}"


def run(ctx: Context) -> BuilderImage:
    """The builder image, built when its tag is absent."""
    plan, log, settings = ctx.plan, ctx.log, ctx.settings
    tag = image_tag(plan)
    if (found := images.find(tag)) is not None:
        ctx.stage.cached(f"image {tag} exists")
        return BuilderImage(tag=tag, id=found.id)
    if plan.builder.flavor == "vendor":
        baseimage.ensure_vendor(plan.base_image, log)
        buildargs = {}
    else:
        baseimage.ensure(plan.base_image, plan.builder.suite, settings, log)
        buildargs = {"DEBIAN_MIRROR": baseimage.mirror(settings)}
    for download in plan.builder.downloads:
        if override := settings.download_urls.get(download.name):
            log.line(f"{download.name}: fetched from {override} (checksum still {download.sha256[:12]}...)")
            buildargs[download.build_arg] = override
        elif download.url.startswith(registries.PLACEHOLDERS):
            buildargs[download.build_arg] = registries.expand(download.url, settings)
    log.line(f"building {tag} from docker/{plan.builder.template}")
    host_ca = settings.ca_bundle.read_bytes() if settings.ca_bundle else b""
    image_id = images.build(key(plan, settings), tag, log, buildargs=buildargs,
                           labels={"org.ollama-pipeline.builder": plan.builder_name,
                                   images.LABEL_HASH: plan.hashes["builder"]},
                           # The host's CA bundle (empty without one) for a download stage behind a
                           # TLS-inspecting proxy; it changes no hash and reaches no final image.
                           files={"host-ca.crt": host_ca},
                           what=f"builder image (docker/{plan.builder.template})")
    return BuilderImage(tag=tag, id=image_id)
