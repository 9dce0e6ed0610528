"""Where the pipeline puts things: the one owner of every folder name under dist/ and the cache.

    dist/<target>/           a target's archive, manifests, records and build.log (TARGET@TAG at
                             another upstream tag)
    dist/release/            the assembled release (release.dry-run/: what a dry run assembles)
    dist/<tool>.json|.md     reports of memtest, track and bench; dist/<tool>.log their logs
    cache/git/               mirrors of upstream repositories
    cache/trees/             exported and patched source trees, by stage hash
    cache/builds/            finished build outputs, by target and stage hash
    cache/sysroots/          the libraries a package's closure took from a builder image
    cache/scratch/           work folders of running stages (swept when their owner died)
    cache/locks/             one lock per target being built
    cache/memtest/, memtest-src/   the memory workbench's test binaries and compile folder
    cache/tools/             the pipeline's own C helpers (glibc compatibility library, load probe), by hash

`Places` is made from Settings (`settings.places`); every other module asks it for a path instead of
joining folder names. CACHE_FOLDERS and DIST_NAMES are what target names may not be (config.names).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.records import record

# Folders of the cache.
GIT, TREES, BUILDS, SYSROOTS, SCRATCH, LOCKS = "git", "trees", "builds", "sysroots", "scratch", "locks"
MEMTEST, MEMTEST_SRC = "memtest", "memtest-src"
TOOLS = "tools"
CACHE_FOLDERS = (GIT, TREES, BUILDS, SYSROOTS, SCRATCH, LOCKS, MEMTEST, MEMTEST_SRC, TOOLS)
# What dist/ holds beside the targets' folders: the release, and the tools' reports, logs and folders.
RELEASE = "release"
DIST_NAMES = (RELEASE, "memtest", "track", "bench", "verify", "patches")
# Hash digits in the names of hash-keyed cache folders.
HASH_DIGITS = 24


def out_folder(target: str, tag: str, default_tag: str) -> str:
    """A target's output folder name under dist/: the target's, or TARGET@TAG at another upstream tag."""
    if not default_tag or tag == default_tag:
        return target
    return f"{target}@{tag}"


def target_folder(dist: Path, out: str) -> Path:
    """A target's output folder in `dist`: dist/<out>."""
    return dist / out


def release_folder(dist: Path, *, dry_run: bool = False) -> Path:
    """dist/release, or dist/release.dry-run: a dry run never touches the last real release."""
    return dist / (f"{RELEASE}.dry-run" if dry_run else RELEASE)


@record
class Places:
    dist: Path
    cache: Path

    # --- dist/ ---------------------------------------------------------------------------------

    def target(self, out: str) -> Path:
        """A target's output folder: dist/<out> (out: TARGET, or TARGET@TAG at another tag)."""
        return target_folder(self.dist, out)

    def target_log(self, out: str, name: str = "build") -> Path:
        """A log of a target's folder: dist/<out>/build.log (gpubench.log ...)."""
        return self.target(out) / f"{name}.log"

    def release(self, *, dry_run: bool = False) -> Path:
        return release_folder(self.dist, dry_run=dry_run)

    def report(self, tool: str, suffix: str = "json") -> Path:
        """A tool's report: dist/memtest.json, dist/track.md, dist/bench.json."""
        return self.dist / f"{tool}.{suffix}"

    def log(self, tool: str, name: str | None = None) -> Path:
        """A tool's log: dist/<tool>.log, or dist/<tool>/<name>.log for a tool with several."""
        return self.dist / f"{tool}.log" if name is None else self.dist / tool / f"{name}.log"

    # --- the cache -----------------------------------------------------------------------------

    def mirror(self, key: str) -> Path:
        """The git mirror of an upstream URL, named by a key of the URL: cache/git/<key>.git."""
        return self.cache / GIT / f"{key}.git"

    def tree(self, kind: str, stage_hash: str) -> Path:
        """A source tree of a stage: cache/trees/<kind>-<hash>."""
        return self.cache / TREES / f"{kind}-{stage_hash[:HASH_DIGITS]}"

    def build(self, target: str, stage_hash: str) -> Path:
        """A finished build: cache/builds/<target>-<hash>."""
        return self.cache / BUILDS / f"{target}-{stage_hash[:HASH_DIGITS]}"

    def sysroot(self, builder_hash: str) -> Path:
        """The libraries taken from one builder image: cache/sysroots/<builder hash>."""
        return self.cache / SYSROOTS / builder_hash[:HASH_DIGITS]

    def tool(self, name: str, key: str) -> Path:
        """A compiled helper of the pipeline's own: cache/tools/<name>-<key>/<name>."""
        return self.cache / TOOLS / f"{name}-{key[:HASH_DIGITS]}"

    @property
    def scratch(self) -> Path:
        return self.cache / SCRATCH

    def lock(self, out: str) -> Path:
        """One build per target folder at a time: cache/locks/<out>.lock."""
        return self.cache / LOCKS / f"{out}.lock"

    @property
    def memtest(self) -> Path:
        """The memory workbench's home: its lock and its kept test binaries."""
        return self.cache / MEMTEST

    @property
    def memtest_src(self) -> Path:
        """Where --host-go compiles the workbench's trees, always at the same path (Go's build cache)."""
        return self.cache / MEMTEST_SRC
