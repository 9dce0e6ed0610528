"""Source stage: the pinned upstream commit, verified and exported into the cache.

    Plan ─▶ SourceTree (cache/trees/source-<hash>)

A URL is mirrored into the cache and only the pinned tag is fetched; a local repository is read in
place (a `git clone --mirror` or a partial clone works without network). The tag must still point at
the pinned commit: a moved tag stops the build. From v0.30, whose tree names a llama.cpp tag instead
of holding ggml, the pinned llama.cpp is written into the tree too (pipeline/upstream/llamacpp.py), so
no build fetches at configure time. The tree is exported into a staging folder that becomes the cached
tree only when complete.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config.places import Places
from pipeline.config.settings import Settings
from pipeline.infra import git
from pipeline.stages.plan import Context, Plan
from pipeline.stages.results import TREE, SourceTree
from pipeline.upstream import llamacpp


def key(plan: Plan, settings: Settings) -> object:
    # Keyed by the commit, not the URL: a mirror gives the same tree.
    return plan.target.source.commit


def where(places: Places, plan: Plan, stage_hash: str) -> Path:
    return places.tree("source", stage_hash)


def _verified_gitdir(ctx: Context) -> Path:
    plan, t = ctx.plan, ctx.plan.target.source
    gitdir = git.repository(plan.source_url, [t.tag], ctx.places, ctx.log)
    git.verify_tag(gitdir, t.tag, t.commit, plan.source_url, ctx.log)
    return gitdir


def reuse(ctx: Context, tree: SourceTree) -> str:
    if git.is_local(ctx.plan.source_url):
        # A local repository is cheap to check: verify the tag even when the tree is cached.
        _verified_gitdir(ctx)
        return f"tree {ctx.folder.name} exported earlier; tag verified"
    return f"tree {ctx.folder.name} exported earlier"


def run(ctx: Context) -> SourceTree:
    plan, log = ctx.plan, ctx.log
    t = plan.target.source
    gitdir = _verified_gitdir(ctx)
    tree = ctx.staging / TREE
    left_out = git.export(gitdir, t.commit, tree, log)
    llama = None
    if tag := llamacpp.tag_in(gitdir, t.commit, log):
        llama = (tag, llamacpp.supply(tree, tag, t.tag, plan.llama_cpp, ctx.settings, log))
    return SourceTree(path=tree, commit=t.commit, commit_time=git.commit_time(gitdir, t.commit, log),
                      left_out=tuple(left_out), llama_cpp=llama)
