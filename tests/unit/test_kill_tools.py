"""kill -9 of the maintainer tools at any point: `patches apply`, `patches check`, `track` and `memtest`
are killed at moments spread over a whole run (as the first process it starts appears, as the last
does, and between), and after each kill the same command is run again. It succeeds with the result an
unbroken run gives, leaves no folder of the killed run anywhere (the cache, beside --into, beside the
reports), and nothing the killed run started outlives it. Real git, real processes, a generated
upstream; no Docker.

memtest compiles and runs Go test binaries of a real Ollama tree (minutes of cgo): here the compile and
the run are real host processes that take their time and write the binary and the results as `go test
-c` and the test binary do; everything around them is memtest's own code."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipeline.infra import owner

from .conftest import PROJECT
from .test_track import env, upstream  # noqa: F401  (fixtures: a generated upstream and its series)

KILL_POINTS = 4


def run_env(settings, token: str) -> dict[str, str]:
    return {**os.environ, "PIPELINE_TARGETS": str(settings.targets_file),
            "PIPELINE_PATCHES": str(settings.patches_dir), "PIPELINE_CACHE": str(settings.cache),
            "PIPELINE_DIST": str(settings.dist), "OLLAMA_SOURCE": settings.source,
            "PIPELINE_KILL_TEST": token, "PYTHONPATH": str(PROJECT)}


def survivors(token: str) -> list[int]:
    """Processes of this machine that carry the killed run's token in their environment."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"PIPELINE_KILL_TEST={token}".encode() in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def debris(*roots: Path) -> list[Path]:
    """Every folder or file of the owned form (a run's staging or scratch) under `roots`."""
    found = []
    for root in roots:
        for dirpath, dirs, files in os.walk(root):
            found += [Path(dirpath, n) for n in dirs + files if owner.owned_form(n)]
    return found


def run(argv: list[str], settings, *, token: str | None = None) -> subprocess.CompletedProcess:
    token = token or secrets.token_hex(8)
    return subprocess.run(argv, env=run_env(settings, token), capture_output=True, timeout=120)


def watch(argv: list[str], settings, kill_after: int | None = None) -> tuple[bool, int]:
    """Run `argv`, watching the processes it starts; with `kill_after`, SIGKILL it as soon as that many
    have been seen (the k-th is then running: a git command, a compile, a test binary). Returns (whether
    the kill landed, how many processes were seen). After a kill, waits until nothing it started is left
    (or fails)."""
    token = secrets.token_hex(8)
    child = subprocess.Popen(argv, env=run_env(settings, token), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    seen: set[int] = set()
    landed = False
    while child.poll() is None:
        seen.update(p for p in survivors(token) if p != child.pid)
        if kill_after is not None and len(seen) >= kill_after:
            os.kill(child.pid, signal.SIGKILL)
            landed = child.wait() == -signal.SIGKILL
            break
        time.sleep(0.002)
    child.wait()
    deadline = time.monotonic() + 5
    while landed and survivors(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not landed or not survivors(token), "processes of the killed run are still running"
    return landed, len(seen)


def kills_over_a_run(argv: list[str], settings, again, *, roots: list[Path], before=None) -> int:
    """Kill `argv` at KILL_POINTS moments spread over a run (as its first process starts, as its last
    does, and between), and after each kill run it again (`again`: the check of the rerun's output;
    `before`: what to undo first so that the next run does the whole work again). Returns how many
    kills landed."""
    if before:
        before()
    _, total = watch(argv, settings)
    assert total >= 3, f"only {total} processes seen in a run"
    landed = 0
    for i in range(KILL_POINTS):
        k = 1 + round((total - 1) * i / (KILL_POINTS - 1))
        while True:  # a run may start fewer processes than the first did (or one too short to see)
            if before:
                before()
            hit = watch(argv, settings, kill_after=k)[0]
            if hit or k == 1:
                break
            k = max(1, k - max(1, k // 4))
        landed += hit
        done = run(argv, settings)
        assert done.returncode == 0, f"after a kill at process {k} of {total}: {done.stderr.decode()}"
        again(done)
        assert debris(*roots) == [], f"after a kill at process {k} of {total}"
    return landed


def timed(argv: list[str], settings) -> subprocess.CompletedProcess:
    done = run(argv, settings)
    assert done.returncode == 0, done.stderr.decode()
    return done


PIPELINE = [sys.executable, "-m", "pipeline"]


def test_kill_9_of_patches_apply_at_any_point(env, tmp_path):  # noqa: F811
    _, settings = env
    into = tmp_path / "work" / "tree"
    argv = [*PIPELINE, "patches", "apply", "--ref", "v1.0.0", "--into", str(into)]
    timed(argv, settings)
    expected = subprocess.run(["git", "-C", str(into), "log", "--format=%H %s"], capture_output=True,
                              check=True).stdout
    status = subprocess.run(["git", "-C", str(into), "status", "--porcelain"], capture_output=True,
                            check=True).stdout

    def again(done):
        log = subprocess.run(["git", "-C", str(into), "log", "--format=%H %s"], capture_output=True,
                             check=True)
        assert log.stdout == expected
        assert subprocess.run(["git", "-C", str(into), "status", "--porcelain"], capture_output=True,
                              check=True).stdout == status
        assert sorted(p.name for p in into.parent.iterdir()) == ["tree"]

    def anew():  # each kill is of a run that makes the tree
        subprocess.run(["rm", "-rf", str(into)], check=True)

    landed = kills_over_a_run(argv, settings, again, roots=[tmp_path / "work", settings.cache], before=anew)
    assert landed == KILL_POINTS


def test_kill_9_of_patches_check_at_any_point(env, tmp_path):  # noqa: F811
    _, settings = env
    argv = [*PIPELINE, "patches", "check", "--ref", "v1.0.0", "--ref", "v1.1.0", "--ref", "v2.0.0"]
    first = timed(argv, settings)
    assert b"0001-edit-five.patch" in first.stdout

    def again(done):
        assert done.stdout == first.stdout

    landed = kills_over_a_run(argv, settings, again, roots=[settings.cache])
    assert landed == KILL_POINTS
    assert list((settings.cache / "scratch").iterdir()) == []


def test_kill_9_of_track_at_any_point(env, tmp_path):  # noqa: F811
    _, settings = env
    out = tmp_path / "out"
    argv = [*PIPELINE, "track", "--since", "v1.0.0", "--rc", "--markdown", str(out / "track.md"), "--json",
            str(out / "track.json")]
    timed(argv, settings)
    markdown = (out / "track.md").read_bytes()
    report = json.loads((out / "track.json").read_text())
    report.pop("generated", None)

    def again(done):
        assert (out / "track.md").read_bytes() == markdown
        now = json.loads((out / "track.json").read_text())
        now.pop("generated", None)
        assert now == report
        assert sorted(p.name for p in out.iterdir()) == ["track.json", "track.md"]

    landed = kills_over_a_run(argv, settings, again, roots=[out, settings.cache])
    assert landed == KILL_POINTS


# memtest, with the compile and the test binary's run as host processes that take their time (see above).
MEMTEST = textwrap.dedent(r"""
    import json, sys
    from pathlib import Path
    from pipeline.cli import main
    from pipeline.infra import runner
    from pipeline.tools.memtest import run as workbench

    def compile_(tree, binary, settings, log, matrix, image, *, kind, go_env=None, host_go=False):
        (tree / workbench.IO_DIR).mkdir()
        out = tree / workbench.IO_DIR / "memtest.test"
        runner.run(log, ["sleep", "0.4"], cwd=tree)
        out.write_text('#!/bin/sh\nsleep 0.3\ncp "$PIPELINE_MEMTEST_EXPECTED" "$PIPELINE_MEMTEST_OUTPUT"\n')
        out.chmod(0o755)
        binary.parent.mkdir(parents=True, exist_ok=True)
        out.replace(binary)

    def execute(folder, binaries, inputs, settings, log, matrix, image):
        folder.mkdir()
        results = [{"name": i["name"], "layers_model": 1, "fits": True, "full_fit": True, "weights": 0,
                    "kv": 0, "graph_partial": 0, "graph_full": 0,
                    "layout": {"layers": 1, "tensor_split": [1], "gpu_sizes": [1], "gpus": ["GPU-0"],
                               "vram": 1, "total": 1},
                    "scheduler": {"layers": 1, "tensor_split": [1], "gpu_sizes": [1], "gpus": ["GPU-0"],
                                  "vram": 1, "total": 1}} for i in inputs]
        (folder / "expected.json").write_text(json.dumps(results))
        for side, binary in binaries.items():
            runner.run(log, [binary], cwd=folder, env={
                "PIPELINE_MEMTEST_EXPECTED": str(folder / "expected.json"),
                "PIPELINE_MEMTEST_OUTPUT": str(folder / f"results-{side}.json")})
        return {side: {r["name"]: r for r in json.loads((folder / f"results-{side}.json").read_text())}
                for side in binaries}

    workbench._compile, workbench._execute = compile_, execute
    workbench.gobox.builder_image = lambda *a, **k: "builder:stand-in"
    sys.exit(main(sys.argv[1:]))
""")


def test_kill_9_of_memtest_at_any_point(env, tmp_path):  # noqa: F811
    _, settings = env
    scenario = tmp_path / "s.toml"
    scenario.write_text((PROJECT / "scenarios" / "780m-8b.toml").read_text().split("[expect")[0])
    out = tmp_path / "out"
    argv = [sys.executable, "-c", MEMTEST, "memtest", "--ref", "v0.12.5", "--json", str(out / "m.json"),
            str(scenario)]
    # The generated upstream, tagged as a version memtest drives
    source = Path(settings.source)
    subprocess.run(["git", "-C", str(source), "tag", "v0.12.5", "v1.0.0"], check=True)

    def clear():
        subprocess.run(["rm", "-rf", str(settings.cache / "memtest")], check=True)

    timed(argv, settings)
    report = json.loads((out / "m.json").read_text())

    def again(done):
        assert json.loads((out / "m.json").read_text()) == report
        assert sorted(p.name for p in out.iterdir()) == ["m.json"]

    # Each kill is of a run that compiles both sides
    landed = kills_over_a_run(argv, settings, again, roots=[out, settings.cache], before=clear)
    assert landed == KILL_POINTS
    assert list((settings.cache / "scratch").iterdir()) == []


@pytest.mark.parametrize("how", ["kill -9", "SIGTERM"])
def test_a_command_the_pipeline_runs_ends_with_it(tmp_path, how):
    """A long host command (a compile, a test binary) never outlives the pipeline process that ran it."""
    token = secrets.token_hex(8)
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from pipeline.infra import runner
        from pipeline.infra.log import Log
        with Log("t", Path({str(tmp_path / "t.log")!r}), console=open(os.devnull, "w")) as log:
            runner.run(log, ["sh", "-c", "echo $$ > {tmp_path}/pid; exec sleep 60"])
    """)
    child = subprocess.Popen([sys.executable, "-c", script],
                             env={**os.environ, "PIPELINE_KILL_TEST": token, "PYTHONPATH": str(PROJECT)})
    deadline = time.monotonic() + 20
    while not (tmp_path / "pid").is_file() or not (tmp_path / "pid").read_text().strip():
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.05)
    sleeper = int((tmp_path / "pid").read_text())
    os.kill(child.pid, signal.SIGKILL if how == "kill -9" else signal.SIGTERM)
    child.wait(10)
    deadline = time.monotonic() + 5
    while owner.alive(sleeper) and Path(f"/proc/{sleeper}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, f"the command the pipeline ran outlived it ({how})"
        time.sleep(0.05)
    assert survivors(token) == []
