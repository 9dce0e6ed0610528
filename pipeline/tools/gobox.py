"""A Go toolchain container for the maintainer tools: a target's builder image with a source tree at
/src (writable) and the per-user toolchain caches (the patch tooling's `go test`, the memory
workbench)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

from docker.types import Mount

from pipeline import orchestrate, stages
from pipeline.config.settings import Settings
from pipeline.config.targets import Matrix
from pipeline.infra import toolchain
from pipeline.infra.container import Container
from pipeline.infra.log import Log
from pipeline.upstream import layouts


def go_env(matrix: Matrix, ref: str, go_target: str = "cpu") -> dict[str, str]:
    """The environment that gives the go commands of upstream `ref` the Go its go.mod needs in the
    builder of `go_target` (PATH with that toolchain first, as the build's go steps get it; empty when
    the builder's default Go is new enough). Builders run Go with GOTOOLCHAIN=local."""
    target = matrix.targets[go_target]
    if ref != target.source.tag:
        target = dataclasses.replace(target, source=dataclasses.replace(target.source, tag=ref))
    return layouts.go_path(target, matrix.builders[target.builder])


def builder_image(matrix: Matrix, settings: Settings, log: Log, go_target: str = "cpu") -> str:
    """The tag of the target's builder image (built when missing)."""
    plan = stages.plan_for(matrix, matrix.targets[go_target], settings)
    return orchestrate.results_of(plan, settings, log, ["builder"])["builder"].tag


@contextlib.contextmanager
def go_container(matrix: Matrix, settings: Settings, log: Log, tree: Path, go_target: str = "cpu", *,
                 image: str | None = None, extra: Sequence[Mount] = (),
                 ref: str | None = None) -> Iterator[Container]:
    """The builder of `go_target` (or `image`) with `tree` at /src and the toolchain caches; `extra`
    mounts on top. With `ref`, the Go that upstream version needs comes first on PATH (go_env)."""
    image = image or builder_image(matrix, settings, log, go_target)
    mounts, env = toolchain.mounts(settings)
    if ref is not None:
        env.update(go_env(matrix, ref, go_target))
    mounts.append(Mount(toolchain.SRC, str(tree), type="bind"))
    mounts.extend(extra)
    with Container(image, log, mounts=mounts, user=toolchain.user(), env=env, workdir=toolchain.SRC,
                   keep=settings.keep_containers) as box:
        yield box
