from __future__ import annotations

import fcntl

import pytest

from pipeline import orchestrate, stages
from pipeline.errors import PipelineError


def test_second_build_of_the_same_target_is_refused_while_one_runs(matrix, settings):
    plan = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    lock = settings.cache / "locks" / "cpu.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:
        held.write("4242")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(PipelineError, match=r"another build of cpu is running \(pid 4242"):
            orchestrate.build_target(plan, settings)
    assert not (settings.dist / "cpu" / "build.log").exists()
