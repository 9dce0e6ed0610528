"""Patches stage: the target's series applied to a copy of the source tree, in order, exactly (no fuzz).

    SourceTree ─▶ PatchedTree (cache/trees/patched-<hash>)

The copy is private until every patch applied, then it becomes the cached tree, so a failure never
leaves a half-patched tree behind. build/ and dist/ are made as mount points for the build's writable
folders over the read-only tree.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipeline.config.settings import Settings
from pipeline.infra import fsutil, git
from pipeline.upstream import layouts
from pipeline.stages.plan import Context, Plan
from pipeline.stages.results import PatchedTree, SourceTree

RECORD = "patches.json"


def key(plan: Plan, settings: Settings) -> object:
    return [(p.name, p.sha256) for p in plan.patches]


def tree_dir(ctx: Context) -> Path:
    return ctx.settings.cache / "trees" / f"patched-{ctx.hash[:24]}"


def run(ctx: Context, *, source: SourceTree) -> PatchedTree:
    plan, log = ctx.plan, ctx.log
    folder = tree_dir(ctx)
    record = folder / RECORD
    if record.is_file():
        ctx.stage.cached(f"tree {folder.name} patched earlier")
        return PatchedTree(path=folder / "tree", source=source, patches=tuple(json.loads(record.read_text())))
    with fsutil.staging_dir(folder) as staging:
        tree = staging / "tree"
        shutil.copytree(source.path, tree, symlinks=True)
        for patch in plan.patches:
            git.apply(patch, tree, log, ref=plan.target.source.tag)
        for sub in (layouts.BUILD, layouts.OUTPUT):
            (tree / sub).mkdir(exist_ok=True)
        names = [p.name for p in plan.patches]
        (staging / RECORD).write_text(json.dumps(names) + "\n")
    return PatchedTree(path=folder / "tree", source=source, patches=tuple(names))
