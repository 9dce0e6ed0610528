"""One error hierarchy for the pipeline, caught once at the command-line edge.

Every error carries a message written for the user (what is wrong, where, how to fix it) and the exit
code the command ends with. Subclasses of Exception, so nox and pytest see ordinary failures.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: a failure the user can act on."""

    exit_code = 1


class ConfigError(PipelineError):
    """targets.toml, a patch header or a command-line argument is wrong."""

    exit_code = 2


class SelectionError(ConfigError):
    """A target selector matched nothing."""


class SourceError(PipelineError):
    """The upstream source could not be fetched, verified or exported."""

    exit_code = 3


class PatchError(PipelineError):
    """A patch of the series does not apply."""

    exit_code = 4


class DockerError(PipelineError):
    """The Docker engine is unreachable, or an image could not be made."""

    exit_code = 5


class CommandError(PipelineError):
    """A command (on the host or in a container) exited non-zero."""

    exit_code = 6

    def __init__(self, command: str, returncode: int, where: str = "host", log: str | None = None):
        self.command = command
        self.returncode = returncode
        hint = f"; full log: {log}" if log else ""
        super().__init__(f"command failed with exit code {returncode} ({where}): {command}{hint}")


class PackageError(PipelineError):
    """The build output could not be packaged."""

    exit_code = 7
