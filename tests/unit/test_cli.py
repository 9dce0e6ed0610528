"""The command line, run in-process: exit codes and messages at the edge."""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys

import pytest

from pipeline import cli
from pipeline.cli import main
from pipeline.config import loader
from pipeline.config.targets import load
from pipeline.errors import CLOSED_PIPE, SelectionError, UsageError

from .conftest import PROJECT, TARGETS_FILE


def test_unknown_target_is_a_selection_error_listing_known_targets(capsys):
    assert main(["build", "nosuch"]) == SelectionError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("error: unknown target 'nosuch'")
    assert f"known targets: {', '.join(load(TARGETS_FILE).targets)}" in err
    assert "Traceback" not in err


def test_build_without_targets_is_a_selection_error(capsys):
    assert main(["build"]) == SelectionError.exit_code
    assert "no target given" in capsys.readouterr().err


def test_targets_json_lists_the_matrix(capsys):
    assert main(["targets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(load(TARGETS_FILE).targets)
    gfx1103 = next(r for r in rows if r["name"] == "gfx1103")
    assert gfx1103["gpu_archs"] == ["gfx1100"]
    assert gfx1103["runtime_env"]["HSA_OVERRIDE_GFX_VERSION"] == "11.0.0"
    assert gfx1103["commit"] == "3d32249c749c6f77c1dc8a7cb55ae74fc2f4c08b"


def test_targets_table_has_a_row_per_target(capsys):
    assert main(["targets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["target", "backends"]
    assert [line.split()[0] for line in lines[1:]] == list(load(TARGETS_FILE).targets)


def test_misspelt_key_in_targets_file_exits_2_with_suggestion(tmp_path, capsys):
    bad = tmp_path / "targets.toml"
    bad.write_text(TARGETS_FILE.read_text().replace('gpu_archs = ["gfx906"]', 'gpu_arches = ["gfx906"]'))
    assert main(["targets", "--targets-file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'gpu_archs'?" in err
    assert str(bad) in err


def test_targets_file_from_the_environment(tmp_path, capsys, monkeypatch):
    small = tmp_path / "t.toml"
    small.write_text(TARGETS_FILE.read_text().split("[targets.gfx1103]")[0])
    monkeypatch.setenv("PIPELINE_TARGETS", str(small))
    assert main(["targets", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["cpu"]


def test_traceback_is_shown_only_when_asked(tmp_path, capsys):
    missing = tmp_path / "none.toml"
    assert main(["targets", "--targets-file", str(missing)]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["targets", "--targets-file", str(missing), "--traceback"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert f"looked for {missing}" in err


def test_plan_prints_hashes_and_steps_without_docker(capsys, tmp_path):
    (tmp_path / "mirror").mkdir()
    assert main(["plan", "gfx906", "--source", str(tmp_path / "mirror")]) == 0
    out = capsys.readouterr().out
    source = load(TARGETS_FILE).targets["gfx906"].source
    version = source.tag.removeprefix("v")
    assert out.startswith(f"gfx906: {version}+gfx906 from {tmp_path / 'mirror'} @ {source.commit[:12]}")
    assert "-DAMDGPU_TARGETS=gfx906" in out
    for stage in ("source", "patches", "builder", "build", "package"):
        assert f"  {stage:8}" in out


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["frobnicate"]) == UsageError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "invalid choice" in err


def test_the_closing_summary_names_archive_size_times_and_the_next_command(matrix, settings, tmp_path, log):
    from pipeline import orchestrate
    from pipeline.cli import build
    from pipeline.stages.results import Packaged

    from .test_release import build as fake_build

    archive = fake_build(matrix, settings, settings.dist, log, "cpu")
    packaged = Packaged.from_json((archive.parent / "manifest.json").read_text(), archive.parent)
    outcome = orchestrate.Outcome(
        "cpu", {"package": packaged}, archive.parent / "build.log",
        (("source", "cached", 0.1), ("build", "done", 612.0), ("package", "done", 8.0)), 620.5, (archive,))
    text = build.summary([outcome], cwd=settings.dist.parent)
    assert text.splitlines()[0] == "built 1 target in 10m20s (full log of each: dist/<target>/build.log)"
    assert f"  cpu: dist/cpu/{archive.name}  {archive.stat().st_size / 1e6:.1f} MB, 10m20s" in text
    assert "    stages: source cached, build 10m12s, package 8.0s" in text
    assert (f"  mkdir ollama-cpu && tar -C ollama-cpu --zstd -xf dist/cpu/{archive.name} && "
            "sudo ollama-cpu/share/ollama/install.sh") in text


# --- Edges: closed pipes, help, --version, options only where they act ----------------------------------

def run_cli(*args: str, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` as a shell runs it; an engine that cannot answer keeps Docker out."""
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], stdout=stdout, stderr=subprocess.PIPE,
                          cwd=PROJECT, env=env, text=True, timeout=120, check=False)


def closed_pipe() -> int:
    """A pipe whose reader has gone, as `| head -1` leaves it once head has its line."""
    read, write = os.pipe()
    os.close(read)
    return write


@pytest.mark.parametrize("args, codes", [
    (("targets", "--json"), {CLOSED_PIPE}), (("targets", "--json", "--releases"), {CLOSED_PIPE}),
    (("plan", "cpu", "--source", "."), {CLOSED_PIPE}),
    # argparse ignores a failed write of its help and version texts and exits 0; nothing is said either way
    (("--help",), {0, CLOSED_PIPE}), (("build", "--help"), {0, CLOSED_PIPE}),
    (("--version",), {0, CLOSED_PIPE})])
def test_a_closed_pipe_ends_the_command_quietly(args, codes):
    write = closed_pipe()
    try:
        done = run_cli(*args, stdout=write)
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode in codes


def test_targets_json_into_head_is_a_quiet_exit():
    command = f"set -o pipefail; {sys.executable} -m pipeline targets --json --releases | head -1"
    done = subprocess.run(command, shell=True, executable="bash", cwd=PROJECT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.stdout == "[\n"
    assert done.stderr == ""
    assert done.returncode in (0, CLOSED_PIPE)  # 0 where the output fit the pipe before head left


def test_the_nox_sessions_that_only_print_end_well_when_the_reader_goes():
    tree = ast.parse((PROJECT / "noxfile.py").read_text())
    constant = next(n.value.value for n in tree.body if isinstance(n, ast.Assign)
                    and [ast.unparse(t) for t in n.targets] == ["CLOSED_PIPE"])
    assert constant == CLOSED_PIPE
    sessions = {f.name: ast.unparse(f) for f in tree.body if isinstance(f, ast.FunctionDef)}
    quiet = {name for name, text in sessions.items() if "success_codes=[0, CLOSED_PIPE]" in text}
    assert quiet == {"targets", "plan"}  # a build or a tool cut short by a closed pipe has failed


def test_version_is_the_projects():
    done = run_cli("--version")
    assert (done.returncode, done.stderr) == (0, "")
    version = loader.read(PROJECT / "pyproject.toml")["project"]["version"]
    assert done.stdout == f"ollama-pipeline {version}\n"


def every_command(p: argparse.ArgumentParser, path: tuple[str, ...] = ("pipeline",)):
    """(command path, its parser) for the parser and every subcommand under it."""
    yield path, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from every_command(sub, (*path, name))


def test_every_option_and_command_has_help():
    missing = []
    for path, p in every_command(cli.parser()):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{' '.join(path)} {c.dest}" for c in action._choices_actions if not c.help]
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_every_nox_session_says_what_it_does():
    tree = ast.parse((PROJECT / "noxfile.py").read_text())
    sessions = [f for f in tree.body if isinstance(f, ast.FunctionDef)
                and any("session" in ast.unparse(d) for d in f.decorator_list)]
    assert len(sessions) >= 15
    assert [f.name for f in sessions if not (ast.get_docstring(f) or "").strip()] == []
    assert "nox -s SESSION -- --help" in ast.get_docstring(tree)


def options_of(name: str) -> set[str]:
    return {o for path, p in every_command(cli.parser()) if path[-1] == name
            for a in p._actions for o in a.option_strings}


# --quiet quiets the console of a Log: the commands that open none (they print, or remove) take none;
# --targets-file only where a command reads the matrix.
@pytest.mark.parametrize("command, quiet, matrix", [
    ("build", True, True), ("image", True, True), ("verify", True, False), ("targets", False, True),
    ("plan", False, True), ("check", True, True), ("memtest", True, True), ("track", True, True),
    ("bench", True, True), ("clean", False, False), ("release", False, True), ("publish", True, False)])
def test_options_are_offered_only_where_they_act(command, quiet, matrix):
    options = options_of(command)
    assert ("--quiet" in options, "--targets-file" in options) == (quiet, matrix)
    assert "--traceback" in options


def test_quiet_where_it_does_nothing_is_refused(capsys):
    assert main(["targets", "--quiet"]) == UsageError.exit_code
    assert "unrecognized arguments: --quiet" in capsys.readouterr().err
