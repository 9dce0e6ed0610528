"""Every error the pipeline raises, in one hierarchy, caught once at the command-line edge.

Each error carries a message written for the user (what is wrong, where, how to fix it) and the exit
code the command ends with; every class has its own code (the README lists them). Subclasses of
Exception, so nox and pytest see ordinary failures. `--traceback` (or PIPELINE_TRACEBACK=1) shows the
Python traceback of an error; without it the user sees one line.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: a failure the user can act on."""

    exit_code = 1
    # The log that tells more, when the message does not name it (set where the error passes a log).
    log_path = None


class ConfigError(PipelineError):
    """targets.toml, a policy, a patch header, a scenario or a setting is wrong."""

    exit_code = 2


class SelectionError(ConfigError):
    """A target selector matched nothing, or the selection is contradictory."""

    exit_code = 10


class UsageError(ConfigError):
    """A command-line argument or environment variable has a bad value."""

    exit_code = 11


class SourceError(PipelineError):
    """The upstream source could not be fetched, verified or exported."""

    exit_code = 3


class PatchError(PipelineError):
    """A patch of the series does not apply."""

    exit_code = 4


class DockerError(PipelineError):
    """The Docker engine is unreachable, or an image or container could not be made."""

    exit_code = 5


class CommandError(PipelineError):
    """A command (on the host or in a container) exited non-zero or ran past its time limit."""

    exit_code = 6

    def __init__(self, command: str, returncode: int | None, where: str = "host", log: str | None = None,
                 *, timeout: float | None = None):
        self.command = command
        self.returncode = returncode
        # Set when the command was still running at its time limit and was ended (returncode None).
        self.timeout = timeout
        hint = f"; full log: {log}" if log else ""
        what = (f"did not finish within {timeout:g}s and was ended" if timeout is not None
                else f"failed with exit code {returncode}")
        super().__init__(f"command {what} ({where}): {command}{hint}")


class PackageError(PipelineError):
    """The build output could not be packaged, or an archive or release is not what it claims."""

    exit_code = 7


class GpuCodeError(PipelineError):
    """A built GPU backend holds code for other archs than the target asks for."""

    exit_code = 8


class ClosureError(PackageError):
    """The package's libraries cannot all be resolved, or would not load on the policy's floor."""

    exit_code = 9

    def __init__(self, message: str, closure=None):
        super().__init__(message)
        self.closure = closure


class VerifyError(PackageError):
    """A package failed verification on its runtime floor."""

    exit_code = 12


class ModelRunError(VerifyError):
    """A package could not serve, import the tiny model or generate (the log has the server's tail)."""

    exit_code = 17

    def __init__(self, step: str, message: str, server_log: str = "", output: str = "", tail: int = 40):
        self.step, self.server_log, self.output = step, server_log, output

        def last(text: str) -> str:
            return "\n".join("    " + line for line in text.rstrip().splitlines()[-tail:])

        text = f"model run failed at {step}: {message}"
        if output.strip():
            text += "\n  output:\n" + last(output)
        logged = last(server_log) if server_log.strip() else "    (empty)"
        text += f"\n  server log (last {tail} lines):\n" + logged
        super().__init__(text)


class PublishError(PipelineError):
    """Publishing a release with `gh` failed; re-running the publish step continues where it stopped."""

    exit_code = 16


class ExpectationFailed(PipelineError):
    """A memory scenario's expectation does not hold."""

    exit_code = 13


class FileProblem(PipelineError):
    """A file or folder cannot be read or written (permissions, a full disk, a bad encoding)."""

    exit_code = 14


class InternalError(PipelineError):
    """An unexpected failure inside the pipeline (a bug): run again with --traceback and report it."""

    exit_code = 15


# Ended by Ctrl-C or SIGTERM: what a shell reports for SIGINT.
INTERRUPTED = 130
# The reader of the output went away (`| head`): what a shell reports for a command ended by SIGPIPE.
CLOSED_PIPE = 141


def one_line(text: str) -> str:
    """A message as one line: continuation lines joined with '; '."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def from_exception(exc: BaseException) -> PipelineError:
    """A PipelineError for an exception that escaped the code that should have turned it into one:
    files (permissions, a full disk, encodings), JSON, the Docker engine. Names the file where known."""
    import errno
    import json

    if isinstance(exc, PipelineError):
        return exc
    if isinstance(exc, UnicodeDecodeError):
        return FileProblem(f"not UTF-8 text ({exc.reason} at byte {exc.start}); save the file as UTF-8")
    if isinstance(exc, json.JSONDecodeError):
        return FileProblem(f"not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno}); "
                           "rebuild or restore the file")
    if isinstance(exc, OSError):
        where = exc.filename if exc.filename is not None else ""
        if exc.filename2 is not None:
            where = f"{where} -> {exc.filename2}"
        why = exc.strerror or str(exc)
        fix = {errno.ENOSPC: "free some space (nox -s clean removes the pipeline's caches)",
               errno.EDQUOT: "free some space (nox -s clean removes the pipeline's caches)",
               errno.EACCES: "check its permissions and owner",
               errno.EPERM: "check its permissions and owner",
               errno.EROFS: "point the output somewhere writable (--dist, PIPELINE_CACHE)",
               errno.ENOENT: "check the path",
               errno.ENOTDIR: "check the path: a part of it is a file",
               errno.EISDIR: "give a file, not a folder",
               errno.ENAMETOOLONG: "use a shorter path"}.get(exc.errno, "check the path and the disk")
        return FileProblem(f"{where + ': ' if where else ''}{why}; {fix}")
    try:
        import docker.errors
        import requests.exceptions
    except ImportError:  # pragma: no cover - both are dependencies
        pass
    else:
        if isinstance(exc, (docker.errors.DockerException, requests.exceptions.RequestException)):
            return DockerError(f"Docker engine: {one_line(exc) or type(exc).__name__}; is the engine running "
                               "and reachable (DOCKER_HOST)?")
    return InternalError(f"unexpected {type(exc).__name__}: {one_line(exc) or 'no message'} (a bug in the "
                         "pipeline; run again with --traceback and report it)")


def exit_codes() -> dict[int, str]:
    """Exit code -> the error class's first docstring line, for the README and `--help`."""
    out = {0: "success"}
    todo = [PipelineError]
    while todo:
        cls = todo.pop()
        out[cls.exit_code] = (cls.__doc__ or cls.__name__).strip().splitlines()[0]
        todo.extend(cls.__subclasses__())
    out[INTERRUPTED] = "interrupted (Ctrl-C or SIGTERM); partial work removed, previous artifacts kept"
    out[CLOSED_PIPE] = "the output's reader went away (`head`, a closed pipe); the command stopped quietly"
    return dict(sorted(out.items()))
