"""The stages of a target's build, as one table.

    targets.toml ─▶ plan ─▶ source ─▶ patches ─┐
                            builder ───────────┴▶ build ─▶ package ─▶ verify ─▶ image

Each entry names the stage, the stages whose results it takes (`needs`, passed to its run as keyword
arguments of the same names), a version bumped when the stage changes how it turns inputs into
outputs, a `key` giving its own inputs, and its `run`. A stage's hash folds its key, its version and
the hashes of what it needs, so every hash is known before any work starts (`nox -s plan`) and a stage
whose hash is unchanged reuses its result. The table is the one list of stages: planning, running
(pipeline.orchestrate), benchmarks and CI cache keys all read it. Adding a stage is one entry here and
one module.

Each stage module imports only pipeline.config, pipeline.infra, the plan and the result types.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Sequence
from typing import Any

from pipeline.config import series
from pipeline.config.settings import Settings
from pipeline.config.targets import Matrix, Target
from pipeline.hashing import digest
from pipeline.stages import build, builder, image, package, patches, source, verify
from pipeline.stages.plan import Plan, resolve
from pipeline.records import record


@record
class Stage:
    name: str
    version: int
    needs: tuple[str, ...]
    key: Callable[[Plan, Settings], Any]
    run: Callable[..., Any]
    # Runs unless the user leaves it out (--no-verify); an optional stage runs only when asked (--image).
    default: bool = True
    description: str = ""
    # With --lean, run after the target's last stage: frees what the stage keeps for later runs (its
    # cache, an image in the engine) and returns the bytes freed. None: nothing worth freeing.
    discard: Callable[[Any, Any], int] | None = None


STAGES: tuple[Stage, ...] = (
    Stage(name="source", version=2, needs=(), key=source.key, run=source.run,
          description="the pinned upstream commit, verified and exported"),
    Stage(name="patches", version=2, needs=("source",), key=patches.key, run=patches.run,
          description="the target's patch series applied"),
    Stage(name="builder", version=1, needs=(), key=builder.key, run=builder.run,
          description="the builder image"),
    Stage(name="build", version=2, needs=("patches", "builder"), key=build.key, run=build.run,
          discard=build.discard, description="Ollama's cmake and go build in the builder"),
    Stage(name="package", version=3, needs=("build",), key=package.key, run=package.run,
          description="the archive and its manifest"),
    Stage(name="verify", version=1, needs=("package",), key=verify.key, run=verify.run,
          description="the archive checked on its runtime floor"),
    Stage(name="image", version=1, needs=("verify",), key=image.key, run=image.run, default=False,
          discard=image.discard, description="the runtime Docker image"),
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
             patch_series: Sequence[series.Patch] | None = None, table: Sequence[Stage] | None = None) -> Plan:
    """A target's plan with the hash of every stage."""
    plan = resolve(matrix, target, settings, patch_series)
    return dataclasses.replace(plan, hashes=types.MappingProxyType(hashes(plan, settings, table)))


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
