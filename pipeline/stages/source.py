"""Source stage: the pinned upstream commit, verified and exported into the cache.

    Plan ─▶ SourceTree (cache/trees/source-<hash>)

A URL is mirrored into the cache and only the pinned tag is fetched; a local repository is read in
place (a `git clone --mirror` or a partial clone works without network). The tag must still point at
the pinned commit: a moved tag stops the build. From v0.30, whose tree names a llama.cpp tag instead
of holding ggml, the pinned llama.cpp is written into the tree too (pipeline/infra/llamacpp.py), so no
build fetches at configure time. The tree is exported into a staging folder that becomes the cached
tree only when complete.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.config.settings import Settings
from pipeline.infra import fsutil, git
from pipeline.upstream import llamacpp
from pipeline.stages.plan import Context, Plan
from pipeline.stages.results import SourceTree

RECORD = "source.json"


def key(plan: Plan, settings: Settings) -> object:
    # Keyed by the commit, not the URL: a mirror gives the same tree.
    return plan.target.source.commit


def tree_dir(ctx: Context) -> Path:
    return ctx.settings.cache / "trees" / f"source-{ctx.hash[:24]}"


def run(ctx: Context) -> SourceTree:
    plan, log = ctx.plan, ctx.log
    t = plan.target.source
    folder = tree_dir(ctx)
    record = folder / RECORD
    if record.is_file() and _complete(folder, json.loads(record.read_text())):
        if git.is_local(plan.source_url):
            # A local repository is cheap to check: verify the tag even when the tree is cached.
            gitdir = git.repository(plan.source_url, [t.tag], ctx.settings.cache, log)
            git.verify_tag(gitdir, t.tag, t.commit, plan.source_url, log)
            ctx.stage.cached(f"tree {folder.name} exported earlier; tag verified")
        else:
            ctx.stage.cached(f"tree {folder.name} exported earlier")
        return _result(folder, json.loads(record.read_text()))
    gitdir = git.repository(plan.source_url, [t.tag], ctx.settings.cache, log)
    git.verify_tag(gitdir, t.tag, t.commit, plan.source_url, log)
    with fsutil.staging_dir(folder) as staging:
        left_out = git.export(gitdir, t.commit, staging / "tree", log)
        meta = {"commit": t.commit, "commit_time": git.commit_time(gitdir, t.commit, log), "left_out": left_out}
        if tag := llamacpp.tag_in(gitdir, t.commit, log):
            commit = llamacpp.supply(staging / "tree", tag, t.tag, plan.llama_cpp, ctx.settings, log)
            meta["llama_cpp"] = [tag, commit]
        (staging / RECORD).write_text(json.dumps(meta, indent=2) + "\n")
    return _result(folder, meta)


def _complete(folder: Path, meta: dict) -> bool:
    """A cached tree of a version that fetches llama.cpp holds it (trees exported before it was
    supplied do not, and are exported again)."""
    return "llama_cpp" in meta or not (folder / "tree" / llamacpp.VERSION_FILE).exists()


def _result(folder: Path, meta: dict) -> SourceTree:
    llama = meta.get("llama_cpp")
    return SourceTree(path=folder / "tree", commit=meta["commit"], commit_time=int(meta["commit_time"]),
                      left_out=tuple(meta["left_out"]), llama_cpp=tuple(llama) if llama else None)
