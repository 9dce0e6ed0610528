"""Running the memory workbench: both trees of an upstream ref compiled with the driver into test
binaries (kept in the cache under a key of their inputs), run on the scenarios, their results turned
into the report."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from docker.types import Mount

from pipeline.config.paths import TEMPLATES
from pipeline.config.settings import Settings
from pipeline.config.targets import go_version, load
from pipeline.errors import ConfigError
from pipeline.infra import fsutil, git, owner, runner, toolchain
from pipeline.infra.log import Log
from pipeline.tools import gobox, patchtool
from pipeline.tools.memtest.driver import DRIVER_NAME, DRIVER_TEMPLATES, driver_input, render_driver
from pipeline.tools.memtest.report import report
from pipeline.tools.memtest.scenario import Scenario, check_for_ref, driver_kind

# Where `go test -c` writes the binary in a tree, and where a run's input and results lie.
IO_DIR = ".pipeline-memtest"
KEEP_BINARIES = 6
# Where the kept binaries are mounted in the builder.
BIN_MOUNT = "/memtest"


def run(settings: Settings, log: Log, scenarios: Sequence[Scenario], ref: str, *, host_go: bool = False,
        targets: Sequence[str] = ()) -> dict:
    """Both trees of `ref` through the driver; returns the report (see `report`).

    Each side's test binary (`go test -c`) is kept in the cache under a key of what went into it
    (`cache_key`); a later run with the same upstream commit, patches, driver and toolchain runs the
    kept binaries and compiles nothing. One memtest at a time per cache (`locked`). The driver follows
    the ref (scenario.driver_kind): estimateGPULayers up to v0.12.10, llamaServer.Load / ollamaServer.Load
    from v0.12.11."""

    kind = driver_kind(ref)
    check_for_ref(scenarios, ref)
    if host_go and not shutil.which("go"):
        raise ConfigError("--host-go: no `go` on PATH")
    matrix = load(settings.targets_file)
    if targets:
        targets = [t.name for t in matrix.select(list(targets))]  # names or globs; typos get a close match
    home = settings.places.memtest
    owner.claim(settings.places)
    with locked(home / "lock", log):
        gitdir = patchtool.repository(matrix, settings, [ref], log)
        commit = git.commit_of(gitdir, ref, log)
        image = None if host_go else gobox.builder_image(matrix, settings, log)
        go_env = {} if host_go else gobox.go_env(matrix, ref)
        tool = _host_toolchain(log) if host_go else f"builder {image} {go_env.get('PATH', 'default Go')}"
        in_range = patchtool.in_range(matrix, settings, ref, targets)
        series_in_range = [(p.name, p.path.read_bytes()) for p in in_range]
        template = DRIVER_TEMPLATES[kind]
        driver = (TEMPLATES / template).read_bytes()
        keys = {"before": cache_key(commit, (), driver, tool),
                "after": cache_key(commit, series_in_range, driver, tool)}
        binaries = {side: home / "bin" / f"{key}.test" for side, key in keys.items()}
        meta = home / "bin" / f"{keys['after']}.json"
        applied = _recorded(meta, log)
        with fsutil.scratch_dir(settings.places.scratch, "memtest") as tmp:
            for side in ("before", "after"):
                if binaries[side].is_file() and (side == "before" or applied is not None):
                    log.line(f"{side}: test binary from the cache ({binaries[side].name[:16]})")
                    continue
                log.stage_name = side
                tree = Path(tmp) / side
                if side == "before":
                    git.export(gitdir, commit, tree, log)
                else:
                    applied = patchtool.apply(matrix, settings, ref, tree, log, targets)
                _compile(tree, binaries[side], settings, log, matrix, image, kind=kind, go_env=go_env,
                         host_go=host_go)
                if side == "after":
                    record = {"ref": ref, "commit": commit, "applied": applied}
                    fsutil.write_text(meta, json.dumps(record) + "\n")
                shutil.rmtree(tree, ignore_errors=True)
            log.line(f"patched tree: {ref} + {', '.join(applied or []) or 'no patch in range'}")
            _prune(home / "bin", keep={*binaries.values(), meta})
            inputs = [driver_input(s) for s in scenarios]
            log.stage_name = "run"
            results = _execute(Path(tmp) / "run", binaries, inputs, settings, log, matrix, image)
    return report(scenarios, results, ref=ref, commit=commit, patches=applied or [], driver=template)


def _recorded(meta: Path, log: Log) -> list[str] | None:
    """The patches a kept patched-side binary was made with (its record beside it); None when there is no
    record, or one of another shape (then the binary is made again)."""
    try:
        applied = json.loads(meta.read_text(encoding="utf-8"))["applied"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.line(f"{meta}: not a record of this pipeline ({exc!r}); compiling again")
        return None
    if not isinstance(applied, list) or not all(isinstance(n, str) for n in applied):
        log.line(f"{meta}: not a record of this pipeline (applied is not a list of names); compiling again")
        return None
    return applied


def cache_key(commit: str, patches: Sequence[tuple[str, bytes]], driver: bytes, toolchain: str) -> str:
    """What a side's test binary is made of: the upstream commit, the patches applied to it (names and
    contents, in order), the driver template and the toolchain that compiled it."""
    h = hashlib.sha256()
    parts = [f"commit {commit}", f"driver {hashlib.sha256(driver).hexdigest()}", f"toolchain {toolchain}",
             *(f"patch {name} {hashlib.sha256(data).hexdigest()}" for name, data in patches)]
    for part in parts:
        h.update(part.encode() + b"\n")
    return h.hexdigest()[:32]


def locked(path: Path, log: Log):
    """An exclusive lock on `path`: a second memtest on the same cache waits for the first, which owns
    the fixed compile folder and the binaries being written."""
    return owner.pid_lock(path, lambda pid: log.line(f"waiting for another memtest (pid {pid}, lock {path})"))


def _host_toolchain(log: Log) -> str:
    out = runner.run(log, ["go", "env", "GOVERSION", "GOOS", "GOARCH", "CC", "CXX", "CGO_CFLAGS",
                           "CGO_CXXFLAGS", "CGO_LDFLAGS"], capture=True, quiet=True).stdout.decode()
    return "host " + " ".join(out.split())


def _check_host_go(tree: Path, log: Log) -> None:
    """The host's Go must be at least the tree's go.mod `go` line (toolchains are never downloaded)."""
    m = re.search(r"^go\s+(\S+)\s*$", (tree / "go.mod").read_text(), re.M)
    have = runner.run(log, ["go", "env", "GOVERSION"], capture=True, quiet=True).stdout.decode().strip()
    try:
        old = m is not None and go_version(have) < go_version(m[1])
    except ConfigError:
        old = False  # a development Go ("devel ..."): let go itself decide
    if old:
        raise ConfigError(f"--host-go: this machine's {have} is older than the go {m[1]} the tree's "
                          "go.mod needs; put a newer Go first on PATH or leave out --host-go (the Go builder "
                          "has one)")


def _prune(folder: Path, keep: set[Path]) -> None:
    """Keep the newest KEEP_BINARIES test binaries (and the ones this run uses)."""
    binaries = sorted(folder.glob("*.test"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in binaries[KEEP_BINARIES:]:
        if old not in keep:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
    for b in keep:
        if b.is_file():
            os.utime(b)


def _compile(tree: Path, binary: Path, settings: Settings, log: Log, matrix, image: str | None, *,
             kind: str = "estimate", go_env: Mapping[str, str] | None = None, host_go: bool = False) -> None:
    """`go test -c` of the tree's llm package with the driver of `kind` in it, into `binary`."""
    (tree / "llm" / DRIVER_NAME).write_text(render_driver(tree, kind))
    if host_go:
        _check_host_go(tree, log)
    (tree / IO_DIR).mkdir()
    argv = ["go", "test", "-c", "-vet=off", "-o", f"{IO_DIR}/memtest.test", "./llm"]
    if image is None:
        # Both trees, and every later run, compile in the same folder: the cgo flags of ./llama name
        # ${SRCDIR}, so Go's build cache only serves llama.cpp's objects (minutes to compile) to a tree
        # at the same path. A folder in the pipeline cache, not the run's temporary one.
        same_place = settings.places.memtest_src
        shutil.rmtree(same_place, ignore_errors=True)
        tree.rename(same_place)
        try:
            runner.run(log, argv, cwd=same_place)
        finally:
            same_place.rename(tree)
    else:
        # In the builder the tree is always /src and Go's build cache is the user's volume.
        with gobox.go_container(matrix, settings, log, tree, image=image) as box:
            box.exec(argv, env=dict(go_env or {}))
    binary.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tree / IO_DIR / "memtest.test", binary)


def _execute(folder: Path, binaries: Mapping[str, Path], inputs: list[dict], settings: Settings, log: Log,
             matrix, image: str | None) -> dict[str, dict]:
    """Run each side's test binary on the scenarios; results by side and scenario name."""
    folder.mkdir()
    (folder / "input.json").write_text(json.dumps(inputs))
    args = ["-test.run", "^TestPipelineMemtest$", "-test.count=1"]
    if image is None:
        for side, binary in binaries.items():
            runner.run(log, [binary, *args], cwd=folder,
                       env={"PIPELINE_MEMTEST_INPUT": str(folder / "input.json"),
                            "PIPELINE_MEMTEST_OUTPUT": str(folder / f"results-{side}.json")})
    else:
        bin_dir = binaries["before"].parent
        mount = Mount(BIN_MOUNT, str(bin_dir), type="bind", read_only=True)
        with gobox.go_container(matrix, settings, log, folder, image=image, extra=[mount]) as box:
            for side, binary in binaries.items():
                box.exec([f"{BIN_MOUNT}/{binary.name}", *args],
                         env={"PIPELINE_MEMTEST_INPUT": f"{toolchain.SRC}/input.json",
                              "PIPELINE_MEMTEST_OUTPUT": f"{toolchain.SRC}/results-{side}.json"})
    return {side: {r["name"]: r for r in json.loads((folder / f"results-{side}.json").read_text())}
            for side in binaries}
