"""Commands that build and look: build, image, verify, targets, plan."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline import orchestrate, stages
from pipeline.cli import parents
from pipeline.config import places, targets
from pipeline.config.policy import load_policy
from pipeline.errors import UsageError
from pipeline.formats import PackageLayout
from pipeline.infra.log import Log, duration
from pipeline.stages import builder, image, verify


def configure(sub, table) -> None:
    common, build_options = parents.common(), parents.build_options(table)
    b = sub.add_parser("build", parents=[common, parents.selection(), build_options],
                       help="build and package targets")
    b.set_defaults(run=cmd_build, adds=())
    im = sub.add_parser("image", parents=[common, parents.selection(), build_options],
                        help="build targets and make their runtime Docker images")
    im.set_defaults(run=cmd_build, adds=("image",))

    v = sub.add_parser("verify", parents=[common], help="verify packages in a clean runtime-floor container")
    v.add_argument("archives", nargs="+", metavar="ARCHIVE")
    v.add_argument("--debian-mirror")
    v.set_defaults(run=cmd_verify)

    t = sub.add_parser("targets", parents=[common], help="show the matrix")
    t.add_argument("--json", action="store_true", help="machine-readable, for CI matrices")
    t.add_argument("--ref", type=parents.tag,
                   help="the matrix at this pinned upstream tag: the targets that build it")
    t.add_argument("--builds", action="store_true",
                   help="with --json: the release workflow's build jobs, one per builder with its targets "
                        "({builder, targets, names, commit})")
    t.set_defaults(run=cmd_targets)

    pl = sub.add_parser("plan", parents=[common, parents.selection()],
                        help="show what a build would do, with stage hashes")
    pl.add_argument("--json", action="store_true", help="machine-readable: stage hashes and image, for CI "
                                                        "cache keys")
    pl.set_defaults(run=cmd_plan)


def cmd_build(args) -> None:
    settings = parents.settings(args)
    matrix = targets.load(settings.targets_file)
    chosen = parents.selected(args, matrix, settings)
    table = stages.STAGES
    skip, add = parents.stage_choice(args, table, args.adds)
    # Plan everything first: a bad patch header or template fails before any work starts.
    patch_series = matrix.patches(settings.patches_dir)
    plans = [stages.plan_for(matrix, t, settings, patch_series) for t in chosen]
    outcomes = [orchestrate.build_target(p, settings, skip=skip, add=add, lean=args.lean,
                                         position=(i + 1, len(plans))) for i, p in enumerate(plans)]
    print("\n" + summary(outcomes), file=sys.stderr)


def summary(outcomes: list[orchestrate.Outcome], cwd: Path | None = None) -> str:
    """What a build command made: per target the archive, where, its size, the time of each stage, the
    system it runs on; then the command that comes next."""
    cwd = Path.cwd() if cwd is None else cwd
    total = sum(o.seconds for o in outcomes)
    lines = [f"built {len(outcomes)} target{'s' * (len(outcomes) != 1)} in {duration(total)} "
             "(full log of each: dist/<target>/build.log)"]
    nexts = []
    for o in outcomes:
        package = o.results.get("package")
        archive = package.archive if package is not None else None
        shown = _shown(archive, cwd) if archive is not None else "no archive (the package stage was left out)"
        size = f"  {archive.stat().st_size / 1e6:.1f} MB" if archive is not None and archive.exists() else ""
        lines.append(f"  {o.target}: {shown}{size}, {duration(o.seconds)}")
        lines.append("    stages: " + ", ".join(f"{name} {state if state != 'done' else duration(secs)}"
                                                for name, state, secs in o.stages))
        floor = package.manifest.floor if package is not None else None
        if floor is not None:
            verified = " (verified on a clean " + floor.suite + ")" if "verify" in o.results else ""
            lines.append(f"    runs on: glibc {floor.allows.get('GLIBC', '?')} and newer, the {floor.policy} "
                         f"floor{verified}")
        if "image" in o.results:
            image = o.results["image"]
            lines.append(f"    image: {image.tag} (saved as {_shown(image.tarball, cwd)})")
        if archive is not None:
            unpack = "--zstd " if archive.name.endswith(".tar.zst") else "-z "
            folder = f"ollama-{o.target}"
            nexts.append(f"mkdir {folder} && tar -C {folder} {unpack}-xf {_shown(archive, cwd)} && "
                         f"sudo {folder}/{PackageLayout.SHARE}/install.sh")
    if nexts:
        lines.append("next: install a package on this machine (systemd service, /usr/local by default):")
        lines += [f"  {cmd}" for cmd in nexts]
    return "\n".join(lines)


def _shown(path: Path, cwd: Path) -> str:
    """A path as the user would type it: relative to the current folder when inside it."""
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


def cmd_verify(args) -> None:
    settings = parents.settings(args)
    for archive in args.archives:
        path = Path(archive).resolve()
        if not path.is_file():
            raise UsageError(f"{archive}: no such archive file; give the path of an ollama-*.tar.zst "
                             "or .tar.gz")
        beside = verify.manifest_beside(path)
        with Log("verify", settings.places.log("verify")) as log:
            verify.verify_archive(path, settings, log, manifest=beside)
        print(f"{path.name}: verified")


def cmd_targets(args) -> None:
    settings = parents.settings(args)
    matrix = targets.load(settings.targets_file)
    ref = parents.ref_of(args, settings)
    chosen = matrix.select_at(["--all"], ref) if ref else list(matrix.targets.values())
    if args.builds:
        if not args.json:
            raise UsageError("--builds is a JSON list for CI: add --json")
        print(json.dumps(build_jobs(matrix, chosen), indent=2))
        return
    rows = [describe(t, matrix) for t in chosen]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    header = ("target", "backends", "gpu archs", "builder", "upstream", "runs on (floor)", "description")
    table = [header] + [(r["name"], ",".join(r["backends"]), ",".join(r["gpu_archs"]) or "-", r["builder"],
                         r["tag"], _floor_text(r["floor"]), r["description"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])


def build_jobs(matrix: targets.Matrix, chosen: list[targets.Target]) -> list[dict]:
    """The release workflow's build jobs (`targets --json --builds`): one per builder with its targets,
    their upstream commit and tag, and the dist/ folder of each (what CI uploads)."""
    commits = {t.name: t.source.commit for t in chosen}
    tags = {t.name: t.source.tag for t in chosen}
    return [{"builder": builder_name, "targets": names, "names": " ".join(names), "commit": commits[names[0]],
             "tag": tags[names[0]],
             "folders": [places.out_folder(n, tags[n], matrix.targets[n].source.tag) for n in names]}
            for builder_name, names in targets.build_jobs(chosen).items()]


def describe(t: targets.Target, matrix: targets.Matrix) -> dict:
    """A target as `targets --json` lists it."""
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


def cmd_plan(args) -> None:
    settings = parents.settings(args)
    matrix = targets.load(settings.targets_file)
    patch_series = matrix.patches(settings.patches_dir)
    chosen = parents.selected(args, matrix, settings)
    plans = [stages.plan_for(matrix, t, settings, patch_series) for t in chosen]
    if args.json:
        print(json.dumps([ci_record(p) for p in plans], indent=2))
        return
    for p in plans:
        print(f"{p.name}: {p.version} from {p.source_url} @ {p.target.source.commit[:12]} ({p.tag}) "
              f"-> dist/{p.out}/")
        print(f"  image   {builder.image_tag(p)}")
        for patch in p.patches:
            print(f"  patch   {patch.name} ({patch.upstream_status})")
        for stage, value in p.hashes.items():
            print(f"  {stage:8}{value}")
        for step in p.steps:
            env = "".join(f"{k}={v} " for k, v in step.env)
            print(f"  step    {env}{' '.join(step.argv)}")


def ci_record(p) -> dict:
    """A plan as `plan --json` gives it to CI: stage hashes (cache keys), images, the output folder."""
    return {"name": p.name, "version": p.version, "tag": p.tag, "commit": p.target.source.commit,
            "upstream_version": p.upstream_version, "out": p.out, "archive": p.archive_name,
            "image": builder.image_tag(p), "runtime_image": image.tag(p), "hashes": dict(p.hashes),
            "patches": [patch.name for patch in p.patches]}
