"""A build container owned by a context manager: started on enter, always removed on exit.

PIPELINE_KEEP_CONTAINERS=1 keeps it for debugging. Commands run through exec(), which echoes them and
streams their output into the log like the host runner does.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence

import docker.errors
from docker.types import Mount

from pipeline.errors import CommandError, DockerError
from pipeline.infra import engine, owner, runner
from pipeline.infra.log import Log

LABEL = "org.ollama-pipeline.build"
# The log a container writes to: tells apart containers of builds running side by side.
LOG_LABEL = "org.ollama-pipeline.log"


class Container:
    def __init__(self, image: str, log: Log, *, mounts: Sequence[Mount] = (), user: str | None = None,
                 env: Mapping[str, str] | None = None, workdir: str = "/", keep: bool = False,
                 name: str | None = None, command: Sequence[str] | None = ("sleep", "infinity")):
        self.image = image
        self.log = log
        self.mounts = list(mounts)
        self.user = user
        self.env = dict(env or {})
        self.workdir = workdir
        self.keep = keep
        self.name = name
        # What the container runs while commands are exec'd in it; None: the image's own entrypoint.
        self.command = list(command) if command is not None else None
        self._container = None

    def __enter__(self) -> Container:
        sweep_dead(self.log)
        try:
            self._container = engine.client().containers.run(
                self.image, self.command, detach=True, init=True, name=self.name,
                mounts=self.mounts, user=self.user, environment=self.env, working_dir=self.workdir,
                labels={LABEL: self.log.target, LOG_LABEL: str(self.log.path or ""), **owner.labels()},
                network_mode=engine.network_mode(),
            )
        except docker.errors.APIError as exc:
            raise DockerError(f"cannot start a container of {self.image}: {exc.explanation or exc}") from None
        self.log.line(f"container {self._container.short_id} of {self.image} started")
        return self

    def __exit__(self, *exc) -> None:
        if self._container is None:
            return
        if self.keep:
            self.log.line(f"keeping container {self._container.short_id} (PIPELINE_KEEP_CONTAINERS)")
            return
        # A second Ctrl-C (or the SIGTERM nox sends after SIGINT) must not cut the clean-up short.
        with _signals_held(), contextlib.suppress(docker.errors.NotFound):
            try:
                self._container.remove(force=True)
            except docker.errors.APIError as exc:
                # A removal the engine is still doing (a first attempt that outlasted the client's
                # timeout on a loaded machine) ends the container as well.
                if exc.status_code != 409 or "already in progress" not in str(exc):
                    raise
        self._container = None

    def exec(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
             workdir: str | None = None, capture: bool = False, user: str | None = None) -> str:
        """Run a command in the container (as `user`, else the container's). With capture its output is
        returned instead of logged."""
        assert self._container is not None, "exec outside the with-block"
        text = runner.echo(self.log, argv, where="container")
        api = engine.client().api
        exec_id = api.exec_create(self._container.id, list(argv), environment=dict(env or {}),
                                  workdir=workdir or self.workdir, user=user or self.user or "")["Id"]
        chunks: list[bytes] = []
        with self.log.heartbeat(runner.label(argv)):
            output = api.exec_start(exec_id, stream=True)
            if capture:
                chunks.extend(output)
            else:
                runner.stream(self.log, output)
        code = api.exec_inspect(exec_id)["ExitCode"]
        if code != 0:
            if capture:
                runner.stream(self.log, chunks)
            raise CommandError(text, code, where="container",
                               log=str(self.log.path) if self.log.path else None)
        return b"".join(chunks).decode("utf-8", "replace")


_swept = False


def sweep_dead(log: Log | None = None, *, force: bool = False) -> list[str]:
    """Remove the pipeline's containers whose owner process (same host) no longer runs: what a killed
    run left. Once per process, before its first container (`force` to run it again)."""
    global _swept
    if _swept and not force:
        return []
    _swept = True
    removed = []
    try:
        found = engine.client().containers.list(all=True, filters={"label": LABEL})
    except docker.errors.APIError:
        return removed
    for c in found:
        if owner.dead_labels(c.labels):
            try:
                c.remove(force=True)
            except docker.errors.APIError:
                continue
            removed.append(c.short_id)
            if log is not None:
                log.line(f"removed container {c.short_id} left by a killed run (pid "
                         f"{c.labels.get(owner.PID_LABEL)})")
    return removed


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
