"""What the commands share: the parser class, the argument groups (target selection, build options,
outputs) and what they resolve to (Settings, the selected targets, output files)."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pipeline import stages
from pipeline.config import loader, names, targets
from pipeline.config.settings import Settings
from pipeline.errors import UsageError


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes are UsageErrors: one `error:` line and the class's exit code."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def positive(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {value!r}")
    return int(value)


def arch_list(value: str) -> list[str]:
    """'gfx1100,gfx1103' -> ['gfx1100', 'gfx1103']: GPU archs as gpu_archs in targets.toml names them."""
    archs = [a.strip() for a in value.split(",")]
    if not all(archs) or len(set(archs)) != len(archs):
        raise argparse.ArgumentTypeError(f"{value!r}: give archs separated by commas, each once "
                                         "(gfx1100,gfx1103)")
    for arch in archs:
        if not (arch.isascii() and arch.replace("-", "").replace("_", "").isalnum()):
            raise argparse.ArgumentTypeError(f"{arch!r} is not a GPU arch name (gfx1100, 37-real)")
    return archs


def tag(value: str) -> str:
    if problem := names.ref_problem(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid git tag ({problem}); use a tag "
                                         "such as v0.12.5")
    return value


REF_HELP = "upstream tag to build, one of [upstream.pins] in targets.toml (default: each target's own tag)"
SOURCE_HELP = "git URL or local repository replacing source.url (or OLLAMA_SOURCE)"
MIRROR_HELP = ("Debian mirror for base and builder images (default: PIPELINE_DEBIAN_MIRROR, then this "
               "machine's apt sources)")
LEAN_HELP = ("once a target is done, remove its cached build output and its runtime image from the engine "
             "(dist/ keeps the archive and the saved image): for release jobs on small disks")


def common(*, matrix: bool = True, console: bool = True) -> Parser:
    """What a command takes besides its own options, only where it acts: --traceback everywhere,
    --targets-file where the command reads the matrix (`matrix`), --quiet where it writes a log to the
    console (`console`: build steps, containers, tools)."""
    p = Parser(add_help=False)
    if matrix:
        p.add_argument("--targets-file", help="the target matrix (default: targets.toml of the project, or "
                                              "PIPELINE_TARGETS)")
    p.add_argument("--traceback", action="store_true", help="show tracebacks of errors")
    if console:
        p.add_argument("--quiet", action="store_true",
                       help="on a terminal, show only stage lines and progress (and the log's last 50 lines "
                            "on failure); the full log stays on disk (or PIPELINE_QUIET=1)")
    return p


def selection(*, ref_help: str = REF_HELP, default: Sequence[str] | None = None) -> Parser:
    """Which targets: names or globs, --all, the upstream tag, the source."""
    p = Parser(add_help=False)
    p.add_argument("targets", nargs="*", metavar="TARGET", help="names or globs ('gfx*')",
                   **({"default": list(default)} if default is not None else {}))
    p.add_argument("--all", action="store_true", help="every target of the matrix")
    p.add_argument("--ref", type=tag, help=ref_help)
    p.add_argument("--source", help=SOURCE_HELP)
    return p


def build_options(table: Sequence[stages.Stage]) -> Parser:
    """How to build: outputs, parallelism, the Debian mirror, --lean, and the stage options of the table
    (--no-verify leaves a default stage out, --image asks for an optional one)."""
    p = Parser(add_help=False)
    p.add_argument("--dist", help="output folder (default: dist/ of the project)")
    p.add_argument("--jobs", type=positive, help="parallel compile jobs (default: CPU count)")
    p.add_argument("--debian-mirror", help=MIRROR_HELP)
    p.add_argument("--lean", action="store_true", help=LEAN_HELP)
    for stage in table:
        if stage.option is not None:
            p.add_argument(stage.option.flag, action="store_true", dest=option_dest(stage),
                           help=stage.option.help)
    return p


def report_option(p: argparse.ArgumentParser, flag: str, default: str, what: str = "the report") -> None:
    """An output file of a tool: `flag FILE`, by default `default` (a file of dist/, see `output`)."""
    p.add_argument(flag, metavar="FILE", help=f"where {what} goes (default: {default})")


def option_dest(stage: stages.Stage) -> str:
    return f"stage_{stage.name}"


def stage_choice(args, table: Sequence[stages.Stage], add: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """(skip, add) from the stage options given, refusing an asked-for stage that needs one left out."""
    given = [s for s in table if s.option is not None and getattr(args, option_dest(s), False)]
    skip = [s.name for s in given if s.default]
    add = [*add, *(s.name for s in given if not s.default)]
    by_name = {s.name: s for s in table}
    for name in add:
        for left_out in skip:
            if left_out in stages.needed(table, name):
                raise UsageError(f"the {name} stage needs the {left_out} stage "
                                 f"({by_name[left_out].description}): drop {by_name[left_out].option.flag}")
    return skip, add


def settings(args) -> Settings:
    return Settings.from_env(
        targets_file=_path(getattr(args, "targets_file", None)),
        source=getattr(args, "source", None),
        debian_mirror=getattr(args, "debian_mirror", None),
        dist=_path(getattr(args, "dist", None)),
        jobs=getattr(args, "jobs", None),
    )


def _path(value):
    return Path(value).resolve() if value else None


def ref_of(args, settings: Settings) -> str | None:
    """--ref, else PIPELINE_REF, else None (each target's own tag)."""
    return getattr(args, "ref", None) or settings.ref


def selected(args, matrix: targets.Matrix, settings: Settings) -> list[targets.Target]:
    return matrix.select_at(["--all", *args.targets] if args.all else args.targets, ref_of(args, settings))


def known_target(name: str, matrix: targets.Matrix, flag: str) -> None:
    if name not in matrix.targets:
        raise UsageError(f"{flag} {name!r} is not a target{loader.hint(name, matrix.targets)}; known: "
                         f"{', '.join(matrix.targets)}")


def output(value: str | os.PathLike | None, flag: str, default: Path | None = None) -> Path:
    """An output file named on the command line, else `default` (a report of dist/: Places.report),
    checked before any work: not a folder, and its folder can be made and written."""
    value = os.fspath(default if value is None and default is not None else value or "")
    if not value or "\0" in value:
        raise UsageError(f"{flag} {value!r}: give a file path")
    path = Path(value).resolve()
    if path.is_dir():
        raise UsageError(f"{flag} {value}: is a folder; give a file path such as {Path(value) / 'out.json'}")
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{flag} {value}: {ancestor} is a file, not a folder; give another path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {value}: {ancestor} is not writable; give another path")
    try:  # access() says yes to root everywhere: try it (an unnamed file, nothing is left behind)
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as exc:
        raise UsageError(f"{flag} {value}: {ancestor} is not writable ({exc.strerror or exc}); "
                         "give another path") from None
    return path
