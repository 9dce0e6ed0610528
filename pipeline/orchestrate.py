"""Run a target's stages in table order (pipeline.stages.STAGES), each reusing its cached result when
its hash is unchanged or doing the work, and hand each stage the results of the stages it needs.

One build per target and cache at a time (a lock file naming the holder's pid).
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline import stages as stage_table
from pipeline.config.settings import Settings
from pipeline.errors import PipelineError
from pipeline.infra import owner
from pipeline.infra.log import Log, duration, size
from pipeline.stages.plan import Context, Plan
from pipeline.records import record


@record(positional=True)
class Outcome:
    target: str
    results: Mapping[str, Any]
    log: Path
    stages: tuple[tuple[str, str, float], ...]
    seconds: float

    @property
    def archive(self) -> Path:
        return self.results["package"].archive


def _exclusive(plan: Plan, settings: Settings):
    """One build per target and cache at a time: two would share scratch folders and outputs."""
    path = settings.cache / "locks" / f"{plan.out}.lock"

    def busy(pid: str) -> None:
        raise PipelineError(f"another build of {plan.name} is running (pid {pid}, lock {path}); wait for it "
                            "or stop it")

    return owner.pid_lock(path, busy)


def build_target(plan: Plan, settings: Settings, *, skip: Sequence[str] = (), add: Sequence[str] = (),
                 table: Sequence[stage_table.Stage] | None = None, lean: bool = False) -> Outcome:
    """Run the default stages of the table (less `skip`, plus the optional ones in `add`) for one plan.
    With `lean`, a stage's discard frees what it kept for later runs as soon as no stage still to run
    needs its result (the build output once packaged, the runtime image once saved): a release job
    that builds several targets on one small disk holds little more than what dist/ keeps of each."""
    table = stage_table.STAGES if table is None else table
    chosen = stage_table.select(table, skip=skip, add=add)
    log_path = settings.dist / plan.out / "build.log"
    with _exclusive(plan, settings), Log(plan.name, log_path) as log:
        log.line(f"target {plan.name}: {plan.target.description}")
        log.line(f"version {plan.version} from {plan.source_url} ({plan.target.source.tag})")
        for stage in chosen:
            log.line(f"hash {stage.name:8} {plan.hashes[stage.name][:16]}")
        results = run_stages(plan, settings, log, chosen, lean=lean)
        made = [str(r.archive) for r in results.values() if hasattr(r, "archive") and isinstance(r.archive, Path)]
        log.line(f"done in {duration(log.elapsed)}" + (f": {made[-1]}" if made else ""))
        return Outcome(plan.name, types.MappingProxyType(results), log_path, tuple(log.stages), log.elapsed)


def run_stages(plan: Plan, settings: Settings, log: Log, chosen: Sequence[stage_table.Stage], *,
               lean: bool = False) -> dict[str, Any]:
    """Run `chosen` (in table order, each after the stages it needs) inside an open log; with `lean`,
    discard each result that no stage still to run needs."""
    results: dict[str, Any] = {}
    discarded: set[str] = set()
    for i, stage in enumerate(chosen):
        with log.stage(stage.name) as handle:
            ctx = Context(name=stage.name, plan=plan, settings=settings, log=log, stage=handle)
            results[stage.name] = stage.run(ctx, **{n: results[n] for n in stage.needs})
        if not lean:
            continue
        still_needed = {n for later in chosen[i + 1:] for n in later.needs}
        for done in chosen[:i + 1]:
            if done.discard is not None and done.name not in still_needed and done.name not in discarded:
                discarded.add(done.name)
                ctx = Context(name=done.name, plan=plan, settings=settings, log=log, stage=None)
                freed = done.discard(ctx, results[done.name])
                log.line(f"lean: {done.name} freed {size(freed)} (dist/ keeps the outputs)")
    return results


def results_of(plan: Plan, settings: Settings, log: Log, wanted: Sequence[str],
               table: Sequence[stage_table.Stage] | None = None) -> dict[str, Any]:
    """The results of the stages in `wanted` and of everything they need, for tools that need a tree
    or a builder image (the patch tooling, the memory workbench, benchmarks)."""
    table = stage_table.STAGES if table is None else table
    by_name = {s.name: s for s in table}
    needed: set[str] = set()
    todo = list(wanted)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo.extend(by_name[name].needs)
    return run_stages(plan, settings, log, [s for s in table if s.name in needed])
