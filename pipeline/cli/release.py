"""Release commands: release (assemble dist/release/ from the built targets) and publish."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipeline import stages
from pipeline.cli import parents
from pipeline.config import names, places, targets
from pipeline.errors import PipelineError, UsageError
from pipeline.infra.log import Log
from pipeline.release import assemble, publish


def configure(sub, table) -> None:
    # release prints its summary (no log reaches the console); publish reads no matrix.
    rl = sub.add_parser("release", parents=[parents.common(console=False)],
                        help="assemble built targets into dist/release/")
    rl.add_argument("targets", nargs="*", metavar="TARGET",
                    help="names or globs, TARGET@TAG for another upstream tag (default: every target at "
                         "each tag it is released at with an archive in dist/<target>[@TAG]/)")
    rl.add_argument("--all", action="store_true",
                    help="every target of the matrix at each tag it is released at (targets.toml "
                         "releases); one not built is an error")
    rl.add_argument("--dist", help="folder of the builds; the release goes to its release/ (default: dist/)")
    rl.add_argument("--dry-run", action="store_true",
                    help="assemble into dist/release.dry-run/ (dist/release/ is left as it is), then "
                         "print what the release workflow would publish")
    rl.set_defaults(run=cmd_release)

    pb = sub.add_parser("publish", parents=[parents.common(matrix=False)],
                        help="publish dist/release/ as the GitHub release of a tag",
                        description=publish.__doc__.split("\n")[0])
    pb.add_argument("tag", help="the release's tag (it must exist on GitHub: --verify-tag)")
    pb.add_argument("folder", nargs="?", help="the assembled release (default: dist/release)")
    pb.add_argument("--draft-only", action="store_true", help="stop before publishing the draft")
    pb.add_argument("--gh", default=os.environ.get("PIPELINE_GH", "gh"), help="the gh executable")
    pb.add_argument("--gh-timeout", type=_seconds, default=publish.TIMEOUT, metavar="SECONDS",
                    help=f"end a gh call that has not answered after this long and try again, "
                         f"{publish.TRIES} tries in all; uploads get 1 s per MiB more "
                         f"(default {publish.TIMEOUT:g})")
    pb.add_argument("--log", help="log file (default: FOLDER/../publish.log)")
    pb.set_defaults(run=cmd_publish)


def cmd_release(args) -> None:
    settings = parents.settings(args)
    matrix = targets.load(settings.targets_file)
    if args.targets or args.all:
        picked = parents.selected(args, matrix, settings)
        # --all without a ref: every target at every tag it is released at (targets.toml releases)
        if args.all and not parents.ref_of(args, settings):
            picked = matrix.releases(picked)
        chosen = [_build(matrix, t) for t in picked]
    else:
        every = matrix.releases(matrix.targets.values())
        chosen = assemble.built(settings.dist, [_build(matrix, t) for t in every])
    # A dry run assembles beside the last real release and never touches it.
    result = assemble.assemble(chosen, settings.dist, out=settings.places.release(dry_run=args.dry_run),
                               table=stages.STAGES)
    print(assemble.summary(result, dry_run=args.dry_run))


def _build(matrix: targets.Matrix, t: targets.Target) -> assemble.Build:
    return assemble.Build(target=t.name, note=t.release_note,
                          folder=places.out_folder(t.name, t.source.tag, matrix.targets[t.name].source.tag))


def cmd_publish(args) -> None:
    if problem := names.ref_problem(args.tag):
        raise UsageError(f"tag {args.tag!r} is not a valid git tag ({problem}); give a tag such as v0.12.5")
    folder = Path(args.folder) if args.folder else parents.settings(args).places.release()
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder; assemble the release first: nox -s release")
    publish.local_assets(folder)  # refused before a log is opened or gh is called
    log_path = Path(args.log) if args.log else folder.resolve().parent / "publish.log"
    with Log("publish", log_path) as log:
        try:
            publish.publish(args.tag, folder, publish.GitHub(log, args.gh, timeout=args.gh_timeout),
                            draft_only=args.draft_only)
        except PipelineError as exc:
            log.line(f"error: {exc}")
            exc.log_path = log_path  # named by the error line: re-running continues where it stopped
            raise


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds between 0 and 86400")
    return value
