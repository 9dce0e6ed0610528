"""Patches stage: the target's series applied to a copy of the source tree, in order, exactly (no fuzz).

    SourceTree ─▶ PatchedTree (cache/trees/patched-<hash>)

The copy is private until every patch applied, then it becomes the cached tree, so a failure never
leaves a half-patched tree behind. build/ and dist/ are made as mount points for the build's writable
folders over the read-only tree.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.config.places import Places
from pipeline.config.settings import Settings
from pipeline.infra import git
from pipeline.stages.plan import Context, Plan
from pipeline.stages.results import TREE, PatchedTree, SourceTree
from pipeline.upstream import layouts


def key(plan: Plan, settings: Settings) -> object:
    return [(p.name, p.sha256) for p in plan.patches]


def where(places: Places, plan: Plan, stage_hash: str) -> Path:
    return places.tree("patched", stage_hash)


def reuse(ctx: Context, tree: PatchedTree, *, source: SourceTree) -> str:
    return f"tree {ctx.folder.name} patched earlier"


def run(ctx: Context, *, source: SourceTree) -> PatchedTree:
    plan, log = ctx.plan, ctx.log
    tree = ctx.staging / TREE
    shutil.copytree(source.path, tree, symlinks=True)
    for patch in plan.patches:
        git.apply(patch, tree, log, ref=plan.target.source.tag)
    for sub in (layouts.BUILD, layouts.OUTPUT):
        (tree / sub).mkdir(exist_ok=True)
    return PatchedTree(path=tree, source=source, patches=tuple(p.name for p in plan.patches))
