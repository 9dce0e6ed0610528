"""Run a target's stages in table order (pipeline.stages.STAGES) and hand each stage the results of the
stages it needs.

A stage with a record (Stage.result and Stage.where) is cached here: a record of the stage's hash
that reads back (its result type's from_json) and that the stage's `reuse` still accepts is the
result, and the stage says "cached"; else the stage runs (in a staging copy of its folder, when
`staged`) and its record is written: {"hash": ..., <the result's fields>, "artifacts": [...]}. A record
that is damaged, of another shape or of another hash is treated as absent: the work is done again.

One build per target and cache at a time (a lock file naming the holder's pid).
"""

from __future__ import annotations

import dataclasses
import json
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline import stages as stage_table
from pipeline.config.settings import Settings
from pipeline.errors import ConfigError, InternalError, PackageError, PipelineError
from pipeline.infra import fsutil, owner
from pipeline.infra.log import Log, duration, size
from pipeline.records import record
from pipeline.stages.plan import Context, Plan


@record(positional=True)
class Outcome:
    target: str
    results: Mapping[str, Any]
    log: Path
    stages: tuple[tuple[str, str, float], ...]
    seconds: float
    # The files the run's stages left for the release, in table order (Stage.artifacts).
    artifacts: tuple[Path, ...] = ()

    @property
    def archive(self) -> Path:
        return self.results["package"].archive


def _exclusive(plan: Plan, settings: Settings):
    """One build per target and cache at a time: two would share scratch folders and outputs."""
    path = settings.places.lock(plan.out)

    def busy(pid: str) -> None:
        raise PipelineError(f"another build of {plan.name} is running (pid {pid}, lock {path}); wait for it "
                            "or stop it")

    return owner.pid_lock(path, busy)


def build_target(plan: Plan, settings: Settings, *, skip: Sequence[str] = (), add: Sequence[str] = (),
                 table: Sequence[stage_table.Stage] | None = None, lean: bool = False,
                 position: tuple[int, int] = (1, 1)) -> Outcome:
    """Run the default stages of the table (less `skip`, plus the optional ones in `add`) for one plan.
    With `lean`, a stage's discard frees what it kept for later runs as soon as no stage still to run
    needs its result (the build output once packaged, the runtime image once saved): a release job
    that builds several targets on one small disk holds little more than what dist/ keeps of each.
    `position`: this target is j of the m a command builds (the log's stage lines say it)."""
    table = stage_table.STAGES if table is None else table
    chosen = stage_table.select(table, skip=skip, add=add)
    log_path = settings.places.target_log(plan.out)
    owner.claim(settings.places)
    with _exclusive(plan, settings), Log(plan.name, log_path, position=position) as log:
        log.expect_stages([stage.name for stage in chosen])
        log.line(f"target {plan.name}" + (f" ({position[0]} of {position[1]})" if position[1] > 1 else "")
                 + f": {plan.target.description}")
        log.line(f"version {plan.version} from {plan.source_url} ({plan.target.source.tag})")
        for stage in chosen:
            log.line(f"hash {stage.name:8} {plan.hashes[stage.name][:16]}")
        results = run_stages(plan, settings, log, chosen, lean=lean)
        made = tuple(path for stage in chosen if stage.artifacts is not None
                     for path in stage.artifacts(results[stage.name]))
        log.line(f"done in {duration(log.elapsed)}" + (f": {made[0]}" if made else ""))
        return Outcome(plan.name, types.MappingProxyType(results), log_path, tuple(log.stages), log.elapsed,
                       made)


def run_stages(plan: Plan, settings: Settings, log: Log, chosen: Sequence[stage_table.Stage], *,
               lean: bool = False) -> dict[str, Any]:
    """Run `chosen` (in table order, each after the stages it needs) inside an open log; with `lean`,
    discard each result that no stage still to run needs."""
    results: dict[str, Any] = {}
    discarded: set[str] = set()
    for i, stage in enumerate(chosen):
        with log.stage(stage.name, i + 1, len(chosen)) as handle:
            ctx = _context(stage, plan, settings, log, handle)
            results[stage.name] = _result(stage, ctx, {n: results[n] for n in stage.needs})
        if not lean:
            continue
        still_needed = {n for later in chosen[i + 1:] for n in later.needs}
        for done in chosen[:i + 1]:
            if done.discard is not None and done.name not in still_needed and done.name not in discarded:
                discarded.add(done.name)
                freed = done.discard(_context(done, plan, settings, log, None), results[done.name])
                log.line(f"lean: {done.name} freed {size(freed)} (dist/ keeps the outputs)")
    return results


def _context(stage: stage_table.Stage, plan: Plan, settings: Settings, log: Log, handle) -> Context:
    folder = stage.where(settings.places, plan, plan.hashes[stage.name]) if stage.where is not None else None
    return Context(name=stage.name, plan=plan, settings=settings, log=log, stage=handle, folder=folder)


def _result(stage: stage_table.Stage, ctx: Context, needs: dict[str, Any]) -> Any:
    """The stage's recorded result when it still holds; else its run's, recorded."""
    if stage.result is None or ctx.folder is None:
        return stage.run(ctx, **needs)
    found = read_record(stage, ctx.folder, ctx.hash, needs, ctx.log)
    if found is not None:
        reason = stage.reuse(ctx, found, **needs) if stage.reuse is not None else f"{stage.name} of this hash"
        if reason is not None:
            ctx.stage.cached(reason)
            return found
    if not stage.staged:
        made = stage.run(ctx, **needs)
        text = _record_text(stage, made, ctx.folder, ctx.hash)
        fsutil.write_text(stage_table.record_file(stage, ctx.folder), text)
        return _from_doc(stage, json.loads(text), ctx.folder, needs)
    with fsutil.staging_dir(ctx.folder) as staging:
        made = stage.run(dataclasses.replace(ctx, staging=staging), **needs)
        text = _record_text(stage, made, staging, ctx.hash)
        stage_table.record_file(stage, staging).write_text(text, encoding="utf-8")
    # What a later run reads back is what this run hands on: paths of the final folder, not the staging one.
    return _from_doc(stage, json.loads(text), ctx.folder, needs)


def _record_text(stage: stage_table.Stage, result: Any, folder: Path, stage_hash: str) -> str:
    if not isinstance(result, stage.result):
        raise InternalError(f"stage {stage.name} returned a {type(result).__name__}, not its result type "
                            f"{stage.result.__name__}")
    doc = {"hash": stage_hash, **result.to_record()}
    if stage.artifacts is not None:
        files = list(stage.artifacts(result))
        if any(p.parent != folder for p in files):
            raise InternalError(f"stage {stage.name}: artifacts must lie in {folder}: {files}")
        doc["artifacts"] = [p.name for p in files]
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _from_doc(stage: stage_table.Stage, doc: dict, folder: Path, needs: Mapping[str, Any]) -> Any:
    fields = {k: v for k, v in doc.items() if k not in ("hash", "artifacts")}
    return stage.result.from_record(fields, folder, **needs)


def read_record(stage: stage_table.Stage, folder: Path, stage_hash: str, needs: Mapping[str, Any],
                log: Log | None = None) -> Any | None:
    """The result a stage recorded in `folder` for `stage_hash`; None when there is none, or it is of
    another hash, damaged or of another shape (said in the log)."""
    doc = record_doc(stage, folder, stage_hash, log)
    if doc is None:
        return None
    try:
        return _from_doc(stage, doc, folder, needs)
    except (ConfigError, PackageError) as exc:
        if log is not None:
            log.line(f"{stage_table.record_file(stage, folder)}: not a record of this pipeline ({exc}); "
                     "doing the work again")
        return None


def record_doc(stage: stage_table.Stage, folder: Path, stage_hash: str,
               log: Log | None = None) -> dict | None:
    """The JSON object of a stage's record of `stage_hash`, or None (absent, damaged, another hash)."""
    path = stage_table.record_file(stage, folder)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        if log is not None:
            log.line(f"{path}: unreadable ({exc}); doing the work again")
        return None
    if not isinstance(doc, dict) or doc.get("hash") != stage_hash:
        return None
    return doc


def recorded_artifacts(stage: stage_table.Stage, folder: Path, stage_hash: str) -> list[Path]:
    """The files a stage's record of `stage_hash` in `folder` lists for the release ([] without one)."""
    doc = record_doc(stage, folder, stage_hash)
    names = doc.get("artifacts") if doc is not None else None
    if not isinstance(names, list) or not all(isinstance(n, str) and n and "/" not in n
                                              and n not in (".", "..")
                                              for n in names):
        return []
    return [folder / n for n in names]


def results_of(plan: Plan, settings: Settings, log: Log, wanted: Sequence[str],
               table: Sequence[stage_table.Stage] | None = None) -> dict[str, Any]:
    """The results of the stages in `wanted` and of everything they need, for tools that need a tree
    or a builder image (the patch tooling, the memory workbench, benchmarks)."""
    table = stage_table.STAGES if table is None else table
    needed = set(wanted) | {n for name in wanted for n in stage_table.needed(table, name)}
    return run_stages(plan, settings, log, [s for s in table if s.name in needed])
