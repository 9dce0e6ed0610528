"""The stage table: one list of stages for planning, running, benchmarks and CI cache keys."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from pipeline import orchestrate, stages
from pipeline.stages.plan import Context, Plan

from . import test_layering as layering
from .conftest import git, make_repo

STAGES_DIR = Path(stages.__file__).parent


def test_every_stage_has_a_module_with_key_and_run():
    for stage in stages.STAGES:
        assert callable(stage.key) and callable(stage.run), stage.name
        assert all(n in stages.names() for n in stage.needs), f"{stage.name} needs an unknown stage"
    assert stages.names().index("build") > stages.names().index("builder")


def test_optional_and_left_out_stages_are_selected_with_what_needs_them():
    table = stages.STAGES
    assert "image" not in stages.names(stages.select(table))
    assert "image" in stages.names(stages.select(table, add=["image"]))
    chosen = stages.names(stages.select(table, skip=["verify"], add=["image"]))
    assert "verify" not in chosen and "image" not in chosen


def test_stage_modules_import_no_other_stage():
    """Below the table, a stage module imports the plan, the result types and the manifest's schema of
    its own package (test_layering holds the layers below: config, infra, the subjects)."""
    shared = ("pipeline.stages.plan", "pipeline.stages.results", "pipeline.stages.manifest")
    for path in sorted(STAGES_DIR.rglob("*.py")):
        if path.name == "__init__.py" and path.parent == STAGES_DIR:
            continue  # the table itself imports every stage
        own_package = ".".join(("pipeline", *path.relative_to(STAGES_DIR.parent).with_suffix("").parts))
        for _line, name in layering.imports(own_package, path):
            if name.startswith("pipeline.stages"):
                mine = own_package.removesuffix(".__init__")
                inside_own = name == mine or name.startswith(mine + ".")
                assert name.startswith(shared) or inside_own, f"{path.name} imports {name}"


def cpu_of_a_generated_repo(tmp_path, matrix):
    """The matrix with only `cpu`, built from a generated repository's v1.2.3; and that commit."""
    repo = make_repo(tmp_path / "upstream", {"main.go": "package main\n"})
    git(repo, "tag", "v1.2.3")
    commit = git(repo, "rev-parse", "HEAD")
    cpu = matrix.targets["cpu"]
    cpu = dataclasses.replace(cpu, source=dataclasses.replace(cpu.source, url=str(repo), tag="v1.2.3",
                                                              commit=commit))
    return dataclasses.replace(matrix, targets={"cpu": cpu}), commit


def test_a_new_stage_needs_one_table_entry_and_nothing_else(tmp_path, matrix, settings):
    """A no-op stage after source: added to a copy of the table, it gets a hash, runs with the source
    stage's result, and its result comes back; no other module changes."""
    matrix, commit = cpu_of_a_generated_repo(tmp_path, matrix)
    seen = []

    def noop_run(ctx: Context, *, source):
        seen.append((ctx.name, ctx.hash, source.commit))
        return source.path

    def noop_key(plan: Plan, settings):
        return "nothing"

    source_stage = next(s for s in stages.STAGES if s.name == "source")
    table = (source_stage, stages.Stage(name="noop", version=1, needs=("source",), key=noop_key, run=noop_run))
    plan = stages.plan_for(matrix, matrix.targets["cpu"], settings, table=table)
    assert list(plan.hashes) == ["source", "noop"]
    outcome = orchestrate.build_target(plan, settings, table=table)
    assert seen == [("noop", plan.hashes["noop"], commit)]
    assert outcome.results["noop"] == outcome.results["source"].path
    assert (outcome.results["noop"] / "main.go").read_text() == "package main\n"
    assert [name for name, _, _ in outcome.stages] == ["source", "noop"]


def test_lean_discards_once_nothing_later_needs_it_and_a_second_run_redoes_the_work(tmp_path, matrix, settings):
    """--lean: a stage with a discard frees what it keeps (build: its cached output; image: the engine's
    copy) as soon as no stage still to run needs it; without --lean nothing is freed and the next run
    reuses it."""
    matrix, commit = cpu_of_a_generated_repo(tmp_path, matrix)
    events = []

    def keep_run(ctx: Context, *, source):
        out = ctx.settings.cache / "kept" / ctx.hash[:12]
        if out.is_dir():
            ctx.stage.cached("kept earlier")
        else:
            events.append("work")
            out.mkdir(parents=True)
            (out / "big").write_bytes(b"x" * 65536)
        return out

    def keep_discard(ctx: Context, result):
        events.append("discard")
        size = sum(p.stat().st_size for p in result.iterdir())
        shutil.rmtree(result)
        return size

    def after_run(ctx: Context, *, keep):
        events.append("after")
        return keep

    def last_run(ctx: Context, *, after):
        events.append("last")
        return after

    source_stage = next(s for s in stages.STAGES if s.name == "source")
    table = (source_stage,
             stages.Stage(name="keep", version=1, needs=("source",), key=lambda p, s: 1, run=keep_run,
                          discard=keep_discard),
             stages.Stage(name="after", version=1, needs=("keep",), key=lambda p, s: 1, run=after_run),
             stages.Stage(name="last", version=1, needs=("after",), key=lambda p, s: 1, run=last_run))
    plan = stages.plan_for(matrix, matrix.targets["cpu"], settings, table=table)
    orchestrate.build_target(plan, settings, table=table)
    orchestrate.build_target(plan, settings, table=table)
    assert events == ["work", "after", "last", "after", "last"]  # kept: the second run reuses it
    outcome = orchestrate.build_target(plan, settings, table=table, lean=True)
    assert events[5:] == ["after", "discard", "last"]  # freed once the last stage that needs it is done
    assert not outcome.results["keep"].exists()
    assert "lean: keep freed 64.0 KiB" in outcome.log.read_text()
    orchestrate.build_target(plan, settings, table=table)
    assert events[8:] == ["work", "after", "last"]
