"""The stages of a target's build, as one table.

    targets.toml ─▶ plan ─▶ source ─▶ patches ─┐
                            builder ───────────┤
                            host_builder ──────┴▶ build ─▶ package ─▶ verify ─▶ image

Each entry names the stage, the stages whose results it takes (`needs`, passed to its run as keyword
arguments of the same names), a version bumped when the stage changes how it turns inputs into
outputs, a `key` giving its own inputs, and its `run`. A stage's hash folds its key, its version and
the hashes of what it needs, so every hash is known before any work starts (`nox -s plan`) and a stage
whose hash is unchanged reuses its result. The table is the one list of stages: planning, running
(pipeline.orchestrate), the command line's stage options, the release's assets, benchmarks and CI
cache keys all read it. Adding a stage is one entry here, one module and its result type.

A stage with a `result` type and a `where` keeps a record of its result there (<where>/<name>.json,
written and read by the orchestrator); a stage without one checks for earlier work itself (the builder
asks the engine for its image, the package stage reads the manifest it writes with its archive).

Below the table, a stage module imports the layers under stages/ (config, infra, the subject
packages), the plan, the result types and the manifest's schema; never another stage.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.config import series, values
from pipeline.config.places import Places
from pipeline.config.settings import Settings
from pipeline.config.targets import Matrix, Target
from pipeline.errors import ConfigError
from pipeline.hashing import digest
from pipeline.records import record
from pipeline.stages import build, builder, image, package, patches, source, verify
from pipeline.stages.plan import Plan, resolve
from pipeline.stages.results import BuildResult, PatchedTree, RuntimeImage, SourceTree, Verified


@record
class Option:
    """A stage's command-line flag: it leaves a default stage out, or asks for an optional one."""

    flag: str
    help: str


@record
class Stage:
    name: str
    version: int
    needs: tuple[str, ...]
    key: Callable[[Plan, Settings], Any]
    run: Callable[..., Any]
    # The result type; with `where`, the record of a result lies at <where(places, plan, hash)>/<name>.json.
    result: type | None = None
    where: Callable[[Places, Plan, str], Path] | None = None
    # The run works in a staging copy of `where` (ctx.staging) that replaces it only when the run and
    # its record are complete; without, it writes beside the record (the target's dist folder).
    staged: bool = False
    # Whether a recorded result still holds, beyond its hash: the reason for the log, or None to do
    # the work again. Gets the context, the recorded result and the needed results as keywords.
    reuse: Callable[..., str | None] | None = None
    # Runs unless the user leaves it out (--no-verify); an optional stage runs only when asked (--image).
    default: bool = True
    option: Option | None = None
    # The files of the target's dist folder the stage leaves for the release (its record lists them).
    artifacts: Callable[[Any], Sequence[Path]] | None = None
    description: str = ""
    # With --lean, run after the target's last stage: frees what the stage keeps for later runs (its
    # cache, an image in the engine) and returns the bytes freed. None: nothing worth freeing.
    discard: Callable[[Any, Any], int] | None = None


def in_target_folder(places: Places, plan: Plan, stage_hash: str) -> Path:
    """`where` of a stage whose record lies beside the package: dist/<target>/."""
    return places.target(plan.out)


STAGES: tuple[Stage, ...] = (
    Stage(name="source", version=2, needs=(), key=source.key, run=source.run, result=SourceTree,
          where=source.where, staged=True, reuse=source.reuse,
          description="the pinned upstream commit, verified and exported"),
    Stage(name="patches", version=2, needs=("source",), key=patches.key, run=patches.run, result=PatchedTree,
          where=patches.where, staged=True, reuse=patches.reuse,
          description="the target's patch series applied"),
    Stage(name="builder", version=1, needs=(), key=builder.key, run=builder.run,
          description="the builder image"),
    # The builder of everything that is not GPU code (Builder.host: bullseye for the ROCm
    # targets); the target's own builder when it names none. Also where packaging compiles the glibc
    # compatibility library.
    Stage(name="host_builder", version=1, needs=(), key=builder.host_key, run=builder.run_host,
          description="the host builder image (CPU backends, bin/ollama)"),
    Stage(name="build", version=3, needs=("patches", "builder", "host_builder"), key=build.key,
          run=build.run, result=BuildResult, where=build.where, staged=True, reuse=build.reuse,
          discard=build.discard,
          description="Ollama's cmake and go build: GPU backends in the builder, the rest in the host's"),
    Stage(name="package", version=4, needs=("build", "host_builder"), key=package.key, run=package.run,
          artifacts=package.artifacts, description="the archive and its manifest"),
    Stage(name="verify", version=2, needs=("package",), key=verify.key, run=verify.run, result=Verified,
          where=in_target_folder, reuse=verify.reuse,
          option=Option(flag="--no-verify", help="skip verifying the package in a clean container"),
          description="the archive checked on its runtime floor"),
    Stage(name="image", version=1, needs=("verify",), key=image.key, run=image.run, result=RuntimeImage,
          where=in_target_folder, reuse=image.reuse, default=False, discard=image.discard,
          option=Option(flag="--image", help="also make the runtime Docker image of the verified package"),
          description="the runtime Docker image"),
)


def names(table: Sequence[Stage] | None = None) -> list[str]:
    return [s.name for s in (STAGES if table is None else table)]


def hashes(plan: Plan, settings: Settings, table: Sequence[Stage] | None = None) -> dict[str, str]:
    """Every stage's hash, in table order: its name, version, key and the hashes of what it needs."""
    out: dict[str, str] = {}
    for stage in STAGES if table is None else table:
        out[stage.name] = digest([stage.name, stage.version, [out[n] for n in stage.needs],
                                  stage.key(plan, settings)])
    return out


def plan_for(matrix: Matrix, target: Target, settings: Settings,
             patch_series: Sequence[series.Patch] | None = None,
             table: Sequence[Stage] | None = None) -> Plan:
    """A target's plan with the hash of every stage."""
    plan = resolve(matrix, target, settings, patch_series)
    plan = dataclasses.replace(plan, hashes=types.MappingProxyType(hashes(plan, settings, table)))
    _check_images(plan, matrix, settings)
    return plan


def _check_images(plan: Plan, matrix: Matrix, settings: Settings) -> None:
    """The image references the plan will make or use are ones Docker takes (its reference grammar,
    lengths included): found here, not at the image stage after the compile."""
    where, made = f"{matrix.path}: [targets.{plan.name}]", plan.hashes
    refs = []
    if "builder" in made:
        table = f"{matrix.path}: [builders.{plan.builder_name}]"
        refs += [(builder.image_tag(plan, settings), f"{table} (the builder image)"),
                 (plan.base_image, f"{table} {'base_image' if plan.builder.base_image else 'suite'} "
                                   "(the base image)")]
    if "host_builder" in made and plan.host is not None:
        table = f"{matrix.path}: [builders.{plan.host_name}]"
        refs += [(builder.host_tag(plan, settings), f"{table} (the host builder image)"),
                 (plan.host_base_image, f"{table} {'base_image' if plan.host.base_image else 'suite'} "
                                        "(the host builder's base image)")]
    if "image" in made:
        refs.append((image.tag(plan), f"{where} source.tag / source.version_format (the runtime image, "
                                      f"version {plan.version})"))
    for ref, what in refs:
        if problem := values.image_ref_problem(ref):
            raise ConfigError(f"{what}: {ref!r} is not an image reference Docker takes ({problem})")


def select(table: Sequence[Stage], *, skip: Sequence[str] = (), add: Sequence[str] = ()) -> list[Stage]:
    """The stages a run does: the default ones and those asked for, less those left out and every stage
    that needs one left out."""
    chosen: list[Stage] = []
    done: set[str] = set()
    for stage in table:
        wanted = (stage.default or stage.name in add) and stage.name not in skip
        if wanted and all(n in done for n in stage.needs):
            chosen.append(stage)
            done.add(stage.name)
    return chosen


def needed(table: Sequence[Stage], name: str) -> set[str]:
    """The stages `name` needs, directly or through the stages it needs."""
    by_name = {s.name: s for s in table}
    found: set[str] = set()
    todo = list(by_name[name].needs)
    while todo:
        n = todo.pop()
        if n not in found:
            found.add(n)
            todo.extend(by_name[n].needs)
    return found


def record_file(stage: Stage, folder: Path) -> Path:
    """Where a stage's record lies in its folder."""
    return folder / f"{stage.name}.json"
