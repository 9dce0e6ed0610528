"""Builder stages: the target's builder image and its host builder's, rendered from docker/<template>
and tagged by the hash of what went into them.

    Plan ─▶ BuilderImage (ollama-pipeline/builder-<name>:<hash>)

An image whose tag exists is reused as it is: the tag is the hash of everything that went into it, so a
host builder (Builder.host: the bullseye builder that compiles a GPU target's CPU backends and
bin/ollama) is the very image its own targets build with. A target without a host builder gets its own
builder as host. Debian-flavor builders start from a Debian base image (made with debootstrap when no
registry answers); vendor builders from AMD's or NVIDIA's image, which must be pullable or loaded.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config.settings import Settings
from pipeline.config.targets import Builder
from pipeline.gpu import tensile
from pipeline.hashing import digest
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


def host_key(plan: Plan, settings: Settings) -> object:
    _, host, base_image, serves = plan.host_builder
    return render(settings.templates_dir, host, base_image, settings.debian_snapshot, serves)


def tag_for(image_prefix: str, name: str, dockerfile: str) -> str:
    """The tag of a builder image: its name and the hash of its Dockerfile (the hash the builder stage of
    version 1 had, so that images made before keep their tags)."""
    return f"{image_prefix}/builder-{name}:{digest(['builder', 1, [], dockerfile])[:16]}"


def image_tag(plan: Plan, settings: Settings) -> str:
    return tag_for(plan.image_prefix, plan.builder_name, key(plan, settings))


def host_tag(plan: Plan, settings: Settings) -> str:
    return tag_for(plan.image_prefix, plan.host_builder[0], host_key(plan, settings))


def run(ctx: Context) -> BuilderImage:
    """The builder image, built when its tag is absent."""
    plan = ctx.plan
    return _image(ctx, plan.builder_name, plan.builder, plan.base_image, key(plan, ctx.settings))


def run_host(ctx: Context) -> BuilderImage:
    """The host builder's image (the target's own builder's, when it has no host), built when absent."""
    name, host, base_image, _ = ctx.plan.host_builder
    return _image(ctx, name, host, base_image, host_key(ctx.plan, ctx.settings))


def _image(ctx: Context, name: str, builder: Builder, base_image: str, dockerfile: str) -> BuilderImage:
    plan, log, settings = ctx.plan, ctx.log, ctx.settings
    tag = tag_for(plan.image_prefix, name, dockerfile)
    if (found := images.find(tag)) is not None:
        ctx.stage.cached(f"image {tag} exists")
        return BuilderImage(tag=tag, id=found.id)
    if builder.flavor == "vendor":
        baseimage.ensure_vendor(base_image, log)
        buildargs = {}
    else:
        baseimage.ensure(base_image, builder.suite, settings, log)
        buildargs = {"DEBIAN_MIRROR": baseimage.mirror(settings)}
    for download in builder.downloads:
        if override := settings.download_urls.get(download.name):
            log.line(f"{download.name}: fetched from {override} (checksum still {download.sha256[:12]}...)")
            buildargs[download.build_arg] = override
        elif download.url.startswith(registries.PLACEHOLDERS):
            buildargs[download.build_arg] = registries.expand(download.url, settings)
    log.line(f"building {tag} from docker/{builder.template}")
    host_ca = settings.ca_bundle.read_bytes() if settings.ca_bundle else b""
    image_id = images.build(dockerfile, tag, log, buildargs=buildargs,
                           labels={"org.ollama-pipeline.builder": name,
                                   images.LABEL_HASH: digest(["builder", 1, [], dockerfile])},
                           # The host's CA bundle (empty without one) for a download stage behind a
                           # TLS-inspecting proxy; it changes no hash and reaches no final image.
                           files={"host-ca.crt": host_ca},
                           what=f"builder image (docker/{builder.template})")
    return BuilderImage(tag=tag, id=image_id)
