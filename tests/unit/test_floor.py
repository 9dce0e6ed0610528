"""The glibc floor pass on real ELF files compiled here with gcc.

The host's glibc (2.34 or newer) produces the real references above the 2.31 floor
(pthread_create@GLIBC_2.34, stat@GLIBC_2.33, arc4random@GLIBC_2.36, ...). References such a toolchain may
not produce (__isoc23_strtol@GLIBC_2.38, fmod@GLIBC_2.38, cfsetospeed@GLIBC_2.42) come from linking
against a stub libc.so.6 / libm.so.6 with those version nodes: the objects are real linker output, only
the library they were linked against is a stand-in.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from pipeline.closure import floor
from pipeline.errors import ClosureError
from pipeline.hashing import file_sha256
from pipeline.stages.manifest import plain

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build ELF fixtures")

FLOOR = floor.load_table("bullseye")
NEWER = floor.load_table("trixie")
RULES = floor.load_abi_changes()
HOST_GLIBC = tuple(int(x) for x in os.confstr("CS_GNU_LIBC_VERSION").split()[1].split("."))
needs_new_glibc = pytest.mark.skipif(HOST_GLIBC < (2, 34), reason="needs a host glibc >= 2.34")


def cc(folder: Path, name: str, source: str, *flags: str) -> Path:
    src = folder / (name + ".c")
    src.write_text(source)
    out = folder / name
    proc = subprocess.run(["gcc", "-O1", "-fPIC", "-o", str(out), str(src), *flags], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, "gcc", proc.stdout, proc.stderr)
    return out


def version_refs(path: Path) -> dict[str, tuple[str, str] | None]:
    """symbol -> (the library its version need names, version), or None when unversioned."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        idx = {}
        sec = elf.get_section_by_name(".gnu.version_r")
        if sec is not None:
            for vn, auxes in sec.iter_versions():
                for a in auxes:
                    idx[a["vna_other"]] = (vn.name, a.name)
        vs = elf.get_section_by_name(".gnu.version").data()
        return {s.name: idx.get(struct.unpack_from("<H", vs, 2 * i)[0] & 0x7FFF)
                for i, s in enumerate(elf.get_section_by_name(".dynsym").iter_symbols())
                if i and s["st_shndx"] == "SHN_UNDEF"}


def needed(path: Path) -> list[str]:
    with open(path, "rb") as f:
        dyn = ELFFile(f).get_section_by_name(".dynamic")
        return [t.needed for t in dyn.iter_tags() if t.entry.d_tag == "DT_NEEDED"]


def compat_stand_in(folder: Path, names: list[str]) -> Path:
    """A library exporting `names` in place of the compatibility library (which links only on glibc
    2.31): the pass reads nothing of it but its export list."""
    body = "\n".join(f"int {n}(void) {{ return 0; }}" for n in names if n != "__libc_single_threaded")
    if "__libc_single_threaded" in names:
        body += "\nchar __libc_single_threaded = 0;"
    return cc(folder, floor.COMPAT_SONAME, body, "-shared", f"-Wl,-soname,{floor.COMPAT_SONAME}")


MOVED_SRC = textwrap.dedent(r"""
    #define _GNU_SOURCE
    #include <dlfcn.h>
    #include <fcntl.h>
    #include <pthread.h>
    #include <sched.h>
    #include <semaphore.h>
    #include <sys/mman.h>
    #include <time.h>
    static void *run(void *arg) { return (void *)((long)arg + 1); }
    long spawn(long x) {
        pthread_t t; void *r;
        if (pthread_create(&t, 0, run, (void *)x)) return -1;
        if (pthread_join(t, &r)) return -2;
        return (long)r;
    }
    int clock_lock(void) {
        pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER; struct timespec ts = {0, 0};
        clock_gettime(CLOCK_REALTIME, &ts); ts.tv_sec += 1;
        int r = pthread_mutex_clocklock(&m, CLOCK_REALTIME, &ts);
        pthread_mutex_unlock(&m);
        return r;
    }
    int affinity(void) {
        pthread_attr_t a; cpu_set_t s; CPU_ZERO(&s); CPU_SET(0, &s);
        pthread_attr_init(&a);
        return pthread_attr_setaffinity_np(&a, sizeof s, &s);
    }
    void *open_self(void) { return dlopen(0, RTLD_NOW); }
    int shm(void) { int fd = shm_open("/floor-test", O_RDONLY, 0); return fd; }
    int sem(void) { sem_t s; sem_init(&s, 0, 1); struct timespec ts = {0, 0}; return sem_timedwait(&s, &ts); }
""")


def test_shipped_tables_are_bullseye_and_trixie_glibc():
    assert (FLOOR.glibc, NEWER.glibc) == ("2.31", "2.41")
    assert "libc6 2.31-13" in FLOOR.label and "libc6 2.41-12" in NEWER.label
    assert FLOOR.default("pthread_create") == ("libpthread.so.0", "GLIBC_2.2.5")
    # The condvar's default is 2.3.2; 2.2.5 is the old, hidden ABI: never a target.
    assert FLOOR.default("pthread_cond_wait") == ("libc.so.6", "GLIBC_2.3.2")
    assert "GLIBC_2.2.5" in FLOOR.libraries["libc.so.6"]["symbols"]["pthread_cond_wait"][1]
    assert FLOOR.default("stat") is None and FLOOR.default("__xstat") == ("libc.so.6", "GLIBC_2.2.5")
    # Newer glibcs keep every version node of the floor's libraries (GLIBC_PRIVATE aside).
    for soname, lib in FLOOR.libraries.items():
        lost = [v for v in lib["verdefs"] if v != "GLIBC_PRIVATE" and not NEWER.defines_version(soname, v)]
        assert lost == []


def test_a_table_read_from_the_host_glibc_names_its_version(tmp_path):
    libdir = Path("/lib/x86_64-linux-gnu")
    if not (libdir / "libc.so.6").exists():
        pytest.skip("no x86-64 glibc on this host")
    table = floor.read_table(libdir, label="host")
    assert floor.glibc_key("GLIBC_" + table.glibc) == HOST_GLIBC
    again = floor.load_table(str(tmp_path / "host.json")) if (tmp_path / "host.json").write_text(
        table.to_json()) else None
    assert again == table
    if HOST_GLIBC >= (2, 34):
        assert table.default("pthread_create") == ("libc.so.6", "GLIBC_2.34")


def test_a_missing_table_is_one_line_naming_the_shipped_ones():
    with pytest.raises(ClosureError, match=r"not a glibc table .*shipped: bullseye, trixie"):
        floor.load_table("buster")


def test_elf_hash_matches_the_linker(tmp_path):
    lib = cc(tmp_path, "libh.so", MOVED_SRC, "-shared")
    with open(lib, "rb") as f:
        for _, auxes in ELFFile(f).get_section_by_name(".gnu.version_r").iter_versions():
            for a in auxes:
                assert floor.elf_hash(a.name) == a["vna_hash"]


@needs_new_glibc
def test_moved_symbols_retarget_to_the_floor_default_and_still_bind_on_a_new_glibc(tmp_path, log):
    lib = cc(tmp_path, "libmoved.so", MOVED_SRC, "-shared")
    assert version_refs(lib)["pthread_create"] == ("libc.so.6", "GLIBC_2.34")
    compat = compat_stand_in(tmp_path, ["arc4random"])
    records = floor.treat({"lib/ollama/libmoved.so": lib}, FLOOR, compat_library=compat, rules=RULES, log=log,
                          newer=NEWER)
    rec = records["lib/ollama/libmoved.so"]
    by = {c.symbol: c for c in rec.changes}
    assert (by["pthread_create"].action, by["pthread_create"].new) == ("retarget", "GLIBC_2.2.5")
    assert by["pthread_create"].binds_to == "libpthread.so.0" and "moved from libpthread.so.0" in by[
        "pthread_create"].why
    after = version_refs(lib)
    assert after["pthread_create"][1] == after["dlopen"][1] == "GLIBC_2.2.5"
    assert by["dlopen"].binds_to == "libdl.so.2" and by["shm_open"].binds_to == "librt.so.1"
    # Nothing above the floor is named any more; the floor's homes of the symbols are loaded with it.
    assert all(v is None or not FLOOR.above(v[1]) for v in after.values())
    assert floor.check_file(lib, FLOOR, newer=NEWER) == []
    assert {"libpthread.so.0", "libdl.so.2", "librt.so.1"} <= set(needed(lib))
    assert floor.COMPAT_SONAME not in needed(lib)
    # This host's glibc binds them all at load time, and they work.
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import ctypes
        lib = ctypes.CDLL({str(lib)!r}, mode=ctypes.RTLD_GLOBAL)
        lib.open_self.restype = ctypes.c_void_p
        print(lib.spawn(41), lib.clock_lock(), lib.affinity(), bool(lib.open_self()))
    """)], env={**os.environ, "LD_BIND_NOW": "1"}, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["42", "0", "0", "True"]


@needs_new_glibc
def test_compat_references_become_unversioned_and_bind_to_libc_where_it_has_them(tmp_path, log):
    if HOST_GLIBC < (2, 36):
        pytest.skip("arc4random needs glibc 2.36")
    src = textwrap.dedent(r"""
        #define _GNU_SOURCE
        #include <malloc.h>
        #include <stdlib.h>
        #include <sys/stat.h>
        #include <sys/single_threaded.h>
        void *addr_arc4random(void) { return (void *)&arc4random; }
        int st(const char *p) { struct stat b; return stat(p, &b); }
        int single(void) { return __libc_single_threaded; }
        size_t mi(void) { return mallinfo2().arena; }
    """)
    lib = cc(tmp_path, "libnew.so", src, "-shared")
    assert version_refs(lib)["arc4random"] == ("libc.so.6", "GLIBC_2.36")
    names = ["arc4random", "stat", "__libc_single_threaded", "mallinfo2"]
    compat = compat_stand_in(tmp_path, names)
    rec = floor.treat({"libnew.so": lib}, FLOOR, compat_library=compat, rules=RULES, log=log,
                      newer=NEWER)["libnew.so"]
    by = {c.symbol: c for c in rec.changes}
    for name in names:
        assert (by[name].action, by[name].new, by[name].binds_to) == ("compat", None, floor.COMPAT_SONAME)
        assert version_refs(lib)[name] is None
    assert rec.added_needed == (floor.COMPAT_SONAME,) and floor.COMPAT_SONAME in needed(lib)
    # The check reads an unversioned reference as a compat one: with the library gone from DT_NEEDED,
    # it is a problem.
    assert floor.check_file(lib, FLOOR, compat=names, newer=NEWER) == []
    # On this host (its glibc has them all) the references bind to libc's own, not to the stand-in.
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import ctypes
        lib = ctypes.CDLL({str(lib)!r})
        libc = ctypes.CDLL("libc.so.6")
        lib.addr_arc4random.restype = ctypes.c_void_p
        print(lib.addr_arc4random() == ctypes.cast(libc.arc4random, ctypes.c_void_p).value, lib.st(b"/"))
    """)], env={**os.environ, "LD_BIND_NOW": "1", "LD_LIBRARY_PATH": str(tmp_path)},
        capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "0"]


@needs_new_glibc
def test_an_unversioned_compat_reference_without_the_library_is_a_problem(tmp_path):
    lib = cc(tmp_path, "libstat.so", "#include <sys/stat.h>\nint st(const char *p) { struct stat b; "
             "return stat(p, &b); }\n", "-shared")
    if version_refs(lib).get("stat") is None:
        pytest.skip("this glibc inlines stat")
    plan = floor.plan_file(lib, FLOOR, compat=["stat"], rules=RULES)
    floor.apply_plan(plan)  # the references rewritten, but DT_NEEDED not added
    (line,) = floor.check_file(lib, FLOOR, compat=["stat"], name="lib/ollama/libstat.so")
    assert line.startswith("lib/ollama/libstat.so: stat is unversioned for libollama-glibc-compat.so.1")


@needs_new_glibc
def test_only_version_tables_change_and_gpu_code_keeps_its_bytes(tmp_path, log):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 64)
    lib = cc(tmp_path, "libgpu.so", MOVED_SRC, "-shared")
    subprocess.run(["objcopy", "--add-section", f".hip_fatbin={blob}", "--set-section-flags",
                    ".hip_fatbin=alloc,readonly,data", str(lib)], check=True)
    before = floor.section_digests(lib)
    compat = compat_stand_in(tmp_path, ["arc4random"])
    rec = floor.treat({"libgpu.so": lib}, FLOOR, compat_library=compat, rules=RULES, log=log)["libgpu.so"]
    after = floor.section_digests(lib)
    assert rec.gpu_code[".hip_fatbin"] == before[".hip_fatbin"] == after[".hip_fatbin"]
    assert rec.sha256_before != rec.sha256_after == file_sha256(lib)


@needs_new_glibc
def test_the_in_place_edit_keeps_size_and_drops_unused_needs(tmp_path):
    lib = cc(tmp_path, "libdrop.so", MOVED_SRC, "-shared")
    size = lib.stat().st_size
    before = floor.section_digests(lib)
    floor.apply_plan(floor.plan_file(lib, FLOOR, compat=[], rules=RULES))
    after = floor.section_digests(lib)
    assert lib.stat().st_size == size
    assert {n for n in before if before[n] != after[n]} <= set(floor.EDITED_SECTIONS)
    with open(lib, "rb") as f:
        elf = ELFFile(f)
        sec = elf.get_section_by_name(".gnu.version_r")
        assert "GLIBC_2.34" not in [a.name for _, auxes in sec.iter_versions() for a in auxes]
        num = next(t.entry.d_val for t in elf.get_section_by_name(".dynamic").iter_tags()
                   if t.entry.d_tag == "DT_VERNEEDNUM")
        assert num == sec["sh_info"] == len(list(sec.iter_versions()))
    out = subprocess.run(["readelf", "-V", "-W", str(lib)], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "GLIBC_2.34" not in out.stdout


@needs_new_glibc
def test_an_executable_above_the_floor_is_refused_in_one_line(tmp_path):
    exe = cc(tmp_path, "ollama", "#include <pthread.h>\nstatic void *f(void *a) { return a; }\n"
             "int main(void) { pthread_t t; return pthread_create(&t, 0, f, 0); }\n")
    with pytest.raises(ClosureError) as err:
        floor.plan_file(exe, FLOOR, compat=[], rules=RULES, name="bin/ollama")
    (line,) = str(err.value).splitlines()
    assert line.startswith("bin/ollama: an executable needing GLIBC_2.34") and "host builder" in line


def test_an_executable_within_the_floor_is_left_alone(tmp_path):
    # (bin/ollama built on the floor system; here one that needs nothing of glibc at all.)
    exe = cc(tmp_path, "prog", "void _start(void) { __builtin_trap(); }\n", "-nostdlib", "-pie")
    plan = floor.plan_file(exe, FLOOR, compat=[], rules=RULES)
    assert not plan.changed and plan.add_needed == ()


@pytest.mark.parametrize("calls_libc", [True, False])
def test_dt_relr_is_refused(tmp_path, calls_libc):
    # With a libc call, ld also marks the object GLIBC_ABI_DT_RELR; without one only DT_RELR tells, and
    # an object with nothing above the floor needs no pass at all.
    body = "#include <stdlib.h>\nint x; int *p = &x; int *q = &x;\nint *g(void){ %s return p; }\n" % (
        "free(q);" if calls_libc else "")
    try:
        lib = cc(tmp_path, "librelr.so", body, "-shared", "-Wl,-z,pack-relative-relocs")
    except subprocess.CalledProcessError:
        pytest.skip("this linker cannot make DT_RELR objects")
    if "RELR" not in subprocess.run(["readelf", "-d", str(lib)], capture_output=True, text=True).stdout:
        pytest.skip("this linker ignores -z pack-relative-relocs (binutils before 2.38)")
    if calls_libc:
        with pytest.raises(ClosureError, match="GLIBC_ABI_DT_RELR"):
            floor.plan_file(lib, FLOOR, compat=[], rules=RULES)
    else:
        assert not floor.plan_file(lib, FLOOR, compat=[], rules=RULES).changed


def test_symbols_nobody_provides_are_refused_one_line_each(tmp_path):
    src = "#define _GNU_SOURCE\n#include <sys/pidfd.h>\nint f(void){return pidfd_open(0,0);}\n"
    try:
        lib = cc(tmp_path, "libpidfd.so", src, "-shared")
    except subprocess.CalledProcessError:
        pytest.skip("no pidfd_open in this glibc")
    with pytest.raises(ClosureError) as err:
        floor.plan_file(lib, FLOOR, compat=["arc4random"], rules=RULES, name="lib/ollama/libpidfd.so")
    (line,) = str(err.value).splitlines()
    assert line.startswith("lib/ollama/libpidfd.so: pidfd_open@GLIBC_2.36") and "stand-in" in line


@pytest.fixture
def stub_glibc(tmp_path):
    """A stub libc.so.6 / libm.so.6 with version nodes this toolchain may not have."""
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "libc.map").write_text(
        "GLIBC_2.2.5 { global: free; };\nGLIBC_2.34 { global: pthread_create; } GLIBC_2.2.5;\n"
        "GLIBC_2.38 { global: __isoc23_strtol; } GLIBC_2.34;\n"
        "GLIBC_2.40 { global: exp; } GLIBC_2.38;\nGLIBC_2.42 { global: cfsetospeed; } GLIBC_2.40;\n")
    cc(stub, "libc.so.6", "void free(void*p){} int pthread_create(void){return 0;} "
       "long __isoc23_strtol(void){return 0;} double exp(double x){return x;} "
       "int cfsetospeed(void){return 0;}",
       "-shared", "-nostdlib", "-Wl,-soname,libc.so.6", f"-Wl,--version-script={stub / 'libc.map'}")
    (stub / "libm.map").write_text("GLIBC_2.38 { global: fmod; };\n")
    cc(stub, "libm.so.6", "double fmod(double a, double b){return a;}", "-shared", "-nostdlib",
       "-Wl,-soname,libm.so.6", f"-Wl,--version-script={stub / 'libm.map'}")
    return stub


def against_stub(folder: Path, stub: Path, name: str, body: str) -> Path:
    return cc(folder, name, body, "-shared", "-nostdlib", f"-L{stub}", "-l:libc.so.6", "-l:libm.so.6")


def test_a_same_abi_rule_retargets_fmod_citing_its_commit(tmp_path, stub_glibc):
    lib = against_stub(tmp_path, stub_glibc, "libfmod.so", "double fmod(double,double); void free(void*);"
                       "double f(double a, void *p){free(p); return fmod(a, 2.0);}")
    assert version_refs(lib)["fmod"] == ("libm.so.6", "GLIBC_2.38")
    plan = floor.plan_file(lib, FLOOR, compat=[], rules=RULES, newer=NEWER)
    (c,) = [c for c in plan.changes if c.symbol == "fmod"]
    assert (c.action, c.new, c.binds_to) == ("retarget", "GLIBC_2.2.5", "libm.so.6")
    assert "16439f419b" in c.why
    floor.apply_plan(plan)
    assert version_refs(lib)["fmod"][1] == "GLIBC_2.2.5"
    assert floor.check_file(lib, FLOOR, newer=NEWER) == []


def test_a_changed_abi_is_refused_with_its_source(tmp_path, stub_glibc):
    lib = against_stub(tmp_path, stub_glibc, "libtty.so",
                       "int cfsetospeed(void*, unsigned); int f(void*t){return cfsetospeed(t, 9600);}")
    with pytest.raises(ClosureError) as err:
        floor.plan_file(lib, FLOOR, compat=[], rules=RULES)
    assert "cfsetospeed@GLIBC_2.42" in str(err.value) and "ABI changed" in str(err.value)
    assert "5cf101a85a" in str(err.value)


def test_an_unreviewed_reversion_is_refused(tmp_path, stub_glibc):
    lib = against_stub(tmp_path, stub_glibc, "libexp.so",
                       "double exp(double); double f(double a){return exp(a);}")
    with pytest.raises(ClosureError, match="nobody reviewed"):
        floor.plan_file(lib, FLOOR, compat=[], rules=RULES)


def test_a_c23_parser_goes_to_the_compatibility_library(tmp_path, stub_glibc):
    lib = against_stub(tmp_path, stub_glibc, "libc23.so", "long __isoc23_strtol(const char*, char**, int);"
                       "long f(const char*s){return __isoc23_strtol(s, 0, 0);}")
    with pytest.raises(ClosureError, match=r"neither in glibc 2\.31 nor in"):
        floor.plan_file(lib, FLOOR, compat=[], rules=RULES)
    plan = floor.plan_file(lib, FLOOR, compat=["__isoc23_strtol"], rules=RULES)
    assert [(c.symbol, c.action) for c in plan.changes] == [("__isoc23_strtol", "compat")]
    assert plan.add_needed == (floor.COMPAT_SONAME,)
    floor.apply_plan(plan)
    assert version_refs(lib)["__isoc23_strtol"] is None
    with open(lib, "rb") as f:
        sec = ELFFile(f).get_section_by_name(".gnu.version_r")
        names = [a.name for _, ax in sec.iter_versions() for a in ax]
    assert "GLIBC_2.38" not in names


def test_a_freed_need_is_renamed_when_no_need_of_that_name_exists(tmp_path, stub_glibc):
    # Only libc.so.6 GLIBC_2.34 is needed from glibc; "GLIBC_2.2.5" is in .dynstr only as the version of
    # another library: the freed GLIBC_2.34 need of libc.so.6 is renamed to GLIBC_2.2.5.
    other = tmp_path / "other"
    other.mkdir()
    (other / "o.map").write_text("GLIBC_2.2.5 { global: other_fn; };\n")
    cc(other, "libother.so", "int other_fn(void){return 0;}", "-shared", "-nostdlib",
       "-Wl,-soname,libother.so", f"-Wl,--version-script={other / 'o.map'}")
    lib = cc(tmp_path, "libren.so", "int pthread_create(void); int other_fn(void);"
             "int f(void){return pthread_create() + other_fn();}", "-shared", "-nostdlib",
             f"-L{stub_glibc}", "-l:libc.so.6", f"-L{other}", "-lother")
    assert version_refs(lib)["pthread_create"] == ("libc.so.6", "GLIBC_2.34")
    plan = floor.plan_file(lib, FLOOR, compat=[], rules=RULES, newer=NEWER)
    assert plan.renamed == (("libc.so.6", "GLIBC_2.34", "GLIBC_2.2.5"),)
    floor.apply_plan(plan)
    assert version_refs(lib)["pthread_create"] == ("libc.so.6", "GLIBC_2.2.5")
    assert floor.check_file(lib, FLOOR, newer=NEWER) == []


@needs_new_glibc
def test_a_target_without_its_name_in_dynstr_binds_unversioned(tmp_path):
    # pthread_mutex_clocklock's floor default is GLIBC_2.30, a name the object's strings do not have.
    lib = cc(tmp_path, "libclk.so", MOVED_SRC, "-shared")
    plan = floor.plan_file(lib, FLOOR, compat=[], rules=RULES, newer=NEWER)
    (c,) = [c for c in plan.changes if c.symbol == "pthread_mutex_clocklock"]
    assert c.action == "unversioned" and c.binds_to == "libpthread.so.0" and "GLIBC_2.30" in c.why


def test_a_compatibility_library_may_not_shadow_the_floor(tmp_path, log):
    lib = cc(tmp_path, "libx.so", MOVED_SRC, "-shared")
    compat = compat_stand_in(tmp_path, ["arc4random", "strtol"])
    with pytest.raises(ClosureError, match=r"exports symbols glibc 2\.31 defines"):
        floor.treat({"libx.so": lib}, FLOOR, compat_library=compat, rules=RULES, log=log)


@needs_new_glibc
def test_one_refusal_writes_nothing(tmp_path, stub_glibc, log):
    good = cc(tmp_path, "libgood.so", MOVED_SRC, "-shared")
    bad = against_stub(tmp_path, stub_glibc, "libbad.so",
                       "int cfsetospeed(void*, unsigned); int f(void*t){return cfsetospeed(t, 9600);}")
    compat = compat_stand_in(tmp_path, ["arc4random"])
    digest = file_sha256(good)
    with pytest.raises(ClosureError, match=r"libbad\.so: cfsetospeed@GLIBC_2\.42"):
        floor.treat({"libgood.so": good, "libbad.so": bad}, FLOOR, compat_library=compat, rules=RULES,
                    log=log)
    assert file_sha256(good) == digest


@needs_new_glibc
def test_the_record_is_json_ready_and_a_second_run_changes_nothing(tmp_path, log):
    lib = cc(tmp_path, "librec.so", MOVED_SRC, "-shared")
    compat = compat_stand_in(tmp_path, ["arc4random"])
    rec = floor.treat({"librec.so": lib}, FLOOR, compat_library=compat, rules=RULES, log=log)["librec.so"]
    doc = json.loads(json.dumps(plain(rec)))
    assert {"symbol", "library", "old", "new", "action", "binds_to", "why"} <= set(doc["changes"][0])
    assert doc["sha256_after"] == file_sha256(lib)
    digest = file_sha256(lib)
    assert floor.treat({"librec.so": lib}, FLOOR, compat_library=compat, rules=RULES, log=log) == {}
    assert file_sha256(lib) == digest


def test_abi_changes_are_read_by_the_typed_loader(tmp_path):
    bad = tmp_path / "abi.toml"
    bad.write_text('[[symbol]]\nname = "fmod"\nversion = "GLIBC_2.38"\nverdict = "fine"\nreason = "r"\n'
                   'source = "s"\n')
    with pytest.raises(Exception, match="verdict must be 'same-abi' or 'changed'"):
        floor.load_abi_changes(bad)
    verdicts = {(r.name, r.verdict) for r in RULES.symbol}
    assert verdicts >= {("fmod", "same-abi"), ("__libc_start_main", "changed")}


def test_a_library_the_closure_knows_by_its_link_is_read_again_from_the_lowered_file(tmp_path):
    from pipeline.stages.package import lowering

    folder = tmp_path / "lib/ollama/rocm"
    folder.mkdir(parents=True)
    (folder / "librocblas.so.4.4").write_bytes(b"x")
    os.symlink("librocblas.so.4.4", folder / "librocblas.so.4")
    os.symlink("librocblas.so.4", folder / "librocblas.so")
    links = {f"lib/ollama/rocm/{n}": folder / n for n in ("librocblas.so.4", "librocblas.so")}
    assert lowering._follow("lib/ollama/rocm/librocblas.so", links) == "lib/ollama/rocm/librocblas.so.4.4"
    assert lowering._follow("lib/ollama/rocm/librocblas.so.4.4", links) == "lib/ollama/rocm/librocblas.so.4.4"
