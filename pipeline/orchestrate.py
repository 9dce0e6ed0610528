"""Run the stages for one target, in order, each either reusing its cached result or doing the work:

    plan -> source -> patches -> builder -> build -> package -> verify
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
from pathlib import Path

from . import build, builder, fsutil, libraries, package, patches, runner, source, verify
from .errors import PipelineError
from .log import Log, duration
from .plan import Plan
from .settings import Settings


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    target: str
    archive: Path
    log: Path
    stages: tuple[tuple[str, str, float], ...]
    seconds: float


def tree_dir(plan: Plan, settings: Settings) -> Path:
    return settings.cache / "trees" / plan.hashes["patches"][:24]


@contextlib.contextmanager
def _exclusive(plan: Plan, settings: Settings):
    """One build per target and cache at a time: two would share scratch folders and outputs."""
    path = settings.cache / "locks" / f"{plan.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise PipelineError(f"another build of {plan.name} is running (pid {f.read().strip() or '?'}, "
                                f"lock {path}); wait for it or stop it") from None
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        yield


def build_target(plan: Plan, settings: Settings, *, verify_package: bool = True) -> Outcome:
    log_path = settings.dist / plan.name / "build.log"
    with _exclusive(plan, settings), Log(plan.name, log_path) as log:
        log.line(f"target {plan.name}: {plan.target.description}")
        log.line(f"version {plan.version} from {plan.source_url} ({plan.target.source.tag})")
        for stage, value in plan.hashes.items():
            log.line(f"hash {stage:8} {value[:16]}")
        tree = prepare_tree(plan, settings, log)
        meta = json.loads(tree.with_name(tree.name + ".json").read_text())

        with log.stage("builder") as stage:
            image_id = builder.ensure(plan, settings, log, stage)

        with log.stage("build") as stage:
            epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or meta["commit_time"])
            build_dir, info = build.run(plan, tree, image_id, epoch, settings, log, stage)

        with log.stage("package") as stage:
            archive = package.run(plan, build_dir, info, settings.dist, log, stage,
                                  libraries=lambda root: libraries.resolve(plan, root, settings, log),
                                  owners=lambda: libraries.owners(plan, settings))

        if verify_package:
            with log.stage("verify") as stage:
                _verify(plan, archive, settings, log, stage)

        log.line(f"done in {duration(log.elapsed)}: {archive}")
        return Outcome(plan.name, archive, log_path, tuple(log.stages), log.elapsed)


def _verify(plan: Plan, archive: Path, settings: Settings, log: Log, stage) -> None:
    """Verify once per archive: the record beside it names the archive's sha256."""
    record = settings.dist / plan.name / "verified.json"
    digest = json.loads(package.manifest_path(plan, settings.dist).read_text())["archive"]["sha256"]
    if record.is_file() and json.loads(record.read_text()).get("sha256") == digest:
        stage.cached(f"{archive.name} verified earlier")
        return
    result = verify.verify(archive, settings, log)
    fsutil.write_text(record, json.dumps({"archive": archive.name, "sha256": digest, **result}, indent=2) + "\n")


def prepare_tree(plan: Plan, settings: Settings, log: Log) -> Path:
    """The source and patches stages: a verified, exported, patched tree in the cache.

    The tree is built in a private staging folder and renamed into place only once every patch
    applied, so no half-exported or half-patched tree is ever visible.
    """
    tree = tree_dir(plan, settings)
    meta_file = tree.with_name(tree.name + ".json")
    done = tree.is_dir() and meta_file.is_file()
    staging = tree.with_name(f"{tree.name}.partial-{os.getpid()}")
    t = plan.target.source
    try:
        with log.stage("source") as stage:
            if done and not source.is_local(plan.source_url):
                stage.cached(f"tree {tree.name[:12]} exported earlier")
            else:
                # A local repository is cheap to check: verify the tag even when the tree is cached.
                gitdir = source.resolve(plan.source_url, t.tag, t.commit, settings.cache, log)
                if done:
                    stage.cached(f"tree {tree.name[:12]} exported earlier; tag verified")
                else:
                    shutil.rmtree(staging, ignore_errors=True)
                    skipped = source.export(gitdir, t.commit, staging, log)
                    out = runner.run(log, ["git", "--git-dir", gitdir, "show", "-s", "--format=%ct",
                                           t.commit], capture=True, quiet=True)
                    meta = {"commit": t.commit, "commit_time": int(out.stdout.decode().strip()),
                            "left_out": skipped}

        with log.stage("patches") as stage:
            if done:
                stage.cached(f"tree {tree.name[:12]} patched earlier")
            else:
                patches.apply_series(plan.patches, staging, log, ref=t.tag)
                meta["patches"] = [p.name for p in plan.patches]
                # Mount points for the build's writable folders over the read-only tree.
                for sub in ("build", "dist"):
                    (staging / sub).mkdir(exist_ok=True)
                # The record goes first: a record without its tree is redone, a tree is never half there.
                fsutil.write_text(meta_file, json.dumps(meta, indent=2) + "\n")
                shutil.rmtree(tree, ignore_errors=True)
                os.rename(staging, tree)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return tree
