"""Command line: `python -m pipeline COMMAND`. The nox sessions call this; errors are caught here once."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path

from pipeline import orchestrate, stages
from pipeline.config import names, series, targets
from pipeline.config.policy import load_policy
from pipeline.config.settings import Settings
from pipeline.errors import INTERRUPTED, PipelineError, UsageError, from_exception, one_line
from pipeline.infra import fsutil
from pipeline.infra.log import Log, duration
from pipeline.stages import builder, image, verify
from pipeline.stages.plan import out_folder
from pipeline.release import assemble as release
from pipeline.tools import bench, clean, memtest, patchtool, track


class _Parser(argparse.ArgumentParser):
    """argparse whose mistakes are UsageErrors: one `error:` line and the class's exit code."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _positive(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {value!r}")
    return int(value)


def _ref(value: str) -> str:
    if problem := names.ref_problem(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid git tag ({problem}); use a tag such as v0.12.5")
    return value


LEAN_HELP = ("once a target is done, remove its cached build output and its runtime image from the engine "
             "(dist/ keeps the archive and the saved image): for release jobs on small disks")
REF_HELP = ("upstream tag to build, one of [upstream.pins] in targets.toml (default: each target's own tag)")


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--targets-file", help="the target matrix (default: targets.toml of the project)")
    common.add_argument("--traceback", action="store_true", help="show tracebacks of errors")
    common.add_argument("--quiet", action="store_true",
                        help="on a terminal, show only stage lines and progress (and the log's last 50 "
                             "lines on failure); the full log stays on disk (or PIPELINE_QUIET=1)")

    p = _Parser(prog="pipeline", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", parents=[common], help="build and package targets")
    b.add_argument("targets", nargs="*", metavar="TARGET", help="names or globs ('gfx*')")
    b.add_argument("--all", action="store_true", help="every target of the matrix")
    b.add_argument("--source", help="git URL or local repository replacing source.url (or OLLAMA_SOURCE)")
    b.add_argument("--debian-mirror", help="Debian mirror for base and builder images "
                                           "(default: PIPELINE_DEBIAN_MIRROR, then this machine's apt sources)")
    b.add_argument("--dist", help="output folder (default: dist/ of the project)")
    b.add_argument("--jobs", type=_positive, help="parallel compile jobs (default: CPU count)")
    b.add_argument("--no-verify", action="store_true", help="skip verifying the package in a clean container")
    b.add_argument("--image", action="store_true", help="also make the runtime Docker image of the verified package")
    b.add_argument("--ref", type=_ref, help=REF_HELP)
    b.add_argument("--lean", action="store_true", help=LEAN_HELP)

    im = sub.add_parser("image", parents=[common], help="build targets and make their runtime Docker images")
    im.add_argument("targets", nargs="*", metavar="TARGET", help="names or globs ('gfx*')")
    im.add_argument("--all", action="store_true", help="every target of the matrix")
    im.add_argument("--source", help="git URL or local repository replacing source.url (or OLLAMA_SOURCE)")
    im.add_argument("--debian-mirror")
    im.add_argument("--dist", help="output folder (default: dist/ of the project)")
    im.add_argument("--jobs", type=_positive, help="parallel compile jobs (default: CPU count)")
    im.add_argument("--ref", type=_ref, help=REF_HELP)
    im.add_argument("--lean", action="store_true", help=LEAN_HELP)

    v = sub.add_parser("verify", parents=[common], help="verify packages in a clean runtime-floor container")
    v.add_argument("archives", nargs="+", metavar="ARCHIVE")
    v.add_argument("--debian-mirror")

    t = sub.add_parser("targets", parents=[common], help="show the matrix")
    t.add_argument("--json", action="store_true", help="machine-readable, for CI matrices")
    t.add_argument("--ref", type=_ref, help="the matrix at this pinned upstream tag: the targets that build it")
    t.add_argument("--builds", action="store_true",
                   help="with --json: the release workflow's build jobs, one per builder with its targets "
                        "({builder, targets, names, commit})")

    pl = sub.add_parser("plan", parents=[common], help="show what a build would do, with stage hashes")
    pl.add_argument("targets", nargs="*", metavar="TARGET")
    pl.add_argument("--all", action="store_true")
    pl.add_argument("--source")
    pl.add_argument("--ref", type=_ref, help=REF_HELP)
    pl.add_argument("--json", action="store_true", help="machine-readable: stage hashes and image, for CI "
                                                        "cache keys")
    pt = sub.add_parser("patches", help="maintain the patch series: check, apply, refresh, test")
    psub = pt.add_subparsers(dest="action", required=True)
    c = psub.add_parser("check", parents=[common], help="does each patch apply to each upstream ref?")
    c.add_argument("--ref", action="append", default=[], type=_ref, help="upstream tag (repeatable; default: the "
                                                               "tags of targets.toml)")
    c.add_argument("--json", help="also write the verdicts as JSON to this file")
    c.add_argument("--source")
    a = psub.add_parser("apply", parents=[common], help="a git work tree with one commit per patch")
    a.add_argument("--ref", required=True, type=_ref)
    a.add_argument("--into", required=True, help="new folder for the work tree")
    a.add_argument("--target", action="append", default=[], help="only patches carried by this target")
    a.add_argument("--source")
    r = psub.add_parser("refresh", parents=[common], help="turn a work tree back into patches/")
    r.add_argument("--from", dest="work", required=True)
    ts = psub.add_parser("test", parents=[common], help="apply, then go vet and go test what changed")
    ts.add_argument("--ref", required=True, type=_ref)
    ts.add_argument("--source")

    rl = sub.add_parser("release", parents=[common], help="assemble built targets into dist/release/")
    rl.add_argument("targets", nargs="*", metavar="TARGET",
                    help="names or globs (default: every target with an archive in dist/<target>/)")
    rl.add_argument("--all", action="store_true", help="every target of the matrix; one not built is an error")
    rl.add_argument("--dist", help="folder of the builds; the release goes to its release/ (default: dist/)")
    rl.add_argument("--dry-run", action="store_true",
                    help="assemble into dist/release.dry-run/ (dist/release/ is left as it is), then "
                         "print what the release workflow would publish")

    mt = sub.add_parser("memtest", parents=[common], help="how Ollama's estimator places scenarios on GPUs, "
                                                          "upstream against patched")
    mt.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                    help="scenario .toml files or folders of them (default: scenarios/ of the project)")
    mt.add_argument("--ref", type=_ref, help="upstream tag, v0.12.0 to v0.12.10 (default: the tag of targets.toml)")
    mt.add_argument("--source")
    mt.add_argument("--target", action="append", default=[],
                    help="only patches carried by this target (default: every patch in range)")
    mt.add_argument("--host-go", action="store_true", help="run go on this machine instead of the Go builder")
    mt.add_argument("--json", default="dist/memtest.json", help="where the report goes as JSON")

    tr = sub.add_parser("track", parents=[common], help="every upstream tag from a version on: patch verdicts, "
                                                         "build layout, and with --build whether a target builds")
    tr.add_argument("--since", type=_ref, default="v0.12.5", help="first upstream tag (default: v0.12.5)")
    tr.add_argument("--rc", action="store_true", help="include release candidates")
    tr.add_argument("--build", metavar="TARGET", help="also build, package and verify TARGET at every pinned tag")
    tr.add_argument("--source")
    tr.add_argument("--json", default="dist/track.json", help="where the report goes as JSON")
    tr.add_argument("--markdown", default="dist/track.md", help="where the report goes as markdown")

    cl = sub.add_parser("clean", parents=[common], help="remove the pipeline's caches, containers, images and "
                                                         "volumes; say how much space that freed")
    cl.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    cl.add_argument("--cache-only", action="store_true", help="only the cache folder; leave Docker alone")

    bn = sub.add_parser("bench", parents=[common], help="measure the pipeline; numbers go to a file")
    bn.add_argument("targets", nargs="*", metavar="TARGET", default=["cpu"])
    bn.add_argument("--source")
    bn.add_argument("--dist", help="output folder of the warm builds (default: dist/)")
    bn.add_argument("--cold", action="store_true", help="also time a build with empty caches")
    bn.add_argument("--gpu", action="store_true", help="instead: cold and warm compile time of a few GPU "
                                                       "sources, target archs against upstream's full list")
    bn.add_argument("--disk", action="store_true",
                    help="instead: peak disk of each release job's cold `build TARGET... --image --lean`, on a private "
                         "dockerd with an empty data root (needs root); components sampled every few seconds")
    bn.add_argument("--builder-twice", action="store_true",
                    help="instead: build each target's builder a second time on a private dockerd with an empty "
                         "data root (needs root) and compare the package versions of the two images")
    bn.add_argument("--ref", type=_ref, help="with --disk: the jobs build this pinned upstream tag")
    bn.add_argument("--output", default="dist/bench.json", help="where the numbers go")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # nox and CI stop children with SIGTERM: unwind like Ctrl-C so containers and partial files go.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        args = _parser().parse_args(argv)
        if getattr(args, "quiet", False):
            os.environ["PIPELINE_QUIET"] = "1"  # read by console.Console.from_env for every Log
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted: containers removed, previous artifacts kept", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one place every error becomes one line
        error = from_exception(exc)
        if "--traceback" in argv or os.environ.get("PIPELINE_TRACEBACK", "") not in ("", "0"):
            traceback.print_exc()
        print(f"error: {one_line(error)}", file=sys.stderr)
        return error.exit_code


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _settings(args) -> Settings:
    return Settings.from_env(
        targets_file=_path(getattr(args, "targets_file", None)),
        source=getattr(args, "source", None),
        debian_mirror=getattr(args, "debian_mirror", None),
        dist=_path(getattr(args, "dist", None)),
        jobs=getattr(args, "jobs", None),
    )


def _path(value):
    return Path(value).resolve() if value else None


def _output(value: str, flag: str) -> Path:
    """An output file named on the command line, checked before any work: not a folder, and its folder
    can be made and written."""
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


def names_hint(name: str, matrix: targets.Matrix) -> str:
    from pipeline.config import loader

    return loader.hint(name, matrix.targets)


def _ref_of(args, settings: Settings) -> str | None:
    """--ref, else PIPELINE_REF, else None (each target's own tag)."""
    return getattr(args, "ref", None) or settings.ref


def _selection(args, matrix: targets.Matrix, settings: Settings) -> list[targets.Target]:
    return matrix.select_at(["--all", *args.targets] if args.all else args.targets, _ref_of(args, settings))


def cmd_build(args) -> int:
    settings = _settings(args)
    matrix = targets.load(settings.targets_file)
    chosen = _selection(args, matrix, settings)
    # Plan everything first: a bad patch header or template fails before any work starts.
    if args.image and args.no_verify:
        raise UsageError("--image makes the runtime image from the verified archive: drop --no-verify")
    patch_series = series.load(settings.patches_dir, matrix.targets)
    plans = [stages.plan_for(matrix, t, settings, patch_series) for t in chosen]
    skip = ["verify"] if args.no_verify else []
    add = ["image"] if args.image else []
    outcomes = [orchestrate.build_target(p, settings, skip=skip, add=add, lean=args.lean) for p in plans]
    print("", file=sys.stderr)
    for o in outcomes:
        done = ", ".join(f"{name} {state}" for name, state, _ in o.stages)
        made = f"{o.archive}" + (f" + image {o.results['image'].tag}" if "image" in o.results else "")
        print(f"{o.target}: {made} ({duration(o.seconds)}; {done})", file=sys.stderr)
    return 0


def cmd_image(args) -> int:
    args.image, args.no_verify = True, False
    return cmd_build(args)


def cmd_targets(args) -> int:
    settings = _settings(args)
    matrix = targets.load(settings.targets_file)
    ref = _ref_of(args, settings)
    chosen = matrix.select_at(["--all"], ref) if ref else list(matrix.targets.values())
    rows = [_describe(t, matrix) for t in chosen]
    if args.builds:
        if not args.json:
            raise UsageError("--builds is a JSON list for CI: add --json")
        commits = {t.name: t.source.commit for t in chosen}
        tags = {t.name: t.source.tag for t in chosen}
        # dist/ folder per target (TARGET@TAG at another tag than the target's own): what CI uploads.
        jobs = [{"builder": builder, "targets": names, "names": " ".join(names), "commit": commits[names[0]],
                 "tag": tags[names[0]],
                 "folders": [out_folder(n, tags[n], matrix.targets[n].source.tag) for n in names]}
                for builder, names in targets.build_jobs(chosen).items()]
        print(json.dumps(jobs, indent=2))
        return 0
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("target", "backends", "gpu archs", "builder", "upstream", "runs on (floor)", "description")
    table = [header] + [(r["name"], ",".join(r["backends"]), ",".join(r["gpu_archs"]) or "-", r["builder"],
                         r["tag"], _floor_text(r["floor"]), r["description"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    return 0


def _describe(t: targets.Target, matrix: targets.Matrix) -> dict:
    policy_name = matrix.builders[t.builder].policy
    floor = None
    if policy_name:
        p = load_policy(policy_name)
        floor = {"policy": p.name, "suite": p.suite, "description": p.description, **dict(p.max_versions)}
    return {"name": t.name, "description": t.description, "backends": list(t.backends),
            "gpu_archs": list(t.gpu_archs), "builder": t.builder, "tag": t.source.tag,
            "commit": t.source.commit, "upstream_version": t.source.tag.removeprefix("v"),
            "versions": t.versions, "runtime_env": dict(t.runtime.env), "floor": floor}


def _floor_text(floor: dict | None) -> str:
    """'glibc 2.31, GLIBCXX 3.4.28 (bullseye)': what a package of the target needs from its host."""
    if not floor:
        return "-"
    return f"glibc {floor['GLIBC']}, GLIBCXX {floor.get('GLIBCXX', '?')} ({floor['suite']})"


def cmd_plan(args) -> int:
    settings = _settings(args)
    matrix = targets.load(settings.targets_file)
    patch_series = series.load(settings.patches_dir, matrix.targets)
    if args.json:
        plans = [stages.plan_for(matrix, t, settings, patch_series) for t in _selection(args, matrix, settings)]
        print(json.dumps([{"name": p.name, "version": p.version, "tag": p.tag, "commit": p.target.source.commit,
                           "upstream_version": p.upstream_version, "out": p.out, "archive": p.archive_name,
                           "image": builder.image_tag(p), "runtime_image": image.tag(p),
                           "hashes": dict(p.hashes),
                           "patches": [patch.name for patch in p.patches]} for p in plans], indent=2))
        return 0
    for t in _selection(args, matrix, settings):
        p = stages.plan_for(matrix, t, settings, patch_series)
        print(f"{p.name}: {p.version} from {p.source_url} @ {t.source.commit[:12]} ({p.tag}) -> dist/{p.out}/")
        print(f"  image   {builder.image_tag(p)}")
        for patch in p.patches:
            print(f"  patch   {patch.name} ({patch.upstream_status})")
        for stage, value in p.hashes.items():
            print(f"  {stage:8}{value}")
        for step in p.steps:
            print(f"  step    {' '.join(step.argv)}")
    return 0


def cmd_bench(args) -> int:
    settings = _settings(args)
    output = _output(args.output, "--output")
    if args.builder_twice:
        if args.disk or args.cold or args.gpu or args.ref:
            raise UsageError("--builder-twice builds builders only: drop --disk, --cold, --gpu and --ref")
        report = bench.builder_twice(args.targets, settings, output)
    elif args.disk:
        if args.cold or args.gpu:
            raise UsageError("--disk measures a cold build of its own: drop --cold and --gpu")
        report = bench.disk(args.targets, settings, output, ref=args.ref)
    else:
        if args.ref:
            raise UsageError("--ref goes with --disk; the other benchmarks time the tags of targets.toml")
        report = bench.run(args.targets, settings, output, cold=args.cold, gpu=args.gpu)
    print(json.dumps(report, indent=2))
    print(f"written to {output}", file=sys.stderr)
    return 0


def cmd_patches(args) -> int:
    settings = _settings(args)
    json_out = _output(args.json, "--json") if getattr(args, "json", None) else None
    matrix = targets.load(settings.targets_file)
    for name in getattr(args, "target", []):
        if name not in matrix.targets:
            raise UsageError(f"--target {name!r} is not a target{names_hint(name, matrix)}; known: "
                             f"{', '.join(matrix.targets)}")
    with Log("patches", settings.dist / "patches" / f"{args.action}.log") as log:
        if args.action == "check":
            verdicts = patchtool.check(matrix, settings, args.ref, log)
            print(patchtool.table(verdicts))
            if args.json:
                rows = [dataclasses.asdict(v) for v in verdicts]
                fsutil.write_text(json_out, json.dumps(rows, indent=2) + "\n")
            bad = patchtool.failed(verdicts)
            for v in bad:
                print(f"error: {v.patch} conflicts with {v.ref} ({v.detail}; targets {' '.join(v.targets)})",
                      file=sys.stderr)
            return 4 if bad else 0
        if args.action == "apply":
            names = patchtool.apply(matrix, settings, args.ref, Path(args.into).resolve(), log, args.target)
            print(f"{args.into}: upstream {args.ref} + {len(names)} commit(s): {', '.join(names) or 'none'}")
            print(f"edit with git (commit --amend, rebase -i), then: nox -s patches -- refresh --from {args.into}")
            return 0
        if args.action == "refresh":
            changes = patchtool.refresh(matrix, settings, Path(args.work).resolve(), log)
            for kind, names in changes.items():
                for name in names:
                    print(f"{kind:10} {name}")
            return 0
        packages = patchtool.test(matrix, settings, args.ref, log)
        print(f"go vet and go test passed: {' '.join(packages) or 'no Go package touched'}")
        return 0


def cmd_release(args) -> int:
    settings = _settings(args)
    matrix = targets.load(settings.targets_file)
    if args.targets or args.all:
        names = [t.name for t in _selection(args, matrix, settings)]
    else:
        names = release.built(settings.dist, matrix.targets)
    # A dry run assembles beside the last real release and never touches it.
    out = settings.dist / (release.DRY_RUN_FOLDER if args.dry_run else release.FOLDER)
    result = release.assemble(names, settings.dist, out=out)
    print(release.summary(result, dry_run=args.dry_run))
    return 0


def cmd_memtest(args) -> int:
    settings = _settings(args)
    output = _output(args.json, "--json")
    scenarios = memtest.load_all(args.scenarios)
    ref = args.ref or patchtool.default_refs(targets.load(settings.targets_file))[0]
    memtest.check_ref(ref)
    with Log("memtest", settings.dist / "memtest" / "memtest.log") as log:
        report = memtest.run(settings, log, scenarios, ref, host_go=args.host_go, targets=args.target)
    fsutil.write_text(output, json.dumps(report, indent=2) + "\n")
    print(memtest.render(report))
    print(f"written to {output}", file=sys.stderr)
    for line in memtest.failed(report):
        print(f"error: expectation failed: {line}", file=sys.stderr)
    return 1 if memtest.failed(report) else 0


def cmd_track(args) -> int:
    settings = _settings(args)
    json_out, md_out = _output(args.json, "--json"), _output(args.markdown, "--markdown")
    matrix = targets.load(settings.targets_file)
    build = None
    if args.build:
        build = track.builder(matrix, settings, args.build,
                              lambda plan: orchestrate.build_target(plan, settings))
    with Log("track", settings.dist / "track.log") as log:
        rep = track.report(matrix, settings, log, since=args.since, rc=args.rc, build=build,
                           build_target=args.build or "")
    fsutil.write_text(json_out, json.dumps(rep, indent=2) + "\n")
    text = track.render(rep)
    fsutil.write_text(md_out, text)
    print(text)
    print(f"written to {md_out} and {json_out}", file=sys.stderr)
    return 0


def cmd_verify(args) -> int:
    settings = _settings(args)
    for archive in args.archives:
        path = Path(archive).resolve()
        if not path.is_file():
            raise UsageError(f"{archive}: no such archive file; give the path of an ollama-*.tar.zst or .tar.gz")
        beside = verify.manifest_beside(path)
        with Log("verify", settings.dist / "verify.log") as log:
            verify.verify_archive(path, settings, log, manifest=beside)
        print(f"{path.name}: verified")
    return 0


def cmd_clean(args) -> int:
    settings = _settings(args)
    items = clean.find(settings, docker_too=not args.cache_only)
    if not args.dry_run:
        failed = clean.remove(settings, items)
        if failed:
            print(clean.report([i for i in items if not any(f.startswith(f"{i.kind} {i.name}:") for f in failed)],
                               dry_run=False))
            raise PipelineError(f"could not remove {len(failed)} item(s): {'; '.join(failed)}")
    print(clean.report(items, dry_run=args.dry_run))
    return 0


COMMANDS = {"build": cmd_build, "image": cmd_image, "verify": cmd_verify, "targets": cmd_targets,
            "plan": cmd_plan, "patches": cmd_patches, "release": cmd_release, "memtest": cmd_memtest,
            "bench": cmd_bench, "clean": cmd_clean, "track": cmd_track}
