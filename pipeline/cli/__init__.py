"""Build Ollama from pinned upstream source for GPUs the official releases don't serve, package it and
verify the package where it is to run.

The command line, `python -m pipeline COMMAND`; the nox sessions call it, and errors are caught here once.

    build, image, verify, targets, plan        pipeline/cli/build.py
    patches, memtest, track, bench, clean      pipeline/cli/maintain.py
    release, publish                           pipeline/cli/release.py

Each command raises the error class of what went wrong (pipeline.errors); `main` turns it into one
`error:` line and the class's exit code. A reader that goes away (`| head`) ends a command quietly.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import signal
import sys
import textwrap
import traceback
from collections.abc import Sequence

from pipeline import stages
from pipeline.cli import build, maintain, parents, release
from pipeline.config.settings import flag
from pipeline.errors import CLOSED_PIPE, INTERRUPTED, UsageError, exit_codes, from_exception, one_line

DISTRIBUTION = "ollama-pipeline"  # the project's name in pyproject.toml


def parser() -> argparse.ArgumentParser:
    """Every command; the build commands' stage options come from the stage table."""
    codes = "\n".join(f"  {code:>3}  {text}" for code, text in exit_codes().items())
    about = " ".join(__doc__.split("\n\n")[0].split())  # the docstring's first paragraph, for users
    more = "Each command's options: pipeline COMMAND --help (nox -s SESSION -- --help)."
    about = textwrap.fill(f"{about} {more}", 100)
    p = parents.Parser(prog="pipeline", description=about,
                       epilog=f"exit codes:\n{codes}", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"{DISTRIBUTION} {version()}",
                   help="show the pipeline's version and exit")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (build, maintain, release):
        group.configure(sub, stages.STAGES)
    return p


def version() -> str:
    """The installed project's version (pyproject.toml), or why there is none."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _run(argv)
        _flush(sys.stdout)  # a closed pipe shows here, not in Python's own flush at exit
        return code
    except SystemExit:  # --help and --version: their text is written, then argparse exits
        try:
            _flush(sys.stdout)
        except BrokenPipeError:
            return _closed_pipe()
        raise
    except BrokenPipeError:
        return _closed_pipe()


def _run(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # nox and CI stop children with SIGTERM: unwind like Ctrl-C so containers and partial files go.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        args = parser().parse_args(argv)
        if getattr(args, "quiet", False):
            os.environ["PIPELINE_QUIET"] = "1"  # read by console.Console.from_env for every Log
        args.run(args)
        return 0
    except KeyboardInterrupt:
        print("interrupted: containers removed, previous artifacts kept; run again to continue",
              file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        raise  # the reader went away: nothing to tell it (main)
    except Exception as exc:
        error = from_exception(exc)
        if "--traceback" in argv or _traceback_asked():
            traceback.print_exc()
        text = one_line(error)
        if error.log_path is not None and str(error.log_path) not in text:
            text += f"; full log: {error.log_path}"
        print(f"error: {text}", file=sys.stderr)
        return error.exit_code


def _flush(stream) -> None:
    if stream is not None:
        stream.flush()


def _closed_pipe() -> int:
    """The reader of the output went away (`pipeline targets --json | head -1`): what it did not read is
    not wanted and there is no one to tell. Whatever is still buffered for it goes to /dev/null, so that
    Python's flush at exit has nothing to complain about."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)
            except (OSError, ValueError):  # not a file (a test's capture): nothing to redirect
                pass
        except (OSError, ValueError):
            pass
    return CLOSED_PIPE


def _traceback_asked() -> bool:
    try:
        return flag(os.environ, "PIPELINE_TRACEBACK")
    except UsageError:
        return False  # refused with its own line where settings are read


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
