"""The unit tier's Docker guard: it must stop real pipeline code before it reaches an engine."""

from __future__ import annotations

import pytest

import docker
import pipeline.infra.engine
from pipeline import stages
from pipeline.infra.log import StageResult
from pipeline.stages import builder
from pipeline.stages.plan import Context

from .conftest import DockerEngineReached


def test_engine_client_is_refused_with_a_clear_message(docker_guard):
    with pytest.raises(DockerEngineReached, match="unit tests run without Docker"):
        pipeline.infra.engine.client()
    assert docker_guard.calls == ["pipeline.infra.engine.client()"]
    docker_guard.calls.clear()  # expected here; any other test reaching the engine fails


@pytest.mark.parametrize("reach", [lambda: docker.from_env(),
                                   lambda: docker.DockerClient(base_url="tcp://x:1")])
def test_docker_sdk_entry_points_are_refused(docker_guard, reach):
    with pytest.raises(DockerEngineReached):
        reach()
    assert len(docker_guard.calls) == 1
    docker_guard.calls.clear()


def test_builder_stage_is_stopped_before_it_reaches_an_engine(docker_guard, matrix, settings, log):
    p = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    with pytest.raises(DockerEngineReached):
        builder.run(Context(name="builder", plan=p, settings=settings, log=log, stage=StageResult()))
    assert docker_guard.calls == ["pipeline.infra.engine.client()"]
    docker_guard.calls.clear()
