"""kill -9 in the middle of a run: the previous good output stays, and what the killed process left
(a container running `sleep infinity`, a staging folder) carries its owner and is removed by the next
run. Real Docker engine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from pipeline.config.settings import Settings
from pipeline.infra import baseimage, container, owner
from pipeline.infra.log import Log

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from pipeline.infra import fsutil
    from pipeline.infra.container import Container
    from pipeline.infra.log import Log

    image, final = sys.argv[1], Path(sys.argv[2])
    with Log("debris", final.parent / "debris.log") as log:
        with fsutil.staging_dir(final) as staging:
            (staging / "half-exported").write_text("partial")
            with Container(image, log) as box:
                print(box._container.id, flush=True)
                time.sleep(600)
""")


def test_kill_9_leaves_the_last_good_output_and_the_next_run_removes_the_debris(engine, tmp_path, cache_dir):
    settings = Settings(dist=tmp_path / "dist", cache=cache_dir)
    with Log("debris", tmp_path / "setup.log") as log:
        image = baseimage.name(settings.image_prefix, "trixie")
        baseimage.ensure(image, "trixie", settings, log)
    final = tmp_path / "dist" / "cpu"
    final.mkdir(parents=True)
    (final / "good").write_text("the last good build")

    child = subprocess.Popen([sys.executable, "-c", CHILD, image, str(final)], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        container_id = child.stdout.readline().strip()
        assert container_id, "the child did not start its container"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)

        # Left behind, each naming its owner.
        left = engine.containers.get(container_id)
        assert left.labels[owner.PID_LABEL] == str(child.pid)
        debris = [p for p in final.parent.iterdir() if p.name.endswith(".partial")]
        assert debris and all(f".p{child.pid}-" in p.name for p in debris)
        assert (final / "good").read_text() == "the last good build"

        # The next run: its first container sweeps dead owners' containers; a staging folder sweeps beside it.
        assert container_id[:12] in container.sweep_dead(force=True)
        owner.sweep(final.parent)
        assert not [p for p in final.parent.iterdir() if p.name.endswith(".partial")]
        assert container_id not in [c.id for c in engine.containers.list(all=True)]
        assert (final / "good").read_text() == "the last good build"
    finally:
        if child.poll() is None:
            child.kill()
        for c in engine.containers.list(all=True, filters={"label": f"{owner.PID_LABEL}={child.pid}"}):
            c.remove(force=True)
