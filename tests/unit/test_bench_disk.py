"""`bench --disk`: release jobs grouped by builder, du sampling, the private engine's command line, and that
the engine and scratch folders go at the end, also after Ctrl-C. No engine is started here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import ClassVar

import pytest

from pipeline.cli import main
from pipeline.config import targets
from pipeline.config.settings import Settings
from pipeline.errors import UsageError
from pipeline.tools import bench

from .conftest import TARGETS_FILE


def test_jobs_are_one_per_builder_with_its_targets_in_file_order():
    matrix = targets.load(TARGETS_FILE)
    groups = targets.build_jobs(matrix.select(["--all"]))
    assert sorted(n for names in groups.values() for n in names) == sorted(matrix.targets)
    for builder, names in groups.items():
        assert {matrix.targets[n].builder for n in names} == {builder}
        assert names == [n for n in matrix.targets if matrix.targets[n].builder == builder]


def test_du_counts_each_folder_and_a_hard_link_once(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "big").write_bytes(os.urandom(1 << 20))
    os.link(a / "big", a / "again")
    sizes = bench.du({"a": a, "b": b, "gone": tmp_path / "missing"})
    assert (1 << 20) <= sizes["a"] < (1 << 20) + (64 << 10)
    assert sizes["b"] < (64 << 10)
    assert sizes["gone"] == 0


def test_disk_refuses_cold_and_gpu(capsys):
    assert main(["bench", "cpu", "--disk", "--cold"]) == UsageError.exit_code
    assert "--disk" in capsys.readouterr().err


def test_private_engine_has_its_own_roots_and_touches_no_network(tmp_path, monkeypatch):
    started = []

    class FakeDockerd:
        returncode = None

        def __init__(self, cmd, **kwargs):
            started.append((cmd, kwargs))
            self.signals = []

        def poll(self):
            return self.returncode

        def send_signal(self, sig):
            self.signals.append(sig)
            self.returncode = 0

        def wait(self, timeout=None):
            return 0

    ip_calls = []

    def ip(cmd, **kwargs):
        assert cmd[0] == "ip"
        ip_calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(bench.subprocess, "Popen", FakeDockerd)
    monkeypatch.setattr(bench.subprocess, "run", ip)
    monkeypatch.setattr(bench.PrivateEngine, "_wait_ready", lambda self: None)
    eng = bench.PrivateEngine(tmp_path / "engine", tmp_path / "docker", tmp_path / "logs" / "dockerd.log")
    with eng:
        cmd, kwargs = started[0]
        assert cmd[0] == "dockerd" and kwargs["start_new_session"] is True
        # Its own bridge, made before the engine starts: --bridge=none would delete the machine's docker0.
        assert ip_calls == [["ip", "link", "add", "name", eng.bridge, "type", "bridge"]]
        assert len(eng.bridge) <= 15 and eng.bridge != "docker0"
        assert "--bridge=none" not in cmd
        for flag in (f"--bridge={eng.bridge}", "--iptables=false", "--ip6tables=false"):
            assert flag in cmd
        for option, value in (("--data-root", tmp_path / "docker"),
                              ("--exec-root", tmp_path / "engine" / "exec"),
                              ("--pidfile", tmp_path / "engine" / "docker.pid"), ("--host", eng.host)):
            assert cmd[cmd.index(option) + 1] == str(value)
        assert eng.host == f"unix://{tmp_path}/engine/docker.sock"
        proc = eng._proc
    assert proc.signals and eng._proc is None
    assert ip_calls[-1] == ["ip", "link", "delete", eng.bridge]


class FakeEngine:
    instances: ClassVar[list[FakeEngine]] = []

    def __init__(self, state, data_root, log, **kwargs):
        self.state, self.data_root = state, data_root
        self.host = f"unix://{state}/docker.sock"
        self.exited = False
        FakeEngine.instances.append(self)

    def __enter__(self):
        (self.data_root / "overlay2").mkdir(parents=True)
        (self.data_root / "overlay2" / "layer").write_bytes(os.urandom(3 << 20))
        return self

    def usage(self):
        return {"layers_bytes": 3 << 20}

    def __exit__(self, *exc):
        self.exited = True


# Stands in for `python -m pipeline build T... --image`: writes a 2 MiB scratch file in the cache and
# removes it, then a 1 MiB archive per target into dist.
FAKE_BUILD = """
import os, sys, time
from pathlib import Path
args = sys.argv[1:]
dist = Path(args[args.index("--dist") + 1])
cache = Path(os.environ["PIPELINE_CACHE"])
assert os.environ["DOCKER_HOST"].startswith("unix://") and os.environ["PIPELINE_DOCKER_NETWORK"] == "host"
assert Path(os.environ["TMPDIR"]).parent == cache.parent
(cache / "tree").write_bytes(os.urandom(2 << 20)); time.sleep(float(os.environ.get("FAKE_SLEEP", "0.3")))
(cache / "tree").unlink()
ref = args[args.index("--ref") + 1] if "--ref" in args else None
for t in args[args.index("build") + 1:args.index("--image")]:
    out, name = (dist / f"{t}@{ref}", f"ollama-{t}-{ref}") if ref else (dist / t, f"ollama-{t}")
    out.mkdir(parents=True); (out / f"{name}.tar.zst").write_bytes(os.urandom(1 << 20))
"""


@pytest.fixture
def fake_job(tmp_path, monkeypatch):
    FakeEngine.instances.clear()
    real_popen = subprocess.Popen
    script = tmp_path / "fake_build.py"
    script.write_text(FAKE_BUILD)
    monkeypatch.setattr(bench.os, "geteuid", lambda: 0)
    monkeypatch.setattr(bench.shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(bench, "PrivateEngine", FakeEngine)

    def popen(cmd, **kw):  # only the build is replaced: du runs for real
        if cmd[1:3] == ["-m", "pipeline"]:
            cmd = [sys.executable, str(script), *cmd[3:]]
        return real_popen(cmd, **kw)

    monkeypatch.setattr(bench.subprocess, "Popen", popen)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(bench.tempfile, "tempdir", str(scratch))
    return Settings(targets_file=TARGETS_FILE, dist=tmp_path / "dist", cache=tmp_path / "cache"), scratch


def test_disk_reports_peak_and_final_per_component_and_removes_everything(fake_job, tmp_path):
    settings, scratch = fake_job
    output = tmp_path / "dist" / "bench.json"
    output.parent.mkdir()
    output.write_text(json.dumps({"targets": {"cpu": {"noop_rebuild": {"seconds": 1.0}}}}))
    report = bench.disk(["gfx*"], settings, output, interval=0.05)
    job = report["disk"]["gfx1103+gfx906"]
    assert job["builder"] == "debian-rocm" and job["targets"] == ["gfx1103", "gfx906"]
    assert job["exit_code"] == 0 and job["meets_goal"]
    assert job["peak_by_component_bytes"]["cache"] >= 2 << 20  # the scratch file, gone at the end
    assert job["final_by_component_bytes"]["cache"] < 2 << 20
    assert job["final_by_component_bytes"]["dist"] >= 2 << 20
    assert job["final_by_component_bytes"]["docker"] >= 3 << 20
    assert job["peak_bytes"] >= 5 << 20
    assert set(job["artifacts_bytes"]) == {"ollama-gfx1103.tar.zst", "ollama-gfx906.tar.zst"}
    written = json.loads(output.read_text())
    assert written["disk"] == report["disk"] and written["targets"]["cpu"]  # other numbers kept
    assert all(e.exited for e in FakeEngine.instances)
    assert list(scratch.iterdir()) == []


def test_disk_interrupted_stops_the_build_and_the_engine_and_removes_the_scratch(fake_job, tmp_path,
                                                                                  monkeypatch):
    settings, scratch = fake_job
    monkeypatch.setenv("FAKE_SLEEP", "30")
    monkeypatch.setattr(bench.time, "sleep", lambda s: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        bench.disk(["cpu"], settings, tmp_path / "bench.json", interval=0.05)
    assert FakeEngine.instances and FakeEngine.instances[0].exited
    assert list(scratch.iterdir()) == []


def test_disk_at_a_pinned_tag_builds_that_tag_and_says_so(fake_job, tmp_path):
    settings, _ = fake_job
    report = bench.disk(["cpu"], settings, tmp_path / "bench.json", interval=0.05, ref="v0.24.0")
    job = report["disk"]["cpu@v0.24.0"]
    assert job["ref"] == "v0.24.0" and job["exit_code"] == 0
    assert set(job["artifacts_bytes"]) == {"ollama-cpu-v0.24.0.tar.zst"}  # the build got --ref v0.24.0


def test_builder_twice_compares_the_package_lists_of_two_builds(tmp_path, monkeypatch):
    """The second build runs against the private engine (DOCKER_HOST switched for the block only) with
    an empty cache; differing versions are listed by package."""
    monkeypatch.setattr(bench.os, "geteuid", lambda: 0)
    monkeypatch.setattr(bench, "PrivateEngine", FakeEngine)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    seen = []

    class Result:
        def __init__(self, tag):
            self.tag = tag

    def results_of(plan, settings, log, wanted):
        seen.append((os.environ.get("DOCKER_HOST"), settings.cache))
        return {"builder": Result(f"builder-{len(seen)}")}

    lists = {"builder-1": {"libc6": "2.31-13", "gcc": "4:10.2.1-1"},
             "builder-2": {"libc6": "2.31-13", "gcc": "4:10.2.1-1"}}
    monkeypatch.setattr(bench.orchestrate, "results_of", results_of)
    monkeypatch.setattr(bench.builderpkgs, "package_versions", lambda tag: lists[tag])
    settings = Settings(targets_file=TARGETS_FILE, dist=tmp_path / "dist", cache=tmp_path / "cache")
    output = tmp_path / "dist" / "bench.json"
    report = bench.builder_twice(["cpu"], settings, output)
    assert report["builder_twice"]["debian-cpu"]["identical"] is True
    assert seen[0] == (None, tmp_path / "cache")
    assert seen[1][0].startswith("unix://") and seen[1][1] != tmp_path / "cache"
    assert "DOCKER_HOST" not in os.environ  # restored
    lists["builder-4"] = {"libc6": "2.31-14", "gcc": "4:10.2.1-1"}
    lists["builder-3"] = lists["builder-1"]
    again = bench.builder_twice(["cpu"], settings, output)["builder_twice"]["debian-cpu"]
    assert again["identical"] is False and again["differences"] == {"libc6": ["2.31-13", "2.31-14"]}
    assert json.loads(output.read_text())["builder_twice"]["debian-cpu"]["identical"] is False
