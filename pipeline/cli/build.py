"""Commands that build and look: build, image, verify, targets, plan."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline import orchestrate, stages
from pipeline.cli import parents
from pipeline.config import names, places, targets
from pipeline.config.policy import held_to, load_policy
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

    v = sub.add_parser("verify", parents=[parents.common(matrix=False)],
                       help="verify packages in a clean runtime-floor container")
    v.add_argument("archives", nargs="+", metavar="ARCHIVE",
                   help="package archives (ollama-*.tar.zst or .tar.gz; the manifest beside each is read)")
    v.add_argument("--debian-mirror", help=parents.MIRROR_HELP)
    v.set_defaults(run=cmd_verify)

    looks = parents.common(console=False)  # targets and plan print; no log reaches the console
    t = sub.add_parser("targets", parents=[looks], help="show the matrix")
    t.add_argument("--json", action="store_true", help="machine-readable, for CI matrices")
    t.add_argument("--ref", type=parents.tag,
                   help="the matrix at this pinned upstream tag: the targets that build it")
    t.add_argument("--builds", action="store_true",
                   help="with --json: the release workflow's build jobs, one per builder with its targets, "
                        "each at every tag it is released at ({builder, targets, names, commit, folders})")
    t.add_argument("--releases", action="store_true",
                   help="with --json: every target at every tag it is released at ({name, selector, "
                        "artifact, tag, upstream_version, note, prerelease, latest}), for the image jobs")
    t.add_argument("--release-tag", type=parents.tag, metavar="TAG",
                   help="with --releases: this project's tag being released; a pre-release tag "
                        "(v1.4.0-rc.1) sets prerelease and moves no stable image tag (latest false)")
    t.set_defaults(run=cmd_targets)

    pl = sub.add_parser("plan", parents=[looks, parents.selection()],
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
    if args.release_tag and not args.releases:
        raise UsageError("--release-tag goes with --json --releases")
    if args.builds or args.releases:
        if not args.json:
            flag = "--builds" if args.builds else "--releases"
            raise UsageError(f"{flag} is a JSON list for CI: add --json")
        # Without a ref, each target at every tag targets.toml releases it at.
        released = chosen if ref else matrix.releases(chosen)
        prerelease = bool(args.release_tag) and names.is_prerelease(args.release_tag)
        out = (build_jobs(matrix, released) if args.builds
               else [release_entry(matrix, t, prerelease=prerelease) for t in released])
        print(json.dumps(out, indent=2))
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
    """The release workflow's build jobs (`targets --json --builds`): one per builder with its targets
    (TARGET, or TARGET@TAG at another tag than its own: the artifact names and the build command's
    selectors), their upstream commits (the Go module cache's key) and tags, and the dist/ folder of
    each (what CI uploads)."""
    jobs: dict[str, list[targets.Target]] = {}
    for t in chosen:
        jobs.setdefault(t.builder, []).append(t)
    out = []
    for builder_name, members in jobs.items():
        selectors = [matrix.selector(t) for t in members]
        out.append({"builder": builder_name, "targets": selectors, "names": " ".join(selectors),
                    "commit": "+".join(dict.fromkeys(t.source.commit for t in members)),
                    "tag": members[0].source.tag, "tags": [t.source.tag for t in members],
                    "folders": [places.out_folder(t.name, t.source.tag, matrix.targets[t.name].source.tag)
                                for t in members]})
    return out


def release_entry(matrix: targets.Matrix, t: targets.Target, *, prerelease: bool = False) -> dict:
    """One target at one release tag, as the image jobs take it: the artifact its build uploads, the
    upstream version its assets and image tags carry, why it is released at that tag, and whether its
    image also gets the plain `:<target>` tag (`latest`: at the target's own tag, and never in a
    pre-release of this project, which keeps the stable tags where they are)."""
    own = matrix.targets[t.name].source.tag
    selector = matrix.selector(t)
    return {"name": t.name, "selector": selector, "artifact": selector, "tag": t.source.tag,
            "commit": t.source.commit, "upstream_version": t.source.tag.removeprefix("v"),
            "folder": places.out_folder(t.name, t.source.tag, own), "note": t.release_note,
            "prerelease": prerelease, "latest": t.source.tag == own and not prerelease}


def describe(t: targets.Target, matrix: targets.Matrix) -> dict:
    """A target as `targets --json` lists it."""
    policy_name = matrix.builders[t.builder].policy
    floor = None
    if policy_name:
        p = held_to(load_policy(policy_name), t.package.floor_pass)
        floor = {"policy": p.name, "suite": p.suite, "description": p.description, **dict(p.max_versions)}
    return {"name": t.name, "description": t.description, "backends": list(t.backends),
            "gpu_archs": list(t.gpu_archs), "builder": t.builder, "tag": t.source.tag,
            "commit": t.source.commit, "upstream_version": t.source.tag.removeprefix("v"),
            "versions": t.versions, "runtime_env": t.runtime_env, "floor": floor,
            "releases": [{"tag": tag, "note": t.releases.get(tag, "")} for tag in t.release_tags()]}


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
        print(json.dumps([ci_record(p, settings) for p in plans], indent=2))
        return
    for p in plans:
        print(f"{p.name}: {p.version} from {p.source_url} @ {p.target.source.commit[:12]} ({p.tag}) "
              f"-> dist/{p.out}/")
        print(f"  image   {builder.image_tag(p, settings)}")
        if p.host is not None:
            print(f"  host    {builder.host_tag(p, settings)} (CPU backends, bin/ollama)")
        for patch in p.patches:
            print(f"  patch   {patch.name} ({patch.upstream_status})")
        for stage, value in p.hashes.items():
            print(f"  {stage:8} {value}")
        for step in p.steps:
            env = "".join(f"{k}={v} " for k, v in step.env)
            print(f"  step    {env}{' '.join(step.argv)}")


def ci_record(p, settings) -> dict:
    """A plan as `plan --json` gives it to CI: stage hashes (cache keys), images, the output folder."""
    return {"name": p.name, "version": p.version, "tag": p.tag, "commit": p.target.source.commit,
            "upstream_version": p.upstream_version, "out": p.out, "archive": p.archive_name,
            "image": builder.image_tag(p, settings), "host_image": builder.host_tag(p, settings),
            "runtime_image": image.tag(p), "hashes": dict(p.hashes),
            "patches": [patch.name for patch in p.patches]}
