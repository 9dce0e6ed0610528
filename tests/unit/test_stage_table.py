"""The stage table: one list of stages for planning, running, benchmarks and CI cache keys."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

from pipeline import cli, orchestrate, stages
from pipeline.records import record
from pipeline.stages import builder as builder_stage
from pipeline.stages.plan import Context, Plan
from pipeline.stages.results import BuilderImage, BuildResult, Result
from pipeline.upstream import layouts

from . import test_layering as layering
from .conftest import TARGETS_FILE, git, make_repo, retagged

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
    noop = stages.Stage(name="noop", version=1, needs=("source",), key=noop_key, run=noop_run)
    table = (source_stage, noop)
    plan = stages.plan_for(matrix, matrix.targets["cpu"], settings, table=table)
    assert list(plan.hashes) == ["source", "noop"]
    outcome = orchestrate.build_target(plan, settings, table=table)
    assert seen == [("noop", plan.hashes["noop"], commit)]
    assert outcome.results["noop"] == outcome.results["source"].path
    assert (outcome.results["noop"] / "main.go").read_text() == "package main\n"
    assert [name for name, _, _ in outcome.stages] == ["source", "noop"]


def test_lean_discards_once_nothing_later_needs_it_and_a_second_run_redoes_the_work(tmp_path, matrix,
                                                                                     settings):
    """--lean: a stage with a discard frees what it keeps (build: its cached output; image: the engine's
    copy) as soon as no stage still to run needs it; without --lean nothing is freed and the next run
    reuses it."""
    matrix, _commit = cpu_of_a_generated_repo(tmp_path, matrix)
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


def test_a_recorded_result_is_reused_and_a_damaged_record_is_rebuilt_not_a_crash(tmp_path, matrix, settings):
    """The orchestrator keeps the source stage's record; a record that is not JSON, of another shape or
    of another hash is absent: the stage runs again and writes a good one."""
    matrix, _commit = cpu_of_a_generated_repo(tmp_path, matrix)
    table = (next(s for s in stages.STAGES if s.name == "source"),)
    plan = stages.plan_for(matrix, matrix.targets["cpu"], settings, table=table)
    record = stages.record_file(table[0], settings.places.tree("source", plan.hashes["source"]))

    first = orchestrate.build_target(plan, settings, table=table)
    assert first.stages[0][1] == "done" and json.loads(record.read_text())["hash"] == plan.hashes["source"]
    again = orchestrate.build_target(plan, settings, table=table)
    assert again.stages[0][1] == "cached" and again.results["source"] == first.results["source"]

    good = json.loads(record.read_text())
    for damaged in ("{not json", json.dumps({**good, "commit_time": "noon"}), json.dumps(["a", "list"]),
                    json.dumps({**good, "hash": "0" * 64}), json.dumps({**good, "unknown": 1})):
        record.write_text(damaged)
        outcome = orchestrate.build_target(plan, settings, table=table)
        assert outcome.stages[0][1] == "done", damaged
        assert outcome.results["source"] == first.results["source"]
        assert json.loads(record.read_text()) == good


@record
class Signed(Result):
    """The result type of a stage the test adds: a file beside the archive naming its sha256."""

    _given = ("path",)

    path: Path
    digest: str

    @classmethod
    def _give(cls, where, needs):
        return {"path": where / f"{needs['package'].archive.name}.sig"}


def _sign_run(ctx: Context, *, package) -> Signed:
    digest = hashlib.sha256(package.archive.read_bytes()).hexdigest()
    path = ctx.folder / f"{package.archive.name}.sig"
    path.write_text(f"{digest}\n")
    return Signed(path=path, digest=digest)


SIGN = stages.Stage(name="sign", version=1, needs=("package",), key=lambda plan, settings: "test key",
                    run=_sign_run, result=Signed, where=stages.in_target_folder, default=False,
                    option=stages.Option(flag="--sign", help="sign the archive"),
                    artifacts=lambda signed: (signed.path,), description="the archive's signature")


def _fake_builder(ctx: Context) -> BuilderImage:
    return BuilderImage(tag=builder_stage.image_tag(ctx.plan, ctx.settings), id="sha256:" + "ab" * 32)


def _fake_build(ctx: Context, *, patches, builder, host_builder) -> BuildResult:
    """What a build leaves (bin/ollama, lib/ollama/...), without a compiler: the unit tier has no engine."""
    root = ctx.staging / layouts.OUTPUT
    (root / "lib/ollama").mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "bin/ollama").write_bytes(b"\x7fELF fake ollama\n")
    (root / "bin/ollama").chmod(0o755)
    (root / "lib/ollama/libx.so").write_bytes(b"fake library\n")
    return BuildResult(root=root, image=builder, version=ctx.plan.version,
                       source_date_epoch=patches.source.commit_time, seconds=0.0, steps=(), code_objects={})


def test_a_new_stage_with_a_flag_and_a_release_asset_is_one_table_entry(tmp_path, capsys, monkeypatch):
    """A "sign" stage after package, added to a copy of the table as one entry (with its result type,
    which stands for its module): `build --sign` runs it, a second build finds its record, and `release`
    publishes its .sig with a line in SHA256SUMS. No command-line or release code names it. The copied
    table's builder and build stages make a fake build instead of calling Docker."""
    repo = make_repo(tmp_path / "upstream", {"main.go": "package main\n"})
    git(repo, "tag", "v1.2.3")
    text = retagged(TARGETS_FILE.read_text(), "v1.2.3", git(repo, "rev-parse", "HEAD"))
    # No library policy: the closure would copy libraries out of the builder image (Docker).
    text = text.replace('policy = "debian-bullseye"\n', "", 1)
    targets_file = tmp_path / "targets.toml"
    targets_file.write_text(text)
    fakes = {"builder": _fake_builder, "host_builder": _fake_builder, "build": _fake_build}
    table = (*(dataclasses.replace(s, run=fakes.get(s.name, s.run)) for s in stages.STAGES), SIGN)
    monkeypatch.setattr(stages, "STAGES", table)
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp_path / "cache"))
    dist = tmp_path / "dist"
    build = ["build", "cpu", "--targets-file", str(targets_file), "--source", str(repo), "--dist", str(dist),
             "--no-verify"]

    assert cli.parser().parse_args([*build, "--sign"]).stage_sign is True
    assert cli.main(build) == 0
    assert "==> sign" not in capsys.readouterr().err  # optional: only when asked
    assert cli.main([*build, "--sign"]) == 0
    assert "<== sign: done" in capsys.readouterr().err
    archive = dist / "cpu" / "ollama-1.2.3-cpu.tar.zst"
    signature = archive.with_name(archive.name + ".sig")
    assert signature.read_text() == hashlib.sha256(archive.read_bytes()).hexdigest() + "\n"
    assert json.loads((dist / "cpu" / "sign.json").read_text())["artifacts"] == [signature.name]
    assert cli.main([*build, "--sign"]) == 0
    assert "<== sign: cached" in capsys.readouterr().err

    assert cli.main(["release", "--targets-file", str(targets_file), "--dist", str(dist)]) == 0
    release = dist / "release"
    assert (release / signature.name).read_bytes() == signature.read_bytes()
    sums = (release / "SHA256SUMS").read_text()
    assert f"{hashlib.sha256(signature.read_bytes()).hexdigest()}  {signature.name}\n" in sums
