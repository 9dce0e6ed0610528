"""The glibc floor and the run-time loads on real systems, without a build of Ollama.

A small library compiled on trixie (glibc 2.41, C23 string functions, arc4random, the 2.34 pthread
symbols) is lowered by the floor pass with the compatibility library compiled on bullseye: it then
loads with every symbol bound and its functions answer on a clean bullseye (glibc 2.31, through the
compatibility library) and on trixie (through glibc's own functions), and the untreated copy does not
load on bullseye. A library whose runtime opens something at run time that the builder image lacks
fails the closure with a line naming it; one the image has is bundled like a DT_NEEDED library.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from docker.types import Mount

from pipeline.closure import floor, sysroot
from pipeline.closure.loads import load_inventory
from pipeline.config.paths import COMPAT_SOURCE, LOAD_PROBE_SOURCE
from pipeline.config.policy import load_policy
from pipeline.errors import ClosureError
from pipeline.infra import baseimage, ctools
from pipeline.infra.log import Log
from pipeline.smoke import loadprobe
from pipeline.stages.package import lowering

from .conftest import write_matrix

TOY = """\
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>

long toy_parse(const char *s) { return strtol(s, NULL, 0); }   /* __isoc23_strtol@GLIBC_2.38 */
int toy_random(void) { return arc4random_uniform(1000) < 1000; } /* GLIBC_2.36 */
long toy_size(const char *p) { struct stat st; return stat(p, &st) == 0 ? (long)st.st_size : -1; }
static void *echo(void *a) { return a; }
long toy_thread(void) {                                          /* pthread_create@GLIBC_2.34 */
    pthread_t t; void *r = 0;
    if (pthread_create(&t, NULL, echo, (void *)7L) != 0 || pthread_join(t, &r) != 0) return -1;
    return (long)r;
}
"""
# Compiled on bullseye: what a runner does with a backend, then calls into it.
CALLER = """\
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv) {
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) { printf("dlopen failed: %s\\n", dlerror()); return 1; }
    long (*parse)(const char *) = (long (*)(const char *))dlsym(h, "toy_parse");
    int (*rnd)(void) = (int (*)(void))dlsym(h, "toy_random");
    long (*size)(const char *) = (long (*)(const char *))dlsym(h, "toy_size");
    long (*thread)(void) = (long (*)(void))dlsym(h, "toy_thread");
    printf("parse %ld random %d size %ld thread %ld\\n", parse("0x10"), rnd(), size(argv[1]) > 0, thread());
    return 0;
}
"""
TOY_CC = ("gcc", "-std=gnu2x", "-O2", "-fPIC", "-shared", "-Wl,-soname,libtoy.so.1", "-o", "{out}", "{src}")
CALLER_CC = ("gcc", "-O2", "-o", "{out}", "{src}", "-ldl")


@pytest.fixture
def settings(mini_project, settings_for, tmp_path):
    repo, commit = mini_project
    return settings_for(write_matrix(tmp_path / "targets.toml", repo, commit))


@pytest.fixture
def log(tmp_path):
    with Log("floor", tmp_path / "floor.log") as lg:
        yield lg


def image(suite, settings, log) -> str:
    name = baseimage.name(settings.image_prefix, suite)
    baseimage.ensure(name, suite, settings, log)
    return name


def compiled(name: str, text: str, suite: str, compiler, settings, log, tmp_path) -> Path:
    src = tmp_path / "src" / name / f"{name}.c"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(text)
    return ctools.build(name, image(suite, settings, log), src, compiler, settings, log, setup=ctools.APT_GCC)


def run_in(engine, img: str, folder: Path, script: str) -> str:
    out = engine.containers.run(img, ["sh", "-c", script + " 2>&1; echo \"exit $?\""], remove=True,
                                mounts=[Mount("/t", str(folder), type="bind", read_only=True)],
                                environment={"LD_BIND_NOW": "1", "LD_LIBRARY_PATH": "/t/lib"})
    return out.decode()


def test_a_lowered_trixie_library_loads_and_answers_on_bullseye_and_trixie(engine, settings, log, tmp_path):
    toy = compiled("libtoy.so.1", TOY, "trixie", TOY_CC, settings, log, tmp_path)
    caller = compiled("toycall", CALLER, "bullseye", CALLER_CC, settings, log, tmp_path)
    probe = ctools.build("loadprobe", image("bullseye", settings, log), LOAD_PROBE_SOURCE, loadprobe.COMPILER,
                         settings, log, setup=ctools.APT_GCC)
    policy = load_policy("debian-bullseye-rocm")
    compat = ctools.build(floor.COMPAT_SONAME, image("bullseye", settings, log), COMPAT_SOURCE,
                          lowering.COMPILER, settings, log, setup=ctools.APT_GCC, glibc=policy.glibc)
    table, newer = floor.load_table("bullseye"), floor.load_table("trixie")

    treated, untreated = tmp_path / "treated", tmp_path / "untreated"
    for folder in (treated, untreated):
        (folder / "lib").mkdir(parents=True)
        shutil.copy(caller, folder / "toycall")
        shutil.copy(probe, folder / "loadprobe")
        shutil.copy(toy, folder / "lib" / "libtoy.so.1")
    shutil.copy(compat, treated / "lib" / floor.COMPAT_SONAME)
    before = floor.check_file(treated / "lib/libtoy.so.1", table, name="libtoy.so.1")
    assert any("__isoc23_strtol@GLIBC_2.38" in p for p in before), before
    records = floor.treat({"lib/libtoy.so.1": treated / "lib/libtoy.so.1"}, table, compat_library=compat,
                          rules=floor.load_abi_changes(), log=log, newer=newer)

    record = records["lib/libtoy.so.1"]
    actions = {c.symbol: c.action for c in record.changes}
    assert actions["__isoc23_strtol"] == "compat" and actions["arc4random_uniform"] == "compat"
    assert actions["pthread_create"] == "retarget" and actions["stat"] == "compat"
    assert floor.COMPAT_SONAME in record.added_needed
    assert floor.check_file(treated / "lib/libtoy.so.1", table, compat=floor.exported_symbols(compat),
                            newer=newer, name="libtoy.so.1") == []

    bullseye, trixie = image("bullseye", settings, log), image("trixie", settings, log)
    for img in (bullseye, trixie):
        out = run_in(engine, img, treated, "/t/toycall /t/lib/libtoy.so.1")
        assert out.splitlines() == ["parse 16 random 1 size 1 thread 7", "exit 0"], (img, out)
        # The probe as verify runs it (pipeline.smoke.loadprobe.SCRIPT).
        script = f"set -- /t/loadprobe /t/lib /t/lib/libtoy.so.1\n{loadprobe.SCRIPT}"
        report = loadprobe.parse(run_in(engine, img, treated, script))
        assert report.complete and report.failures == (), (img, report)
        assert report.loaded == ("/t/lib/libtoy.so.1",)

    out = run_in(engine, bullseye, untreated, "/t/toycall /t/lib/libtoy.so.1")
    assert re.search(r"version `GLIBC_2\.3[2-9]' not found \(required by /t/lib/libtoy\.so\.1\)", out), out
    assert out.rstrip().endswith("exit 1")


def test_a_required_run_time_load_is_bundled_and_a_missing_one_fails_the_closure(settings, log, tmp_path):
    toy = compiled("libtoyrt.so.1", "int toy_devices(void) { return 0; }\n", "bullseye",
                   ("gcc", "-O2", "-fPIC", "-shared", "-Wl,-soname,libtoy.so.1", "-o", "{out}", "{src}"),
                   settings, log, tmp_path)
    root = tmp_path / "pkg"
    (root / "lib/ollama").mkdir(parents=True)
    shutil.copy(toy, root / "lib/ollama/libtoy.so.1")
    policy = load_policy("debian-bullseye")
    img = image("bullseye", settings, log)

    def inventory(opens: str) -> object:
        path = tmp_path / f"loads-{opens}.toml"
        path.write_text(f"""
[[runtime]]
soname = "libtoy.so.1"
package = "libtoy1 (this test)"
source = "tests/integration/test_floor.py"
  [[runtime.loads]]
  soname = "{opens}"
  use = "required"
  reason = "the toy runtime opens it when it creates a device"
  evidence = ["this test"]
  [[runtime.loads]]
  soname = "libtoyprof.so"
  use = "optional"
  what = "profiler"
  reason = "only when a profiler asks"
  evidence = ["this test"]
""")
        return load_inventory(path)

    found = sysroot.resolve(img, policy, root, tmp_path / "sysroot", settings, log,
                            inventory=inventory("libz.so.1"))
    bundled = {b.dest: b for b in found.bundles}
    assert "lib/ollama/libz.so.1" in bundled, bundled
    assert found.opened == {"libz.so.1": ("lib/ollama/libtoy.so.1",)}
    assert found.optional == {"lib/ollama/libtoy.so.1": ("libtoyprof.so: profiler",)}
    assert not any("libtoyprof" in b.soname for b in found.bundles)

    with pytest.raises(ClosureError) as caught:
        sysroot.resolve(img, policy, root, tmp_path / "sysroot2", settings, log,
                        inventory=inventory("libamd_comgr.so.3"))
    message = str(caught.value)
    assert "libamd_comgr.so.3 is opened at run time by lib/ollama/libtoy.so.1" in message, message
    assert "the toy runtime opens it when it creates a device" in message
