"""Bad input, table-driven: every case is refused with its error class's exit code and one `error:` line
naming the culprit, with no traceback, and without changing a file outside its temporary folder.

The inputs: targets.toml, the command line, the environment, the patch series, memory scenarios,
package archives and releases. Each case runs `python -m pipeline` in-process (pipeline.cli.main)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from pipeline import errors, stages
from pipeline.cli import main
from pipeline.config import loader
from pipeline.infra import owner

from . import injections
from .conftest import PROJECT, SIMPLE_DIFF, TARGETS_FILE, package_stage, patch_text

CFG, SEL, USE = errors.ConfigError.exit_code, errors.SelectionError.exit_code, errors.UsageError.exit_code
PKG, VFY = errors.PackageError.exit_code, errors.VerifyError.exit_code
SKIP_DIRS = {".git", ".nox", "__pycache__", ".pytest_cache", ".ruff_cache"}


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    code: int
    culprit: str
    env: tuple[tuple[str, str], ...] = ()
    setup: Callable[[Path], None] | None = None
    tool: str = "pipeline"  # or "publish": python -m pipeline publish
    also: tuple[str, ...] = ()  # more the line names ({tmp}: the case's folder)


def project_snapshot() -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirs, files in os.walk(PROJECT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def tree_snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[p] = (st.st_size, st.st_mtime_ns, os.readlink(p) if os.path.islink(p) else "")
    return out


# --- targets.toml ---------------------------------------------------------------------------------

BASE = TARGETS_FILE.read_text()


def matrix_with(old: str, new: str, *, count: int = 1) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        assert old in BASE, old
        (tmp / "targets.toml").write_bytes(BASE.replace(old, new, count).encode("utf-8", "surrogateescape"))
    return setup


def matrix_text(text: str | bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        data = text if isinstance(text, bytes) else text.encode()
        (tmp / "targets.toml").write_bytes(data)
    return setup


TARGETS = ("targets", "--targets-file", "{tmp}/targets.toml")
CPU = "[targets.cpu]"
URL = 'url = "https://github.com/ollama/ollama.git"'
TAG = 'tag = "v0.12.5"'
FMT = 'version_format = "{version}+{target}"'
GFX906 = 'gpu_archs = ["gfx906"]'
MATRIX_CASES = [
    Case("target-name-escapes", TARGETS, CFG, "'../evil'", setup=matrix_with(CPU, '[targets."../evil"]')),
    Case("target-name-absolute", TARGETS, CFG, "'/tmp/x'", setup=matrix_with(CPU, '[targets."/tmp/x"]')),
    Case("target-name-release", TARGETS, CFG, "'release' is reserved",
         setup=matrix_with(CPU, "[targets.release]")),
    Case("target-name-all", TARGETS, CFG, "'all' is reserved", setup=matrix_with(CPU, "[targets.all]")),
    Case("target-name-patches", TARGETS, CFG, "'patches' is reserved",
         setup=matrix_with(CPU, "[targets.patches]")),
    Case("target-name-upper", TARGETS, CFG, "'CPU'", setup=matrix_with(CPU, "[targets.CPU]")),
    Case("target-name-space", TARGETS, CFG, "'a b'", setup=matrix_with(CPU, '[targets."a b"]')),
    Case("target-name-empty", TARGETS, CFG, "''", setup=matrix_with(CPU, '[targets.""]')),
    Case("target-name-dash", TARGETS, CFG, "'-x'", setup=matrix_with(CPU, '[targets."-x"]')),
    Case("target-name-glob", TARGETS, CFG, "'c*'", setup=matrix_with(CPU, '[targets."c*"]')),
    Case("target-name-dot", TARGETS, CFG, "'..'", setup=matrix_with(CPU, '[targets.".."]')),
    Case("builder-name-slash", TARGETS, CFG, "'a/b'", setup=matrix_with("[builders.debian-cpu]",
                                                                       '[builders."a/b"]')),
    Case("backend-name-reserved", TARGETS, CFG, "'all' is reserved", setup=matrix_with("[backends.cpu]",
                                                                                       "[backends.all]")),
    Case("arch-unknown-hip", TARGETS, CFG, "'gfx9999'", setup=matrix_with(GFX906, 'gpu_archs = ["gfx9999"]')),
    Case("arch-injection", TARGETS, CFG, "'gfx906;touch x'",
         setup=matrix_with(GFX906, 'gpu_archs = ["gfx906;touch x"]')),
    Case("arch-unknown-cuda", TARGETS, CFG, "'38-real'",
         setup=matrix_with('gpu_archs = ["37-real"]', 'gpu_archs = ["38-real"]')),
    Case("arch-duplicate", TARGETS, CFG, "twice",
         setup=matrix_with(GFX906, 'gpu_archs = ["gfx906", "gfx906"]')),
    Case("runtime-arch-outside", TARGETS, CFG, "runtime.archs 'gfx1030'",
         setup=matrix_with('runtime.archs = ["gfx906"]', 'runtime.archs = ["gfx1030"]')),
    Case("version-format-attr", TARGETS, CFG, "{version.__class__}",
         setup=matrix_with(FMT, 'version_format = "{version.__class__}"')),
    Case("version-format-conversion", TARGETS, CFG, "{version!r}",
         setup=matrix_with(FMT, 'version_format = "{version!r}"')),
    Case("version-format-spec", TARGETS, CFG, "{version:>99999999}",
         setup=matrix_with(FMT, 'version_format = "{version:>99999999}"')),
    Case("version-format-index", TARGETS, CFG, "{0}", setup=matrix_with(FMT, 'version_format = "{0}"')),
    Case("version-format-no-version", TARGETS, CFG, "must contain {version}",
         setup=matrix_with(FMT, 'version_format = "{target}"')),
    Case("version-format-space", TARGETS, CFG, "version_format",
         setup=matrix_with(FMT, 'version_format = "{version} -X x"')),
    Case("version-format-broken", TARGETS, CFG, "version_format",
         setup=matrix_with(FMT, 'version_format = "{version"')),
    Case("version-variable-option", TARGETS, CFG, "version_variable",
         setup=matrix_with('version_variable = "github.com/ollama/ollama/version.Version"',
                           'version_variable = "x -X y.z"')),
    Case("url-option", TARGETS, CFG, "'--upload-pack=touch x'",
         setup=matrix_with(URL, 'url = "--upload-pack=touch x"')),
    Case("url-dash", TARGETS, CFG, "'-oProxyCommand=x'", setup=matrix_with(URL, 'url = "-oProxyCommand=x"')),
    Case("url-ext-transport", TARGETS, CFG, "ext::", setup=matrix_with(URL, 'url = "ext::sh -c touch% x"')),
    Case("url-fd-transport", TARGETS, CFG, "fd::", setup=matrix_with(URL, 'url = "fd::3"')),
    Case("url-scheme", TARGETS, CFG, "'ftp'", setup=matrix_with(URL, 'url = "ftp://example.com/x.git"')),
    Case("url-host-dash", TARGETS, CFG, "ssh://-oProxyCommand",
         setup=matrix_with(URL, 'url = "ssh://-oProxyCommand=x/y"')),
    Case("url-newline", TARGETS, CFG, "[defaults.source] key 'url'", setup=matrix_with(URL, 'url = "https://a/b\\n--c"')),
    Case("tag-option", TARGETS, CFG, "'--help'", setup=matrix_with(TAG, 'tag = "--help"')),
    Case("tag-dotdot", TARGETS, CFG, "'v1..2'", setup=matrix_with(TAG, 'tag = "v1..2"')),
    Case("tag-space", TARGETS, CFG, "'v1 2'", setup=matrix_with(TAG, 'tag = "v1 2"')),
    Case("tag-lock", TARGETS, CFG, "'v1.lock'", setup=matrix_with(TAG, 'tag = "v1.lock"')),
    Case("tag-reflog", TARGETS, CFG, "'v1@{0}'", setup=matrix_with(TAG, 'tag = "v1@{0}"')),
    Case("commit-short", TARGETS, CFG, "[defaults.source] key 'commit'", setup=matrix_with(
        'commit = "3d32249c749c6f77c1dc8a7cb55ae74fc2f4c08b"', 'commit = "3d32249c"')),
    Case("not-utf8", TARGETS, CFG, "not UTF-8", setup=matrix_text(b"[defaults]\nbuilder = \"\xff\"\n")),
    Case("not-toml", TARGETS, CFG, "not valid TOML", setup=matrix_text("[defaults\n")),
    Case("targets-file-folder", ("targets", "--targets-file", "{tmp}"), CFG, "is a folder"),
    Case("targets-file-missing", ("targets", "--targets-file", "{tmp}/none.toml"), CFG, "none.toml"),
    Case("unknown-key", TARGETS, CFG, "'gpu_arches'", setup=matrix_with(GFX906, 'gpu_arches = ["gfx906"]')),
    Case("wrong-type", TARGETS, CFG, "'backends'",
         setup=matrix_with('backends = ["cpu"]', 'backends = "cpu"')),
    Case("bool-for-int", TARGETS, CFG, "compression_level", setup=matrix_with(
        'format = "tar.zst"', 'format = "tar.zst"\ncompression_level = true')),
    Case("format-unknown", TARGETS, CFG, "'zip'", setup=matrix_with('format = "tar.zst"', 'format = "zip"')),
    Case("level-range", TARGETS, CFG, "99",
         setup=matrix_with('format = "tar.zst"', 'format = "tar.zst"\ncompression_level = 99')),
    Case("builder-undefined", TARGETS, CFG, "'nosuch'", setup=matrix_with(
        'builder = "debian-rocm"', 'builder = "nosuch"')),
    Case("name-key", TARGETS, CFG, "'name'", setup=matrix_with(
        'description = "CPU only (all x86-64 variants)"', 'description = "x"\nname = "y"')),
    Case("empty-matrix", TARGETS, CFG, "matrix is empty", setup=matrix_text(BASE.split("[targets.cpu]")[0])),
]

# --- command line ---------------------------------------------------------------------------------

CLI_CASES = [
    Case("jobs-zero", ("build", "cpu", "--jobs", "0"), USE, "'0'"),
    Case("jobs-negative", ("build", "cpu", "--jobs=-3"), USE, "'-3'"),
    Case("jobs-word", ("build", "cpu", "--jobs", "many"), USE, "'many'"),
    Case("all-with-names", ("build", "--all", "cpu"), SEL, "cpu"),
    Case("all-with-glob", ("plan", "--all", "gfx*"), SEL, "gfx*"),
    Case("unknown-target", ("build", "nosuch"), SEL, "'nosuch'"),
    Case("no-target", ("build",), SEL, "no target given"),
    Case("source-dash", ("plan", "cpu", "--source=-oProxyCommand=touch x"), USE, "-oProxyCommand"),
    Case("source-upload-pack", ("plan", "cpu", "--source=--upload-pack=touch x"), USE, "--upload-pack"),
    Case("source-ext", ("plan", "cpu", "--source", "ext::sh -c touch% x"), USE, "ext::"),
    Case("source-host-dash", ("plan", "cpu", "--source", "ssh://-oProxyCommand=x/y"), USE,
         "ssh://-oProxyCommand"),
    Case("source-scp-dash", ("plan", "cpu", "--source", "x@-host:path"), USE, "x@-host:path"),
    Case("mirror-scheme", ("build", "cpu", "--debian-mirror", "ftp://mirror.example/debian"), USE, "ftp"),
    Case("mirror-dash", ("build", "cpu", "--debian-mirror=-x"), USE, "'-x'"),
    Case("mirror-path", ("build", "cpu", "--debian-mirror", "mirror.example"), USE, "mirror.example"),
    Case("ref-option", ("patches", "check", "--ref=--upload-pack=x"), USE, "--upload-pack=x"),
    Case("ref-dotdot", ("patches", "apply", "--ref", "v1..2", "--into", "{tmp}/w"), USE, "v1..2"),
    Case("ref-space", ("memtest", "--ref", "v 1", "--json", "{tmp}/m.json"), USE, "v 1"),
    Case("unknown-command", ("frobnicate",), USE, "frobnicate"),
    Case("unknown-option", ("build", "cpu", "--frobnicate"), USE, "--frobnicate"),
    Case("patches-no-action", ("patches",), USE, "action"),
    Case("verify-nothing", ("verify",), USE, "ARCHIVE"),
    Case("verify-missing", ("verify", "{tmp}/ollama-0.12.5-cpu.tar.zst"), USE, "ollama-0.12.5-cpu.tar.zst"),
    Case("release-all-with-names", ("release", "--all", "cpu", "--dist", "{tmp}/dist"), SEL, "cpu"),
    Case("json-is-folder", ("patches", "check", "--json", "{tmp}"), USE, "is a folder"),
    Case("json-under-file", ("memtest", "--json", "{tmp}/file/m.json"), USE, "is a file",
         setup=lambda tmp: (tmp / "file").write_text("x")),
    Case("bench-output-folder", ("bench", "cpu", "--output", "{tmp}"), USE, "is a folder"),
    Case("patches-unknown-target",
         ("patches", "apply", "--ref", "v0.12.5", "--into", "{tmp}/w", "--target", "nosuch"),
         USE, "'nosuch'"),
]

# --- environment ----------------------------------------------------------------------------------

ENV_CASES = [
    Case("epoch-word", ("plan", "cpu"), USE, "'soon'", env=(("SOURCE_DATE_EPOCH", "soon"),)),
    Case("epoch-negative", ("plan", "cpu"), USE, "'-1'", env=(("SOURCE_DATE_EPOCH", "-1"),)),
    Case("epoch-huge", ("plan", "cpu"), USE, "'99999999999999'",
         env=(("SOURCE_DATE_EPOCH", "99999999999999"),)),
    Case("epoch-arabic-digits", ("plan", "cpu"), USE, "SOURCE_DATE_EPOCH",
         env=(("SOURCE_DATE_EPOCH", "\u0661\u0662"),)),
    Case("epoch-float", ("plan", "cpu"), USE, "'1.5'", env=(("SOURCE_DATE_EPOCH", "1.5"),)),
    Case("jobs-env-zero", ("plan", "cpu"), USE, "PIPELINE_JOBS", env=(("PIPELINE_JOBS", "0"),)),
    Case("jobs-env-word", ("plan", "cpu"), USE, "PIPELINE_JOBS", env=(("PIPELINE_JOBS", "all"),)),
    Case("source-env-dash", ("plan", "cpu"), USE, "OLLAMA_SOURCE",
         env=(("OLLAMA_SOURCE", "--upload-pack=x"),)),
    Case("source-env-ext", ("plan", "cpu"), USE, "ext::", env=(("OLLAMA_SOURCE", "ext::sh -c x"),)),
    Case("mirror-env", ("build", "cpu"), USE, "PIPELINE_DEBIAN_MIRROR",
         env=(("PIPELINE_DEBIAN_MIRROR", "-x"),)),
    Case("goproxy-newline", ("plan", "cpu"), USE, "GOPROXY", env=(("GOPROXY", "https://a\nb"),)),
    Case("targets-env-missing", ("targets",), CFG, "none.toml",
         env=(("PIPELINE_TARGETS", "{tmp}/none.toml"),)),
]

# --- the patch series (PIPELINE_PATCHES) ------------------------------------------------------------


def patches(files: dict[str, str | bytes]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / "patches").mkdir()
        for name, text in files.items():
            (tmp / "patches" / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return setup


GOOD = patch_text("fix", SIMPLE_DIFF)
SERIES_ENV = (("PIPELINE_PATCHES", "{tmp}/patches"),)
PATCH_CASES = [
    Case("patch-name-short", ("plan", "cpu"), CFG, "1-fix.patch", SERIES_ENV, patches({"1-fix.patch": GOOD})),
    Case("patch-name-upper", ("plan", "cpu"), CFG, "0001-Fix.patch", SERIES_ENV,
         patches({"0001-Fix.patch": GOOD})),
    Case("patch-number-twice", ("plan", "cpu"), CFG, "0001", SERIES_ENV,
         patches({"0001-a.patch": GOOD, "0001-b.patch": GOOD})),
    Case("patch-targets-empty", ("plan", "cpu"), CFG, "Targets", SERIES_ENV,
         patches({"0001-a.patch": patch_text("fix", SIMPLE_DIFF, targets=",")})),
    Case("patch-applies-to-empty", ("plan", "cpu"), CFG, "Applies-To", SERIES_ENV,
         patches({"0001-a.patch": patch_text("fix", SIMPLE_DIFF, applies_to=",")})),
    Case("patch-applies-to-garbage", ("plan", "cpu"), CFG, "'soon'", SERIES_ENV,
         patches({"0001-a.patch": patch_text("fix", SIMPLE_DIFF, applies_to="soon")})),
    Case("patch-targets-unknown", ("plan", "cpu"), CFG, "'nosuch'", SERIES_ENV,
         patches({"0001-a.patch": patch_text("fix", SIMPLE_DIFF, targets="nosuch")})),
    Case("patch-status-bad", ("plan", "cpu"), CFG, "'Maybe'", SERIES_ENV,
         patches({"0001-a.patch": patch_text("fix", SIMPLE_DIFF, status="Maybe")})),
    Case("patch-status-no-detail", ("plan", "cpu"), CFG, "Submitted", SERIES_ENV,
         patches({"0001-a.patch": patch_text("fix", SIMPLE_DIFF, status="Submitted")})),
    Case("patch-no-description", ("plan", "cpu"), CFG, "'Description'", SERIES_ENV,
         patches({"0001-a.patch": GOOD.replace("Description: fix\n", "")})),
    Case("patch-field-twice", ("plan", "cpu"), CFG, "Author appears twice", SERIES_ENV,
         patches({"0001-a.patch": GOOD.replace("Author: Test\n", "Author: Test\nAuthor: Other\n")})),
    Case("patch-not-format-patch", ("plan", "cpu"), CFG, "format-patch", SERIES_ENV,
         patches({"0001-a.patch": "just text\n"})),
    Case("patch-binary", ("plan", "cpu"), CFG, "0001-a.patch", SERIES_ENV,
         patches({"0001-a.patch": b"\xff\xfe\x00binary"})),
]

# --- memory scenarios -------------------------------------------------------------------------------

SCENARIO = (PROJECT / "scenarios" / "780m-8b.toml").read_text()


def scenario(old: str, new: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        assert old in SCENARIO
        (tmp / "s.toml").write_text(SCENARIO.replace(old, new))
    return setup


MEMTEST = ("memtest", "{tmp}/s.toml", "--json", "{tmp}/m.json")
SCENARIO_CASES = [
    Case("scenario-size-word", MEMTEST, CFG, "'lots'", setup=scenario('total = "16 GiB"', 'total = "lots"')),
    Case("scenario-size-negative", MEMTEST, CFG, "'-16 GiB'",
         setup=scenario('total = "16 GiB"', 'total = "-16 GiB"')),
    Case("scenario-size-huge", MEMTEST, CFG, "'99999999999 TiB'",
         setup=scenario('total = "16 GiB"', 'total = "99999999999 TiB"')),
    Case("scenario-count-huge", MEMTEST, CFG, "'count'",
         setup=scenario('integrated = true', 'integrated = true\ncount = 100000')),
    Case("scenario-blocks-huge", MEMTEST, CFG, "'block_count'",
         setup=scenario('block_count = 32', 'block_count = 999999999999')),
    Case("scenario-missing", ("memtest", "{tmp}/none.toml", "--json", "{tmp}/m.json"), CFG, "none.toml"),
    Case("scenario-not-toml", MEMTEST, CFG, "not valid TOML",
         setup=lambda tmp: (tmp / "s.toml").write_text("[gpus\n")),
    Case("scenario-not-utf8", MEMTEST, CFG, "not UTF-8",
         setup=lambda tmp: (tmp / "s.toml").write_bytes(b"x = \"\xff\"")),
]

# --- archives (verify) ------------------------------------------------------------------------------

NAME = "ollama-0.12.5-cpu.tar.zst"


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", data: bytes | None = b"x") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info, (data if kind == tarfile.REGTYPE else None)


def archive_file(data: bytes, name: str = NAME) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).write_bytes(data)


VERIFY = ("verify", "{tmp}/" + NAME)
VALID_TAR = tar_of(member("bin/ollama"))
ARCHIVE_CASES = [
    Case("archive-empty", VERIFY, PKG, "empty", setup=archive_file(b"")),
    Case("archive-truncated", VERIFY, PKG, "truncated", setup=archive_file(zst(VALID_TAR * 50)[:-40])),
    Case("archive-wrong-format", VERIFY, PKG, NAME, setup=archive_file(b"\x1f\x8b\x08\x00" + b"\0" * 50)),
    Case("archive-random-gz", ("verify", "{tmp}/ollama-0.12.5-cpu.tar.gz"), PKG, "ollama-0.12.5-cpu.tar.gz",
         setup=archive_file(b"\x1f\x8b\x08\x00garbage" * 10, "ollama-0.12.5-cpu.tar.gz")),
    Case("archive-truncated-gz", ("verify", "{tmp}/ollama-0.12.5-cpu.tar.gz"), PKG,
         "ollama-0.12.5-cpu.tar.gz",
         setup=lambda tmp: (tmp / "ollama-0.12.5-cpu.tar.gz").write_bytes(
             __import__("gzip").compress(VALID_TAR * 20)[:-30])),
    Case("archive-not-archive-name", ("verify", "{tmp}/x.zip"), PKG, "x.zip",
         setup=archive_file(b"PK", "x.zip")),
    Case("archive-not-tar-inside", VERIFY, PKG, NAME, setup=archive_file(zst(b"not a tar" * 100))),
    Case("archive-trailing-data", VERIFY, PKG, "after the end", setup=archive_file(zst(VALID_TAR) + b"junk")),
    Case("archive-absolute-member", VERIFY, PKG, "'/etc/evil'",
         setup=archive_file(zst(tar_of(member("/etc/evil"))))),
    Case("archive-dotdot-member", VERIFY, PKG, "'../evil'",
         setup=archive_file(zst(tar_of(member("../evil"))))),
    Case("archive-inner-dotdot", VERIFY, PKG, "'lib/../../evil'",
         setup=archive_file(zst(tar_of(member("lib/../../evil"))))),
    Case("archive-escaping-link", VERIFY, PKG, "'lib/x'", setup=archive_file(zst(tar_of(
        member("lib/x", tarfile.SYMTYPE, "../../etc/passwd"))))),
    Case("archive-absolute-link", VERIFY, PKG, "'lib/y'", setup=archive_file(zst(tar_of(
        member("lib/y", tarfile.SYMTYPE, "/etc/passwd"))))),
    Case("archive-device", VERIFY, PKG, "'dev/sda'",
         setup=archive_file(zst(tar_of(member("dev/sda", tarfile.BLKTYPE))))),
    Case("archive-fifo", VERIFY, PKG, "'fifo'",
         setup=archive_file(zst(tar_of(member("fifo", tarfile.FIFOTYPE))))),
    Case("archive-hard-link", VERIFY, PKG, "'lib/h'", setup=archive_file(zst(tar_of(
        member("bin/ollama"), member("lib/h", tarfile.LNKTYPE, "/etc/shadow"))))),
    Case("archive-duplicate", VERIFY, PKG, "appears twice", setup=archive_file(zst(tar_of(
        member("bin/ollama"), member("bin/ollama"))))),
    Case("archive-no-members", VERIFY, PKG, "holds nothing", setup=archive_file(zst(tar_of()))),
    Case("archive-no-manifest", VERIFY, PKG, "manifest.json", setup=archive_file(zst(VALID_TAR))),
    Case("archive-manifest-not-json", VERIFY, PKG, "not valid JSON", setup=archive_file(zst(tar_of(
        member("lib/ollama/manifest.json", data=b"{nope"))))),
    Case("archive-manifest-not-object", VERIFY, PKG, "not a manifest", setup=archive_file(zst(tar_of(
        member("lib/ollama/manifest.json", data=b"[1, 2]"))))),
]

# --- a later sweep: image, clean, publish, snapshots, special files, non-UTF-8, hostile releases ---------


def fifo(name: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(tmp / name)
    return setup


def not_utf8(text: str) -> str:
    """What Python makes of an environment value or argument that is not UTF-8 (byte 0xff)."""
    return text.replace("?", b"\xff".decode("utf-8", "surrogateescape"))


def release_manifest(name: str) -> Callable[[Path], None]:
    """dist/cpu/ with a manifest whose archive name is `name`, and an archive of that name where it can be."""
    def setup(tmp: Path) -> None:
        folder = tmp / "dist" / "cpu"
        folder.mkdir(parents=True)
        (folder / "ollama-0.12.5-cpu.tar.zst").write_bytes(b"x")
        doc = {"schema": 1, "target": "cpu", "archive": {"name": name, "size": 1, "sha256": "0" * 64}}
        (folder / "manifest.json").write_text(json.dumps(doc))
    return setup


SNAP = "PIPELINE_DEBIAN_SNAPSHOT"
SNAP_URL = "PIPELINE_DEBIAN_SNAPSHOT_URL"
GOOD_SNAP = (SNAP, "20261101T000000Z")
RELEASE = ("release", "cpu", "--dist", "{tmp}/dist")
def PUBLISH_NOTES(tmp):
    (tmp / "rel").mkdir()
    (tmp / "rel" / "RELEASE_NOTES.md").write_text("# notes\n")
SWEEP_CASES = [
    Case("image-no-verify", ("image", "cpu", "--no-verify"), USE, "--no-verify"),
    Case("build-image-no-verify", ("build", "cpu", "--image", "--no-verify"), USE, "--no-verify"),
    Case("image-unknown-target", ("image", "nosuch"), SEL, "'nosuch'"),
    Case("clean-unknown-flag", ("clean", "--force"), USE, "--force"),
    Case("clean-dry-run-value", ("clean", "--dry-run=yes"), USE, "--dry-run"),
    Case("quiet-value", ("build", "cpu", "--quiet=yes"), USE, "--quiet"),
    Case("publish-no-tag", (), USE, "tag", tool="publish"),
    Case("publish-dash-tag", ("-x", "{tmp}/rel"), USE, "-x", tool="publish"),
    Case("publish-dash-tag-after-dashes", ("--", "--upload-pack=x", "{tmp}/rel"), USE, "'--upload-pack=x'",
         setup=PUBLISH_NOTES, tool="publish"),
    Case("publish-bad-tag", ("v1..2", "{tmp}/rel"), USE, "'v1..2'", setup=PUBLISH_NOTES, tool="publish"),
    Case("publish-missing-folder", ("v1.0", "{tmp}/none/rel"), USE, "none/rel is not a folder",
         tool="publish"),
    Case("publish-folder-is-file", ("v1.0", "{tmp}/f"), USE, "f is not a folder",
         setup=lambda tmp: (tmp / "f").write_text("x"), tool="publish"),
    Case("publish-no-notes", ("v1.0", "{tmp}/rel"), errors.PublishError.exit_code, "RELEASE_NOTES.md",
         setup=lambda tmp: (tmp / "rel").mkdir(), tool="publish"),
    Case("publish-log-unwritable", ("v1.0", "{tmp}/rel", "--log", "/proc/none/publish.log"),
         errors.FileProblem.exit_code, "/proc/none", setup=PUBLISH_NOTES, tool="publish"),
    Case("snapshot-word", ("plan", "cpu"), USE, "'yesterday'", env=((SNAP, "yesterday"),)),
    Case("snapshot-arabic-digits", ("plan", "cpu"), USE, SNAP,
         env=((SNAP, "\u0662" * 8 + "T" + "\u0660" * 6 + "Z"),
              (SNAP_URL, "https://snapshot.example/archive/debian"))),
    Case("snapshot-without-url", ("plan", "cpu"), USE, SNAP_URL, env=(GOOD_SNAP,)),
    Case("snapshot-url-dash", ("plan", "cpu"), USE, SNAP_URL,
         env=(GOOD_SNAP, (SNAP_URL, "-oProxyCommand=x"))),
    Case("snapshot-url-ftp", ("plan", "cpu"), USE, "'ftp'", env=(GOOD_SNAP, (SNAP_URL, "ftp://snapshot/x"))),
    Case("snapshot-url-newline", ("plan", "cpu"), USE, SNAP_URL,
         env=(GOOD_SNAP, (SNAP_URL, "https://a/b\ndeb http://evil/ x main"))),
    Case("snapshot-url-command", ("plan", "cpu"), USE, SNAP_URL, env=((SNAP_URL, "$(touch x)"),)),
    Case("strip-gpu-code-string", TARGETS, CFG, "'strip_gpu_code'",
         setup=matrix_with('format = "tar.zst"', 'format = "tar.zst"\nstrip_gpu_code = "no"')),
    Case("beyond-string", TARGETS, CFG, "'archs_beyond_gpu_archs'", setup=matrix_with(
        'runtime.archs = ["gfx906"]', 'runtime.archs = ["gfx906"]\nruntime.archs_beyond_gpu_archs = "yes"')),
    Case("beyond-unknown-arch", TARGETS, CFG, "runtime.archs 'gfx9999'", setup=matrix_with(
        'runtime.archs = ["gfx906"]', 'runtime.archs = ["gfx9999"]\nruntime.archs_beyond_gpu_archs = true')),
    Case("beyond-injection", TARGETS, CFG, "[targets.gfx906.runtime] key 'archs' item 1: 'gfx906;touch x'",
         setup=matrix_with(
        'runtime.archs = ["gfx906"]',
        'runtime.archs = ["gfx906;touch x"]\nruntime.archs_beyond_gpu_archs = true')),
    Case("runtime-arch-twice", TARGETS, CFG, "twice", setup=matrix_with(
        'runtime.archs = ["gfx906"]', 'runtime.archs = ["gfx906", "gfx906"]')),
    Case("memtest-json-in-proc", ("memtest", "--json", "/proc/none/m.json"), USE, "/proc"),
    Case("refresh-not-a-work-tree", ("patches", "refresh", "--from", "{tmp}"), CFG, "not a work tree"),
    Case("refresh-missing", ("patches", "refresh", "--from", "{tmp}/none"), CFG, "none"),
    Case("targets-file-fifo", TARGETS, CFG, "not a regular file", setup=fifo("targets.toml")),
    Case("targets-file-device", ("targets", "--targets-file", "/dev/zero"), CFG, "/dev/zero"),
    Case("patch-fifo", ("plan", "cpu"), CFG, "0001-a.patch", SERIES_ENV, fifo("patches/0001-a.patch")),
    Case("scenario-fifo", ("memtest", "{tmp}/s.toml", "--json", "{tmp}/m.json"), CFG, "s.toml",
         setup=fifo("s.toml")),
    Case("env-mirror-not-utf8", ("build", "cpu"), USE, "PIPELINE_DEBIAN_MIRROR",
         env=(("PIPELINE_DEBIAN_MIRROR", not_utf8("http://?/debian")),)),
    Case("env-source-not-utf8", ("plan", "cpu"), USE, "OLLAMA_SOURCE",
         env=(("OLLAMA_SOURCE", not_utf8("{tmp}/?")),)),
    Case("env-cache-not-utf8", ("plan", "cpu"), USE, "PIPELINE_CACHE",
         env=(("PIPELINE_CACHE", not_utf8("{tmp}/?")),)),
    Case("env-goproxy-not-utf8", ("plan", "cpu"), USE, "GOPROXY", env=(("GOPROXY", not_utf8("https://?")),)),
    Case("env-targets-not-utf8", ("targets",), USE, "PIPELINE_TARGETS",
         env=(("PIPELINE_TARGETS", not_utf8("{tmp}/?")),)),
    Case("arg-dist-not-utf8", ("build", "cpu", "--dist", not_utf8("{tmp}/?")), USE, "dist"),
    Case("release-manifest-dotdot", RELEASE, PKG, "manifest.json",
         setup=release_manifest("../ollama-0.12.5-cpu.tar.zst")),
    Case("release-manifest-slash", RELEASE, PKG, "manifest.json",
         setup=release_manifest("sub/ollama-0.12.5-cpu.tar.zst")),
    Case("release-manifest-absolute", RELEASE, PKG, "manifest.json", setup=release_manifest("/etc/passwd")),
    Case("release-manifest-not-archive", RELEASE, PKG, "manifest.json",
         setup=release_manifest("manifest.json")),
]

# --- a third sweep: destructive tools against decoys, settings, scenarios without caps, work trees,
# records and patch series of odd shapes, groups and the last strings of targets.toml ----------------


def decoy(*names: str, marker: str | None = None) -> Callable[[Path], None]:
    """A folder {tmp}/decoy that clean must not remove: files of a user, and `marker` as its CACHEDIR.TAG."""
    def setup(tmp: Path) -> None:
        (tmp / "decoy").mkdir()
        for name in names:
            (tmp / "decoy" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / "decoy" / name).write_text("a user's file\n")
        if marker is not None:
            (tmp / "decoy" / "CACHEDIR.TAG").write_text(marker)
    return setup


def cache_link(tmp: Path) -> None:
    decoy("git/x")(tmp)
    (tmp / "link").symlink_to(tmp / "decoy")


def cache_marker_link(tmp: Path) -> None:
    (tmp / "decoy").mkdir()
    (tmp / "real.tag").write_text("Signature: 8a477f597d28d172789f06886806bc55\n"
                                  "# This file is a cache directory tag created by ollama-pipeline.\n")
    (tmp / "decoy" / "CACHEDIR.TAG").symlink_to(tmp / "real.tag")


OTHER_TAG = ("Signature: 8a477f597d28d172789f06886806bc55\n"
             "# This file is a cache directory tag created by pip.\n")
CLEAN = ("clean", "--cache-only")
DECOY = (("PIPELINE_CACHE", "{tmp}/decoy"),)


def work_tree_state(text: str | bytes) -> Callable[[Path], None]:
    """A folder with a .git and `text` as the state file `patches apply` writes there."""
    def setup(tmp: Path) -> None:
        (tmp / "w" / ".git").mkdir(parents=True)
        data = text if isinstance(text, bytes) else text.encode()
        (tmp / "w" / ".git" / "pipeline-series.json").write_bytes(data)
    return setup


def into_taken(tmp: Path) -> None:
    (tmp / "w").mkdir()
    (tmp / "w" / "notes.txt").write_text("mine\n")


def scenario_text(extra: str, old: str = "", new: str = "") -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        text = SCENARIO.split("[expect")[0]
        if old:
            assert old in text, old
            text = text.replace(old, new)
        (tmp / "s.toml").write_text(text + extra)
    return setup


def groups(text: str) -> Callable[[Path], None]:
    return matrix_with("[groups]\n", f"[groups]\n{text}\n")


def manifest_beside(doc: object) -> Callable[[Path], None]:
    """An archive of the pipeline's name with a manifest beside it of the shape `doc`."""
    def setup(tmp: Path) -> None:
        (tmp / NAME).write_bytes(zst(VALID_TAR))
        (tmp / "manifest.json").write_text(json.dumps(doc))
    return setup


def huge_kv(tmp: Path) -> None:
    """Every dimension within its cap, the KV cache they make over the estimator's arithmetic."""
    text = SCENARIO.split("[expect")[0].replace("num_ctx = 8192", "num_ctx = 16000000")
    text = text.replace("block_count = 32", "block_count = 4096")
    text = text.replace("head_count_kv = 8", "head_count_kv = 32")
    (tmp / "s.toml").write_text(text.replace("embedding_length = 4096", "embedding_length = 1048576"))


def two_gpu_kinds(tmp: Path) -> None:
    """Two [[gpus]] tables of 40 GPUs each: each within the cap, together over it."""
    gpu = SCENARIO.split("[gpus]\n")[1].split("[model]")[0]
    rest = SCENARIO.split("[expect")[0].split("[model]")[1]
    (tmp / "s.toml").write_text(f"[[gpus]]\n{gpu}count = 40\n\n[[gpus]]\n{gpu}count = 40\n\n[model]{rest}")


def gh_printing(text: str) -> Callable[[Path], None]:
    """A release folder, and a `gh` at {tmp}/gh that answers `release view` with `text`."""
    def setup(tmp: Path) -> None:
        PUBLISH_NOTES(tmp)
        (tmp / "gh").write_text(f"#!/bin/sh\ncat <<'EOF'\n{text}\nEOF\n")
        (tmp / "gh").chmod(0o755)
    return setup


GH = ("v1.0", "{tmp}/rel", "--gh", "{tmp}/gh", "--log", "{tmp}/publish.log")
PUB = errors.PublishError.exit_code


SCEN = ("memtest", "{tmp}/s.toml", "--json", "{tmp}/m.json")
BOOLS = ("PIPELINE_KEEP_CONTAINERS", "PIPELINE_QUIET", "PIPELINE_TRACEBACK", "PIPELINE_HOST_CA")
STATE = {"ref": "v0.12.5", "base": "0" * 40, "patches": [{"name": "0001-a.patch", "subject": "a"}],
         "sha256": {}}
THIRD_CASES = [
    # clean: what it cannot prove the pipeline's cache is never removed
    Case("clean-decoy-unmarked", CLEAN, USE, "carries no CACHEDIR.TAG", DECOY, decoy("git/x", "notes.txt"),
         also=("{tmp}/decoy",)),
    Case("clean-decoy-empty-unmarked", CLEAN, USE, "carries no CACHEDIR.TAG", DECOY, decoy()),
    Case("clean-decoy-other-tool-tag", CLEAN, USE, "carries no CACHEDIR.TAG", DECOY,
         decoy("git/x", marker=OTHER_TAG)),
    Case("clean-decoy-tag-without-signature", CLEAN, USE, "carries no CACHEDIR.TAG", DECOY,
         decoy("git/x", marker="# This file is a cache directory tag created by ollama-pipeline.\n")),
    Case("clean-decoy-tag-is-a-link", CLEAN, USE, "carries no CACHEDIR.TAG", DECOY, cache_marker_link),
    Case("clean-decoy-tag-is-a-folder", CLEAN, USE, "carries no CACHEDIR.TAG", DECOY,
         lambda tmp: (tmp / "decoy" / "CACHEDIR.TAG").mkdir(parents=True)),
    Case("clean-cache-is-a-link", CLEAN, USE, "is a symbolic link", (("PIPELINE_CACHE", "{tmp}/link"),),
         cache_link),
    Case("clean-cache-is-a-file", CLEAN, USE, "is not a folder", DECOY,
         lambda tmp: (tmp / "decoy").write_text("x")),
    Case("clean-cache-empty-setting", CLEAN, USE, "PIPELINE_CACHE is set but empty",
         (("PIPELINE_CACHE", ""),)),
    Case("clean-cache-blank-setting", CLEAN, USE, "PIPELINE_CACHE '  ' is not a usable path",
         (("PIPELINE_CACHE", "  "),)),
    Case("clean-cache-root", CLEAN, USE, "is a system folder", (("PIPELINE_CACHE", "/"),)),
    Case("clean-cache-usr", CLEAN, USE, "is a system folder", (("PIPELINE_CACHE", "/usr"),)),
    Case("clean-cache-etc", CLEAN, USE, "is a system folder", (("PIPELINE_CACHE", "/etc"),)),
    Case("clean-cache-var-lib", CLEAN, USE, "is a system folder", (("PIPELINE_CACHE", "/var/lib"),)),
    Case("clean-cache-tmp", CLEAN, USE, "is a system folder", (("PIPELINE_CACHE", "/tmp"),)),
    Case("clean-cache-top-level", CLEAN, USE, "is a system folder", (("PIPELINE_CACHE", "/nonesuch"),)),
    Case("clean-cache-dotdot-root", CLEAN, USE, "is a system folder",
         (("PIPELINE_CACHE", "{tmp}/../../../../../../../../.."),)),
    Case("clean-cache-project", CLEAN, USE, "is the project or holds it",
         (("PIPELINE_CACHE", str(PROJECT)),)),
    Case("clean-cache-project-parent", CLEAN, USE, "holds it" if len(PROJECT.parent.parts) > 2 else "system",
         (("PIPELINE_CACHE", str(PROJECT.parent)),)),
    Case("clean-cache-home", CLEAN, USE, "is your home folder or holds it", (("PIPELINE_CACHE", "{home}"),)),
    Case("clean-cache-dist", CLEAN, USE, "is the output folder or holds it",
         (("PIPELINE_CACHE", "{tmp}/out"), ("PIPELINE_DIST", "{tmp}/out/dist"))),
    Case("clean-dry-run-decoy", ("clean", "--cache-only", "--dry-run"), USE, "carries no CACHEDIR.TAG", DECOY,
         decoy("notes.txt")),
    # a build into a folder that is someone's
    Case("verify-cache-of-a-user", VERIFY, USE, "not the pipeline's cache folder", DECOY,
         lambda tmp: (decoy("thesis.tex")(tmp), archive_file(zst(VALID_TAR))(tmp))),
    # boolean settings take the usual words and nothing else
    *[Case(f"bool-{var.lower()}-{word}", ("plan", "cpu"), USE, f"{var} '{word}' is not a boolean",
           env=((var, word),)) for var in BOOLS for word in ("maybe", "2", "ja")],
    # scenarios: every dimension has a cap
    Case("scenario-head-dim-huge", SCEN, CFG, "'head_dim'", setup=scenario_text("", "head_count = 32\n",
                                                                              "head_count = 32\nhead_dim = "
                                                                              "99999999\n")),
    Case("scenario-head-dim-negative", SCEN, CFG, "'head_dim'",
         setup=scenario_text("", "head_count = 32\n", "head_count = 32\nhead_dim = -1\n")),
    Case("scenario-blocks-over-cap", SCEN, CFG, "'block_count' must be at most 4096",
         setup=scenario_text("", "block_count = 32", "block_count = 5000")),
    Case("scenario-kv-cache-huge", SCEN, CFG, "the KV cache would be",
         setup=huge_kv),
    Case("scenario-ctx-times-parallel", SCEN, CFG, "num_ctx x num_parallel",
         setup=scenario_text("", "num_ctx = 8192", "num_ctx = 8192\nnum_parallel = 4096")),
    Case("scenario-num-gpu-huge", SCEN, CFG, "'num_gpu'",
         setup=scenario_text("", "num_ctx = 8192", "num_ctx = 8192\nnum_gpu = 999999")),
    Case("scenario-num-gpu-negative", SCEN, CFG, "'num_gpu'",
         setup=scenario_text("", "num_ctx = 8192", "num_ctx = 8192\nnum_gpu = -2")),
    Case("scenario-gpus-together", SCEN, CFG, "counts 80 GPUs together", setup=two_gpu_kinds),
    Case("scenario-minimum-over-total", SCEN, CFG, "'minimum'",
         setup=scenario_text("", "integrated = true", "integrated = true\nminimum = \"32 GiB\"")),
    Case("scenario-tensor-elements", SCEN, CFG, "elements, more than",
         setup=scenario_text('\n[[model.tensors]]\nname = "w"\ntype = "F32"\n'
                             'shape = [16777216, 16777216, 4]\n')),
    Case("scenario-tensor-name", SCEN, CFG, "a tensor name",
         setup=scenario_text('\n[[model.tensors]]\nname = "w;x"\ntype = "F32"\nshape = [4]\n')),
    Case("scenario-env-key", SCEN, CFG, "is not an environment variable name",
         setup=scenario_text('\n[env]\n"A B" = "1"\n')),
    Case("scenario-env-value-long", SCEN, CFG, "at most 4096 characters",
         setup=scenario_text(f'\n[env]\nOLLAMA_X = "{"x" * 5000}"\n')),
    Case("scenario-env-not-strings", SCEN, CFG, "[env] must be a table of strings",
         setup=scenario_text("\n[env]\nOLLAMA_X = 1\n")),
    Case("scenario-free-over-total", SCEN, CFG, "'free'",
         setup=scenario_text("", 'free = "15.3 GiB"', 'free = "17 GiB"')),
    # patches: a work tree's state of the wrong shape, a taken --into
    Case("refresh-state-list", ("patches", "refresh", "--from", "{tmp}/w"), CFG, "damaged",
         setup=work_tree_state("[1, 2]")),
    Case("refresh-state-not-json", ("patches", "refresh", "--from", "{tmp}/w"), CFG, "damaged",
         setup=work_tree_state("{")),
    Case("refresh-state-patches-not-list", ("patches", "refresh", "--from", "{tmp}/w"), CFG, "damaged",
         setup=work_tree_state(json.dumps({**STATE, "patches": 5}))),
    Case("refresh-state-base-not-commit", ("patches", "refresh", "--from", "{tmp}/w"), CFG,
         "is not a commit id", setup=work_tree_state(json.dumps({**STATE, "base": "HEAD~3"}))),
    Case("refresh-state-name-escapes", ("patches", "refresh", "--from", "{tmp}/w"), CFG,
         "is not a patch name", setup=work_tree_state(json.dumps(
             {**STATE, "patches": [{"name": "../../etc/passwd", "subject": "x"}]}))),
    Case("refresh-state-not-utf8", ("patches", "refresh", "--from", "{tmp}/w"), CFG, "damaged",
         setup=work_tree_state(b"\xff\xfe")),
    Case("apply-into-taken", ("patches", "apply", "--ref", "v0.12.5", "--into", "{tmp}/w"), CFG,
         "exists and is not empty", setup=into_taken),
    Case("apply-into-file", ("patches", "apply", "--ref", "v0.12.5", "--into", "{tmp}/w"), CFG,
         "exists and is not empty", setup=lambda tmp: (tmp / "w").write_text("x")),
    # the manifest beside an archive, of the wrong shape
    Case("verify-beside-list", VERIFY, PKG, "not a manifest", setup=manifest_beside([1])),
    Case("verify-beside-old-version", VERIFY, PKG, "manifest version", setup=manifest_beside(
        {"manifest_version": 0})),
    Case("verify-beside-not-json", VERIFY, PKG, "not valid JSON",
         setup=lambda tmp: (archive_file(zst(VALID_TAR))(tmp), (tmp / "manifest.json").write_text("{"))),
    # a source that is not there, a patch range that admits no version
    Case("source-missing-folder", ("plan", "cpu", "--source", "{tmp}/none"), USE, "{tmp}/none"),
    Case("source-env-missing-folder", ("plan", "cpu"), USE, "OLLAMA_SOURCE",
         env=(("OLLAMA_SOURCE", "{tmp}/none"),)),
    Case("patch-applies-to-contradiction", ("plan", "cpu"), CFG, "admits no version", SERIES_ENV,
         patches({"0001-a.patch": patch_text("fix", SIMPLE_DIFF, applies_to=">=0.13,<0.12")})),
    Case("patch-applies-to-space", ("plan", "cpu"), CFG, "Applies-To", SERIES_ENV,
         patches({"0001-a.patch": patch_text("fix", SIMPLE_DIFF, applies_to=">= 0.12; touch x")})),
    # [groups]: names of targets, checked like the rest
    Case("group-injection", ("plan", "cpu"), CFG, "[groups] bad names 'cpu;touch x'",
         env=(("PIPELINE_TARGETS", "{tmp}/targets.toml"),), setup=groups('bad = ["cpu;touch x"]')),
    Case("group-newline", ("plan", "cpu"), CFG, "[groups] bad names 'cpu\\nRUN x'",
         env=(("PIPELINE_TARGETS", "{tmp}/targets.toml"),), setup=groups('bad = ["cpu\\nRUN x"]')),
    Case("group-empty", ("plan", "cpu"), CFG, "[groups] bad names no target",
         env=(("PIPELINE_TARGETS", "{tmp}/targets.toml"),), setup=groups("bad = []")),
    Case("group-not-list", ("plan", "cpu"), CFG, "[groups] bad must be a list of names",
         env=(("PIPELINE_TARGETS", "{tmp}/targets.toml"),), setup=groups('bad = "cpu"')),
    Case("group-name-of-target", ("plan", "cpu"), CFG, "may not have a target's name",
         env=(("PIPELINE_TARGETS", "{tmp}/targets.toml"),), setup=groups('gfx906 = ["cpu"]')),
    # more of targets.toml's strings: lengths, escapes, names Docker and CMake refuse
    Case("builder-name-docker", TARGETS, CFG, "would not be a Docker name",
         setup=matrix_with("[builders.debian-cpu]", '[builders."debian_-cpu"]')),
    Case("runner-dir-escapes", TARGETS, CFG, "[backends.rocm] key 'runner_dir'",
         setup=matrix_with('runner_dir = "rocm"', 'runner_dir = "../../bin"')),
    Case("runner-dir-absolute", TARGETS, CFG, "[backends.rocm] key 'runner_dir'",
         setup=matrix_with('runner_dir = "rocm"', 'runner_dir = "/usr/lib"')),
    Case("cmake-name-empty", TARGETS, CFG, "[targets.gfx906] key 'cmake_variables': key ''",
         setup=matrix_with(GFX906, GFX906 + '\ncmake_variables = { "" = "x" }')),
    Case("image-tag-too-long", TARGETS, CFG, "longer than 128 characters", setup=matrix_with(
        'base_image = "rocm/dev-ubuntu-22.04:6.3.3-complete"', f'base_image = "rocm/dev:{"x" * 129}"')),
    Case("image-name-upper", TARGETS, CFG, "[builders.vendor-rocm] key 'base_image'", setup=matrix_with(
        'base_image = "rocm/dev-ubuntu-22.04:6.3.3-complete"', 'base_image = "ROCm/Dev:1"')),
    Case("image-digest-short", TARGETS, CFG, "is not algorithm:hex", setup=matrix_with(
        'base_image = "rocm/dev-ubuntu-22.04:6.3.3-complete"', 'base_image = "rocm/dev@sha256:abc"')),
    Case("download-dest-dotdot", TARGETS, CFG, "[downloads.cmake] key 'dest'",
         setup=matrix_with('dest = "/opt/cmake"', 'dest = "/opt/../etc"')),
    Case("download-url-scheme", TARGETS, CFG, "[downloads.cmake-release] key 'url'", setup=matrix_with(
        'url = "https://github.com/Kitware', 'url = "ftp://github.com/Kitware')),
    Case("policy-unknown", TARGETS, CFG, "there is no such library policy",
         setup=matrix_with('policy = "debian-bullseye"', 'policy = "debian-potato"')),
    Case("policy-path", TARGETS, CFG, "there is no such library policy",
         setup=matrix_with('policy = "debian-bullseye"', 'policy = "../../../etc/passwd"')),
    Case("template-escapes", TARGETS, CFG, "[builders.debian-cpu] key 'template'",
         setup=matrix_with('template = "debian.Dockerfile.j2"', 'template = "../../x.j2"')),
    Case("description-line-separator", TARGETS, CFG, "control character", setup=matrix_with(
        'description = "CPU only (all x86-64 variants)"', 'description = "CPU\\u2028RUN x"')),
    Case("env-value-dollar", TARGETS, CFG, "it holds '$'",
         setup=matrix_with('env = { CC = "clang-13", CXX = "clang++-13" }', 'env = { CC = "$(id)" }')),
    Case("layout-unknown-specifier", TARGETS, CFG, "[upstream] key 'layouts'",
         setup=matrix_with("[upstream.llama_cpp]\n", '[upstream.layouts]\n"in-tree" = "soon"\n\n'
                                                      "[upstream.llama_cpp]\n")),
]

# gh answering `release view` in a shape no release has: publish stops with the one error line after its
# own progress lines (the log of the steps it ran).
GH_ANSWERS = {
    "list": "[1, 2]", "string": '"a release"', "not-json": "{tagName: v1.0", "no-tag": '{"isDraft": true}',
    "assets-of-names": '{"tagName": "v1.0", "isDraft": true, "assets": ["a.tar.gz"]}',
    "size-word": '{"tagName": "v1.0", "isDraft": true, "assets": [{"name": "a", "size": "big"}]}',
    "assets-table": '{"tagName": "v1.0", "isDraft": true, "assets": {"a": 1}}',
}
GH_CASES = [Case(f"gh-view-{what}", GH, PUB, "`gh release view v1.0` printed what is not a release",
                 setup=gh_printing(text), tool="publish") for what, text in GH_ANSWERS.items()]


@pytest.mark.parametrize("case", GH_CASES, ids=[c.id for c in GH_CASES])
def test_gh_answering_in_another_shape_is_one_error_line(case, tmp_path, capsys, monkeypatch):
    before = project_snapshot()
    tmp = tmp_path / "case"
    tmp.mkdir()
    err = run_case(case, tmp, capsys, monkeypatch)
    lines = err.splitlines()
    assert [line for line in lines if line.startswith("error: ")] == [lines[-1]], err
    assert case.culprit in lines[-1] and "Traceback" not in err
    assert all(line.startswith("[publish ") for line in lines[:-1]), err
    assert project_snapshot() == before


# --- every string of targets.toml, with a newline, `;`, a quote or a space (tests/unit/injections.py) ----


def injected(sf: injections.StringField, name: str) -> Case:
    doc = loader.read(TARGETS_FILE)
    value = injections.inject(doc, sf, injections.INJECTIONS[name])

    def setup(tmp: Path) -> None:
        (tmp / "targets.toml").write_text(injections.dump(doc))
    return Case(f"inject-{name}-{sf.id}", ("plan", "cpu", "--targets-file", "{tmp}/targets.toml"), CFG,
                f"{{tmp}}/targets.toml: {sf.table} key '{sf.name}'", setup=setup, also=(repr(value),))


INJECTION_CASES = [injected(sf, name) for sf, name in injections.cases()]

CASES = (MATRIX_CASES + CLI_CASES + ENV_CASES + PATCH_CASES + SCENARIO_CASES + ARCHIVE_CASES + SWEEP_CASES
         + THIRD_CASES + INJECTION_CASES)


def run_case(case: Case, tmp: Path, capsys, monkeypatch) -> str:
    monkeypatch.setenv("PIPELINE_CACHE", str(tmp / "cache"))
    monkeypatch.setenv("PIPELINE_DIST", str(tmp / "dist"))
    for var, value in case.env:
        monkeypatch.setenv(var, value.replace("{tmp}", str(tmp)).replace("{home}", os.environ["HOME"]))
    if case.setup:
        case.setup(tmp)
    argv = [a.replace("{tmp}", str(tmp)) for a in case.argv]
    capsys.readouterr()
    code = main(["publish", *argv] if case.tool == "publish" else argv)
    err = capsys.readouterr().err
    assert code == case.code, f"exit code {code}, wanted {case.code}: {err}"
    return err


def test_the_suite_has_at_least_80_cases():
    assert len(CASES) >= 80
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_one_line(case, tmp_path, capsys, monkeypatch):
    before = project_snapshot()
    tmp = tmp_path / "case"
    tmp.mkdir()

    destructive = case.id.startswith("clean-")
    if destructive and case.setup:  # the decoys must survive: nothing in the case's folder changes either
        case.setup(tmp)
        case = dataclasses.replace(case, setup=None)
    decoys = tree_snapshot(tmp) if destructive else None
    err = run_case(case, tmp, capsys, monkeypatch)

    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    if destructive:
        assert tree_snapshot(tmp) == decoys, "clean changed its decoy"
    for named in (case.culprit, *case.also):
        named = named.replace("{tmp}", str(tmp))
        assert named in lines[0], f"{named!r} not named in: {lines[0]}"
    assert "Traceback" not in err
    assert project_snapshot() == before, "a file outside the case's temporary folder changed"
    assert not (tmp / "x").exists()  # no injected command ran ('touch x')
    # A refusal leaves nothing of a run behind, not even a staging or scratch folder of its own
    assert [p for p in tmp.rglob("*") if owner.owned_form(p.name)] == []


@pytest.mark.parametrize("case", [c for c in CASES if c.id in ("target-name-escapes", "archive-dotdot-member",
                                                               "source-dash", "epoch-word")],
                         ids=lambda c: c.id)
def test_traceback_flag_shows_the_traceback(case, tmp_path, capsys, monkeypatch):
    argv = (*case.argv, "--traceback") if case.argv[0] != "patches" else case.argv
    case = dataclasses.replace(case, argv=argv)
    tmp = tmp_path / "case"
    tmp.mkdir()
    err = run_case(case, tmp, capsys, monkeypatch)
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: ")


# --- packages made by the pipeline, then changed ----------------------------------------------------


@pytest.fixture
def built(matrix, settings, tmp_path, log):
    """A real package of the cpu target (fake build) in dist/cpu/, with its manifest beside."""
    root = tmp_path / "build"
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "ollama").mkdir(parents=True)
    (root / "bin" / "ollama").write_bytes(b"\x7fELF ollama\n")
    (root / "bin" / "ollama").chmod(0o755)
    (root / "lib" / "ollama" / "libx.so").write_bytes(b"\x7fELF library\n" * 100)
    the_plan = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    packaged, _ = package_stage(the_plan, root, tmp_path / "dist", log)
    return packaged.archive


def rewrite(archive: Path, change: Callable[[str, bytes], bytes | None]) -> None:
    """Re-pack `archive` with each regular member's bytes passed through `change`."""
    members = []
    with tarfile.open(fileobj=io.BytesIO(zstandard.ZstdDecompressor().decompressobj().decompress(
            archive.read_bytes()))) as tar:
        for m in tar.getmembers():
            data = tar.extractfile(m).read() if m.isfile() else None
            if data is not None:
                data = change(m.name, data)
            members.append((m, data))
    archive.write_bytes(zst(tar_of(*members)))


def test_verify_names_a_file_changed_after_packaging(built, tmp_path, capsys):
    rewrite(built, lambda name, data: data.replace(b"library", b"LIBRARY") if name.endswith("libx.so")
            else data)
    (built.parent / "manifest.json").unlink()  # the manifest inside is all that is left to check against
    assert main(["verify", str(built)]) == VFY
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lib/ollama/libx.so: differs from the manifest's sha256" in err


def test_verify_refuses_an_archive_that_differs_from_the_manifest_beside(built, capsys):
    rewrite(built, lambda name, data: data)  # same files, other bytes
    assert main(["verify", str(built)]) == VFY
    err = capsys.readouterr().err
    assert err.startswith(f"error: {built.name}: differs from the sha256 its manifest records")


def test_verify_bounds_decompression_by_the_manifest_sizes(built, capsys):
    manifest = json.loads((built.parent / "manifest.json").read_text())
    bomb = tar_of(member("lib/ollama/zeros", data=b"\0" * (40 << 20)))
    built.write_bytes(zst(bomb))
    manifest["archive"]["size"] = built.stat().st_size
    manifest["archive"]["sha256"] = __import__("hashlib").sha256(built.read_bytes()).hexdigest()
    (built.parent / "manifest.json").write_text(json.dumps(manifest))
    assert main(["verify", str(built)]) == PKG
    assert "decompresses to more than" in capsys.readouterr().err


def test_release_of_a_damaged_manifest_is_one_line(built, capsys):
    (built.parent / "manifest.json").write_text("{nope")
    assert main(["release", "cpu", "--dist", str(built.parent.parent)]) == PKG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "manifest.json" in err


def test_release_dry_run_leaves_the_last_release_alone(built, capsys):
    dist = built.parent.parent
    assert main(["release", "cpu", "--dist", str(dist)]) == 0
    before = {p.name: p.read_bytes() for p in (dist / "release").iterdir()}
    (dist / "release" / "marker").write_text("published")
    assert main(["release", "cpu", "--dist", str(dist), "--dry-run"]) == 0
    after = {p.name: p.read_bytes() for p in (dist / "release").iterdir()}
    assert after == {**before, "marker": b"published"}
    assert (dist / "release.dry-run" / built.name).is_file()


def test_every_exit_code_is_listed_in_the_readme():
    readme = (PROJECT / "README.md").read_text()
    table = readme.split("<!-- exit-codes -->")[1]
    rows = [line for line in table.splitlines() if line.startswith("| ") and line[2:3].isdigit()]
    assert rows == [f"| {code} | {text} |" for code, text in errors.exit_codes().items()]


def test_exit_codes_are_unique_per_error_class():
    seen: dict[int, type] = {}
    todo = [errors.PipelineError]
    while todo:
        cls = todo.pop()
        assert cls.exit_code not in seen, f"{cls.__name__} and {seen[cls.exit_code].__name__} share a code"
        seen[cls.exit_code] = cls
        todo.extend(cls.__subclasses__())


# --- verify reads what the archive holds, not what it claims --------------------------------------


def resign(archive: Path, change_manifest: Callable[[dict], None]) -> None:
    """Re-pack `archive` with its inner manifest changed by `change_manifest`, and write the manifest
    beside it to match (the same change, the new archive's size and sha256): only the change differs."""
    inner = "lib/ollama/manifest.json"
    beside = archive.parent / "manifest.json"

    def edit(name: str, data: bytes) -> bytes:
        if name != inner:
            return data
        doc = json.loads(data)
        change_manifest(doc)
        return json.dumps(doc).encode()
    rewrite(archive, edit)
    doc = json.loads(beside.read_text())
    change_manifest(doc)
    doc["archive"]["size"] = archive.stat().st_size
    doc["archive"]["sha256"] = hashlib.sha256(archive.read_bytes()).hexdigest()
    beside.write_text(json.dumps(doc))


def drop_sha256(doc: dict) -> None:
    for f in doc["files"]:
        if f["path"].endswith("libx.so"):
            del f["sha256"]


def test_verify_refuses_a_manifest_entry_without_a_checksum(built, capsys):
    """A file listed without its sha256 could be changed unseen: the manifest is refused, in one line,
    before anything is unpacked into a container."""
    resign(built, drop_sha256)
    rewrite(built, lambda name, data: data.replace(b"library", b"LIBRARY") if name.endswith("libx.so")
            else data)
    doc = json.loads((built.parent / "manifest.json").read_text())
    doc["archive"]["size"] = built.stat().st_size
    doc["archive"]["sha256"] = hashlib.sha256(built.read_bytes()).hexdigest()
    (built.parent / "manifest.json").write_text(json.dumps(doc))
    assert main(["verify", str(built)]) == PKG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'lib/ollama/libx.so': no sha256" in err, err


def sparse_tar(tmp: Path, size: int) -> bytes:
    """A tar (GNU tar's own, --sparse, PAX) of one file of `size` bytes that is all hole: a few KB that
    unpack to `size` bytes."""
    (tmp / "src" / "lib" / "ollama").mkdir(parents=True)
    with open(tmp / "src" / "lib" / "ollama" / "hole", "wb") as f:
        f.truncate(size)
    subprocess.run(["tar", "--sparse", "--format=pax", "-C", str(tmp / "src"), "-cf", str(tmp / "s.tar"),
                    "lib"], check=True)
    data = (tmp / "s.tar").read_bytes()
    shutil.rmtree(tmp / "src")
    (tmp / "s.tar").unlink()
    return data


def test_verify_counts_a_sparse_member_at_its_real_size(tmp_path, capsys):
    """GNU tar stores a 4 GiB hole in a few KB: the decompressed stream stays small, the bound counts the
    bytes the member unpacks to."""
    tar = sparse_tar(tmp_path, 4 << 30)
    assert len(tar) < 64 << 10
    (tmp_path / NAME).write_bytes(zst(tar))
    assert main(["verify", str(tmp_path / NAME)]) == PKG
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{4 << 30} bytes unpacked (sparse members counted in full)" in err, err
    scratch = tmp_path / "cache" / "scratch"
    assert not scratch.exists() or not any(scratch.iterdir())


def test_a_multi_frame_zstd_archive_unpacks_as_the_one_frame_one(built, tmp_path):
    """zstd may write several frames (`zstd` concatenating files, a multi-threaded writer) and skippable
    frames: every file the format allows unpacks, byte for byte the same as the one-frame archive."""
    from pipeline.infra import archive as archive_mod

    plain = zstandard.ZstdDecompressor().decompressobj().decompress(built.read_bytes())
    cut = len(plain) // 3
    skippable = b"\x50\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"hello"
    many = tmp_path / "many" / built.name
    many.parent.mkdir()
    many.write_bytes(zst(plain[:cut]) + skippable + zst(plain[cut:2 * cut]) + zst(plain[2 * cut:]))
    roots = {}
    for label, path in (("one", built), ("many", many)):
        roots[label] = tmp_path / label / "root"
        roots[label].parent.mkdir(exist_ok=True)
        inside = archive_mod.unpack(path, roots[label], tmp_path / label)
        files = [stages.manifest.FileRecord(**f) for f in inside["files"]]
        assert archive_mod.check_files(roots[label], files, path.name) == []

    def tree(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    assert tree(roots["one"]) == tree(roots["many"]) and tree(roots["one"])
    # What is not a frame after the last one is still refused
    many.write_bytes(many.read_bytes() + b"junk")
    (tmp_path / "junk").mkdir()
    with pytest.raises(errors.PackageError, match="data after the end of the zstd stream"):
        archive_mod.unpack(many, tmp_path / "junk" / "root", tmp_path / "junk")


def test_free_text_takes_quotes_semicolons_and_spaces_and_stays_data(tmp_path):
    """A description and a CMake cache value may hold `;`, quotes and spaces (the injections the kinds of
    every other string refuse): the Dockerfile keeps them in its comment, cmake gets the value as one
    argument; no new instruction or argument comes of them."""
    from pipeline.config import targets
    from pipeline.config.settings import Settings
    from pipeline.stages import builder as dockerfile

    hostile = 'x"; RUN touch x \\\n RUN touch y; \' $(id)'
    doc = loader.read(TARGETS_FILE)
    doc["targets"]["cpu"]["description"] = hostile.replace("\n", " ")
    doc["targets"]["cpu"]["cmake_variables"] = {"SOME_FLAGS": hostile.replace("\n", " ")}
    doc["builders"]["debian-cpu"]["description"] = hostile.replace("\n", " ")
    (tmp_path / "targets.toml").write_text(injections.dump(doc))
    matrix = targets.load(tmp_path / "targets.toml")
    settings = Settings(targets_file=tmp_path / "targets.toml", patches_dir=tmp_path / "none",
                        templates_dir=PROJECT / "docker", dist=tmp_path / "dist", cache=tmp_path / "cache")
    plan = stages.plan_for(matrix, matrix.targets["cpu"], settings)
    base = stages.plan_for(targets.load(TARGETS_FILE), targets.load(TARGETS_FILE).targets["cpu"], settings)

    def instructions(text: str) -> list[str]:
        return [line.split()[0] for line in text.splitlines()
                if line.strip() and not line.startswith((" ", "#"))]
    rendered = dockerfile.key(plan, settings)
    assert instructions(rendered) == instructions(dockerfile.key(base, settings))
    assert rendered.splitlines()[0].startswith("# x\"; RUN touch x")
    (configure,) = [s for s in plan.steps if s.label.startswith("configure")]
    (base_configure,) = [s for s in base.steps if s.label.startswith("configure")]
    assert len(configure.argv) == len(base_configure.argv) + 1
    assert f"-DSOME_FLAGS={hostile.replace(chr(10), ' ')}" in configure.argv


# --- records in the cache of another shape: the work is done again, never a bug report -------------

RECORD_SHAPES = [[], "x", 1, None, {}, {"hash": 5}, {"path": ["a"]}, {"tag": {"a": 1}, "id": None},
                 {"files": "all"}, {"archive": "x"}, {"manifest_version": 1, "files": [1]}]


@pytest.mark.parametrize("stage", [s for s in stages.STAGES if s.result is not None], ids=lambda s: s.name)
def test_a_stage_record_of_another_shape_means_doing_the_work_again(stage, tmp_path, log):
    """Every stage's record, written as JSON of shapes it never has (under the right hash), reads as no
    record: the stage runs again, the log says why, nothing raises."""
    from pipeline import orchestrate

    folder = tmp_path / stage.name
    folder.mkdir()
    needs = dict.fromkeys(stage.needs)
    fields = [f.name for f in dataclasses.fields(stage.result)]
    shapes = RECORD_SHAPES + [dict.fromkeys(fields, bad) for bad in ([], {}, 1, None, True, [{"a": 1}])]
    for shape in shapes:
        doc = {**shape, "hash": "h"} if isinstance(shape, dict) and "hash" not in shape else shape
        stages.record_file(stage, folder).write_text(json.dumps(doc))
        assert orchestrate.read_record(stage, folder, "h", needs, log) is None, doc


@pytest.mark.parametrize("text", ["[]", '"x"', "5", '{"stages": []}', '{"stages": {"build": "slow"}}',
                                  '{"steps": {"a": 1}}', '{"steps": [["a"]]}', '{"steps": [[1, 2, 3]]}',
                                  '{"stages": null, "steps": null}', "\xff", "{"])
def test_a_timings_file_of_another_shape_means_no_estimate(text, tmp_path):
    from pipeline.infra.progress import Progress

    timings = tmp_path / "build.timings.json"
    timings.write_text(text, errors="surrogateescape") if text != "\xff" else timings.write_bytes(b"\xff")
    p = Progress("cpu")
    p.load(timings)
    assert p.last_stages == {} and p.last_steps == []
