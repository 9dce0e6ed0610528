"""Maintainer commands: patches, memtest, track, bench, clean."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from pipeline import orchestrate
from pipeline.cli import parents
from pipeline.config import targets
from pipeline.errors import ExpectationFailed, PatchError, PipelineError, UsageError
from pipeline.infra import fsutil
from pipeline.infra.log import Log
from pipeline.tools import bench, clean, patchtool, track
from pipeline.tools.memtest import report as memtest_report
from pipeline.tools.memtest import run as memtest_run
from pipeline.tools.memtest import scenario


def configure(sub, table) -> None:
    common = parents.common()
    pt = sub.add_parser("patches", help="maintain the patch series: check, apply, refresh, test")
    psub = pt.add_subparsers(dest="action", required=True)
    c = psub.add_parser("check", parents=[common], help="does each patch apply to each upstream ref?")
    c.add_argument("--ref", action="append", default=[], type=parents.tag,
                   help="upstream tag (repeatable; default: the tags of targets.toml)")
    c.add_argument("--json", metavar="FILE", help="also write the verdicts as JSON to this file")
    c.add_argument("--source", help=parents.SOURCE_HELP)
    a = psub.add_parser("apply", parents=[common], help="a git work tree with one commit per patch")
    a.add_argument("--ref", required=True, type=parents.tag, help="upstream tag to apply the series to")
    a.add_argument("--into", required=True, help="new folder for the work tree")
    a.add_argument("--target", action="append", default=[], help="only patches carried by this target")
    a.add_argument("--source", help=parents.SOURCE_HELP)
    r = psub.add_parser("refresh", parents=[common], help="turn a work tree back into patches/")
    r.add_argument("--from", dest="work", required=True, metavar="FOLDER",
                   help="the work tree `patches apply` made, its commits edited")
    ts = psub.add_parser("test", parents=[common], help="apply, then go vet and go test what changed")
    ts.add_argument("--ref", required=True, type=parents.tag, help="upstream tag to apply and test at")
    ts.add_argument("--source", help=parents.SOURCE_HELP)
    pt.set_defaults(run=cmd_patches)

    mt = sub.add_parser("memtest", parents=[common], help="how Ollama places scenarios on GPUs, "
                                                          "upstream against patched")
    mt.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                    help="scenario .toml files or folders of them (default: scenarios/ of the project)")
    mt.add_argument("--ref", type=parents.tag,
                    help="upstream tag, v0.12.0 to v0.24.x (default: the tag of targets.toml)")
    mt.add_argument("--source", help=parents.SOURCE_HELP)
    mt.add_argument("--target", action="append", default=[],
                    help="only patches carried by this target (default: every patch in range)")
    mt.add_argument("--host-go", action="store_true", help="run go on this machine instead of the Go builder")
    parents.report_option(mt, "--json", "dist/memtest.json", "the report as JSON")
    mt.set_defaults(run=cmd_memtest)

    tr = sub.add_parser("track", parents=[common],
                        help="every upstream tag from a version on: patch verdicts, build layout, and with "
                             "--build whether a target builds")
    tr.add_argument("--since", type=parents.tag, default="v0.12.5",
                    help="first upstream tag (default: v0.12.5)")
    tr.add_argument("--rc", action="store_true", help="include release candidates")
    tr.add_argument("--build", metavar="TARGET",
                    help="also build, package and verify TARGET at every pinned tag")
    tr.add_argument("--source", help=parents.SOURCE_HELP)
    parents.report_option(tr, "--json", "dist/track.json", "the report as JSON")
    parents.report_option(tr, "--markdown", "dist/track.md", "the report as markdown")
    tr.set_defaults(run=cmd_track)

    cl = sub.add_parser("clean", parents=[parents.common(matrix=False, console=False)],
                        help="remove the pipeline's caches, containers, images and volumes; say how much "
                             "space that freed")
    cl.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    cl.add_argument("--cache-only", action="store_true", help="only the cache folder; leave Docker alone")
    cl.set_defaults(run=cmd_clean)

    bn = sub.add_parser("bench", parents=[common, parents.selection(default=["cpu"])],
                        help="measure the pipeline; numbers go to a file")
    bn.add_argument("--dist", help="output folder of the warm builds (default: dist/)")
    bn.add_argument("--cold", action="store_true", help="also time a build with empty caches")
    bn.add_argument("--gpu", action="store_true", help="instead: cold and warm compile time of a few GPU "
                                                       "sources, target archs against upstream's full list")
    bn.add_argument("--backend-archs", action="append", metavar="ARCHS", type=parents.arch_list, default=[],
                    help="instead: compile the target's whole GPU backend cold (no ccache) once for each "
                         "list given (comma-separated, repeatable), in one run: "
                         "--backend-archs gfx1100,gfx1103 --backend-archs gfx1100")
    bn.add_argument("--disk", action="store_true",
                    help="instead: peak disk of each release job's cold `build TARGET... --image --lean`, "
                         "on a private dockerd with an empty data root (needs root); components sampled "
                         "every few seconds")
    bn.add_argument("--builder-twice", action="store_true",
                    help="instead: build each target's builder a second time on a private dockerd with an "
                         "empty data root (needs root) and compare the package versions of the two images")
    parents.report_option(bn, "--output", "dist/bench.json", "the numbers")
    bn.set_defaults(run=cmd_bench)


def cmd_patches(args) -> None:
    settings = parents.settings(args)
    json_out = parents.output(args.json, "--json") if getattr(args, "json", None) else None
    matrix = targets.load(settings.targets_file)
    for name in getattr(args, "target", []):
        parents.known_target(name, matrix, "--target")
    with Log("patches", settings.places.log("patches", args.action)) as log:
        if args.action == "check":
            verdicts = patchtool.check(matrix, settings, args.ref, log)
            print(patchtool.table(verdicts))
            if json_out is not None:
                rows = [dataclasses.asdict(v) for v in verdicts]
                fsutil.write_text(json_out, json.dumps(rows, indent=2) + "\n")
            if bad := patchtool.failed(verdicts):
                raise PatchError("; ".join(f"{v.patch} conflicts with {v.ref} ({v.detail}; targets "
                                           f"{' '.join(v.targets)})" for v in bad))
        elif args.action == "apply":
            names = patchtool.apply(matrix, settings, args.ref, Path(args.into).resolve(), log, args.target)
            print(f"{args.into}: upstream {args.ref} + {len(names)} commit(s): {', '.join(names) or 'none'}")
            print("edit with git (commit --amend, rebase -i), then: nox -s patches -- refresh --from "
                  f"{args.into}")
        elif args.action == "refresh":
            changes = patchtool.refresh(matrix, settings, Path(args.work).resolve(), log)
            for kind, names in changes.items():
                for name in names:
                    print(f"{kind:10} {name}")
        else:
            packages = patchtool.test(matrix, settings, args.ref, log)
            print(f"go vet and go test passed: {' '.join(packages) or 'no Go package touched'}")


def cmd_memtest(args) -> None:
    settings = parents.settings(args)
    output = parents.output(args.json, "--json", settings.places.report("memtest"))
    scenarios = scenario.load_all(args.scenarios)
    ref = args.ref or patchtool.default_refs(targets.load(settings.targets_file))[0]
    scenario.check_ref(ref)
    with Log("memtest", settings.places.log("memtest", "memtest")) as log:
        rep = memtest_run.run(settings, log, scenarios, ref, host_go=args.host_go, targets=args.target)
    fsutil.write_text(output, json.dumps(rep, indent=2) + "\n")
    print(memtest_report.render(rep))
    print(f"written to {output}", file=sys.stderr)
    if failed := memtest_report.failed(rep):
        raise ExpectationFailed(f"expectation failed: {'; '.join(failed)}")


def cmd_track(args) -> None:
    settings = parents.settings(args)
    json_out = parents.output(args.json, "--json", settings.places.report("track"))
    md_out = parents.output(args.markdown, "--markdown", settings.places.report("track", "md"))
    matrix = targets.load(settings.targets_file)
    build = None
    if args.build:
        build = track.builder(matrix, settings, args.build,
                              lambda plan: orchestrate.build_target(plan, settings))
    with Log("track", settings.places.log("track")) as log:
        rep = track.report(matrix, settings, log, since=args.since, rc=args.rc, build=build,
                           build_target=args.build or "")
    fsutil.write_text(json_out, json.dumps(rep, indent=2) + "\n")
    text = track.render(rep)
    fsutil.write_text(md_out, text)
    print(text)
    print(f"written to {md_out} and {json_out}", file=sys.stderr)


def cmd_bench(args) -> None:
    settings = parents.settings(args)
    chosen = ["--all", *args.targets] if args.all else args.targets
    output = parents.output(args.output, "--output", settings.places.report("bench"))
    if args.backend_archs and (args.disk or args.cold or args.gpu or args.builder_twice or args.ref):
        raise UsageError("--backend-archs is a benchmark of its own: drop --disk, --cold, --gpu, "
                         "--builder-twice and --ref")
    if args.builder_twice:
        if args.disk or args.cold or args.gpu or args.ref:
            raise UsageError("--builder-twice builds builders only: drop --disk, --cold, --gpu and --ref")
        report = bench.builder_twice(chosen, settings, output)
    elif args.disk:
        if args.cold or args.gpu:
            raise UsageError("--disk measures a cold build of its own: drop --cold and --gpu")
        report = bench.disk(chosen, settings, output, ref=args.ref)
    else:
        if args.ref:
            raise UsageError("--ref goes with --disk; the other benchmarks time the tags of targets.toml")
        report = bench.run(chosen, settings, output, cold=args.cold, gpu=args.gpu,
                           backend_archs=args.backend_archs)
    print(json.dumps(report, indent=2))
    print(f"written to {output}", file=sys.stderr)


def cmd_clean(args) -> None:
    settings = parents.settings(args)
    items = clean.find(settings, docker_too=not args.cache_only)
    if not args.dry_run:
        failed = clean.remove(settings, items)
        if failed:
            done = [i for i in items
                    if i.keep or not any(f.startswith(f"{i.kind} {i.name}:") for f in failed)]
            print(clean.report(done, dry_run=False))
            raise PipelineError(f"could not remove {len(failed)} item(s): {'; '.join(failed)}")
    print(clean.report(items, dry_run=args.dry_run))
