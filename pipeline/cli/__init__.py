"""Command line: `python -m pipeline COMMAND`. The nox sessions call this; errors are caught here once.

    build, image, verify, targets, plan        pipeline/cli/build.py
    patches, memtest, track, bench, clean      pipeline/cli/maintain.py
    release, publish                           pipeline/cli/release.py

Each command raises the error class of what went wrong (pipeline.errors); `main` turns it into one
`error:` line and the class's exit code.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from collections.abc import Sequence

from pipeline import stages
from pipeline.cli import build, maintain, parents, release
from pipeline.config.settings import flag
from pipeline.errors import INTERRUPTED, UsageError, exit_codes, from_exception, one_line


def parser() -> argparse.ArgumentParser:
    """Every command; the build commands' stage options come from the stage table."""
    codes = "\n".join(f"  {code:>3}  {text}" for code, text in exit_codes().items())
    p = parents.Parser(prog="pipeline", description=__doc__.split("\n")[0],
                       epilog=f"exit codes:\n{codes}", formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for group in (build, maintain, release):
        group.configure(sub, stages.STAGES)
    return p


def main(argv: Sequence[str] | None = None) -> int:
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
    except Exception as exc:
        error = from_exception(exc)
        if "--traceback" in argv or _traceback_asked():
            traceback.print_exc()
        text = one_line(error)
        if error.log_path is not None and str(error.log_path) not in text:
            text += f"; full log: {error.log_path}"
        print(f"error: {text}", file=sys.stderr)
        return error.exit_code


def _traceback_asked() -> bool:
    try:
        return flag(os.environ, "PIPELINE_TRACEBACK")
    except UsageError:
        return False  # refused with its own line where settings are read


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
