"""A target resolved up front: everything its stages need, known before any work starts.

    targets.toml ─▶ Target ─▶ Plan (builder, backends, patches, build steps, version, hashes)

The plan is the one input every stage shares. Its `hashes` come from the stage table
(pipeline.stages.STAGES): each stage's hash covers its own inputs and the hashes of the stages it takes
results from, so a stage whose hash has not changed reuses its earlier result. `Context` is what a
stage's run gets besides the results it needs: the plan, the settings, the log and a handle to say
"cached".
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline import formats
from pipeline.config import places, series
from pipeline.config.places import Places
from pipeline.config.settings import Settings
from pipeline.config.targets import Backend, Builder, LlamaCpp, Matrix, Target, tag_version
from pipeline.infra import baseimage
from pipeline.infra.log import Log, StageResult
from pipeline.records import record
from pipeline.upstream import layouts
from pipeline.upstream.layouts import Step


@record
class Plan:
    target: Target
    builder_name: str
    builder: Builder
    backends: tuple[Backend, ...]
    source_url: str
    upstream_version: str
    version: str
    patches: tuple[series.Patch, ...]
    # The Debian base image a Debian-flavor builder starts from, or the vendor image.
    base_image: str
    steps: tuple[Step, ...]
    # SOURCE_DATE_EPOCH when the user set one; else the upstream commit's time (known after source).
    source_date_epoch: int | None
    image_prefix: str
    # The target's own upstream tag in targets.toml: a build at another pinned tag (--ref) goes to its
    # own output folder, so versions never overwrite each other.
    default_tag: str = ""
    # The archs the runtimes of every target of this builder ask for (Matrix.serves).
    builder_serves: tuple[str, ...] = ()
    # Where the llama.cpp of versions that fetch it comes from, and its pins.
    llama_cpp: LlamaCpp = dataclasses.field(default_factory=LlamaCpp)
    # The host builder (Builder.host) that compiles what is not GPU code, its base image and the archs
    # its targets serve; empty when the target's builder compiles everything (`host_builder` then
    # names the builder itself).
    host_name: str = ""
    host: Builder | None = None
    host_base_image: str = ""
    host_serves: tuple[str, ...] = ()
    hashes: Mapping[str, str] = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def tag(self) -> str:
        return self.target.source.tag

    @property
    def out(self) -> str:
        return places.out_folder(self.name, self.tag, self.default_tag)

    @property
    def host_builder(self) -> tuple[str, Builder, str, tuple[str, ...]]:
        """(name, builder, base image, served archs) of the builder compiling what is not GPU code."""
        if self.host is None:
            return self.builder_name, self.builder, self.base_image, self.builder_serves
        return self.host_name, self.host, self.host_base_image, self.host_serves

    @property
    def archive_name(self) -> str:
        return formats.archive_name(self.upstream_version, self.name, self.target.package.format)


@record
class Context:
    """What a stage's run gets besides the results of the stages it needs."""

    name: str
    plan: Plan
    settings: Settings
    log: Log
    # The stage's line in the log (cached / done); None while a stage discards its outputs (--lean).
    stage: StageResult | None
    # The folder of the stage's record (Stage.where), and the staging copy of it a staged run works in.
    folder: Path | None = None
    staging: Path | None = None

    @property
    def hash(self) -> str:
        """This stage's hash."""
        return self.plan.hashes[self.name]

    @property
    def places(self) -> Places:
        return self.settings.places


def resolve(matrix: Matrix, target: Target, settings: Settings,
            patch_series: Sequence[series.Patch] | None = None) -> Plan:
    """The plan of one target, without hashes (pipeline.stages.plan_for adds them).

    The series is read from settings.patches_dir unless given."""
    builder = matrix.builders[target.builder]
    host = matrix.builders[builder.host] if builder.host else None
    backends = tuple(matrix.backends[b] for b in target.backends)
    if patch_series is None:
        patch_series = matrix.patches(settings.patches_dir)
    patches = tuple(series.for_target(patch_series, target.name, tag_version(target.source.tag)))
    upstream_version = target.source.tag.removeprefix("v")
    version = target.source.version_format.format(version=upstream_version, target=target.name)
    return Plan(
        target=target,
        builder_name=target.builder,
        builder=builder,
        backends=backends,
        source_url=settings.source or target.source.url,
        upstream_version=upstream_version,
        version=version,
        patches=patches,
        base_image=builder.base_image or baseimage.name(settings.image_prefix, builder.suite),
        steps=tuple(layouts.for_tag(target.source.tag, matrix.layouts).steps(
            target, backends, builder, version, matrix.release_build_at(target.source.tag), host)),
        source_date_epoch=settings.source_date_epoch,
        image_prefix=settings.image_prefix,
        default_tag=matrix.targets[target.name].source.tag if target.name in matrix.targets else "",
        llama_cpp=matrix.llama_cpp,
        builder_serves=matrix.serves(target.builder),
        host_name=builder.host,
        host=host,
        host_base_image=(host.base_image or baseimage.name(settings.image_prefix, host.suite))
        if host else "",
        host_serves=matrix.serves(builder.host) if host else (),
    )
