"""Keep only a target's GPU code in fat HIP libraries (clang offload bundles in ELF files).

A HIP shared library carries its device code in `.hip_fatbin`: one clang offload bundle per
translation unit, each listing a host entry (empty) and one code object per arch it was built for.
Debian's librocblas.so.4.4 is 997 MB, about 1018 MB of it code objects for ten archs, so a package that
serves gfx906 carries ninety percent dead weight. This module rewrites those bundles so that only the
code objects of the archs the runtime asks for stay.

How the HIP runtime finds the code (ROCm clr 6.4.3, the version Debian ships; hipamd/src):

* The compiler emits, per bundle, a `__CudaFatBinaryWrapper` {magic "HIPF", version 1, binary, dummy}
  in `.hipFatBinSegment`; `binary` is an absolute pointer into `.hip_fatbin`, fixed up at load time by
  an R_X86_64_RELATIVE relocation (measured on librocblas.so.4.4: 66 wrappers, 66 bundles).
  `__hipRegisterFatBinary` (hip_platform.cpp) passes `fbwrapper->binary` on, and
  `StatCO::digestFatBinary` (hip_code_object.cpp) builds a `FatBinaryInfo` from that address. The
  bundles are therefore found by address: they must not move. Everything after `.hip_fatbin`
  (.eh_frame_hdr, .gcc_except_table, the RW segment) is reached from .text by RIP-relative addressing,
  so the file cannot be shortened without relinking.
* `FatBinaryInfo::ExtractFatBinaryUsingCOMGR` (hip_fatbin.cpp) hands comgr only the first 4096 bytes of
  an uncompressed bundle (`set_data(data_object, 4096, image_)`, "There is no way to find size of
  offload bundle") and asks `lookup_code_object` for each device ISA; the code object is then used at
  `image_ + offset` from the header. The runtime unbundler (HIP_USE_RUNTIME_UNBUNDLER,
  `CodeObject::extractCodeObjectFromFatBinary`) and `CodeObject::containGenericTarget` walk the header's
  entry list and read only the entries it names; `CodeObject::getFatbinSize` takes the last listed
  entry's offset + size as the bundle's size.
* A compressed bundle ("CCOB", clang/lib/Driver/OffloadBundler.cpp `CompressedOffloadBundle`) is read
  through its header's total size (`ClangOffloadBundleCompressedHeader::totalSize`) and unbundled by
  comgr after decompression.

Design chosen on that evidence: rewrite each bundle *in place*. An uncompressed bundle gets a new
header listing only the kept entries, at their original offsets, and every other byte of the bundle's
span (dropped code objects, the old header's tail) becomes zero. Kept code objects are not touched
(byte-identical), the bundle starts where the wrapper points, and a device whose arch was dropped gets
the runtime's ordinary "no code object for this GPU" (hipErrorNoBinaryForGpu, with the bundled entries
listed) instead of a zero-filled "code object". Blanking alone (zeroing the bytes but leaving the old
header) was rejected for that reason: the header would still advertise entries that are now garbage.
A compressed bundle is decompressed, rebuilt with the kept entries, recompressed with its own method
and format version, written at the same start, and the rest of its old span is zeroed.

Consequences: the file keeps its size and layout (same virtual addresses, same file offsets, so the
debugger's `file://...#offset=` URIs stay right), and the removed code becomes runs of zeros, which the
zstd-compressed package stores almost for free. On disk after unpacking the zeros still count, unless
they are turned into holes (`fallocate --dig-holes FILE`, util-linux; every dropped code object starts
on a 4096-byte boundary). Shrinking the file itself would need a re-layout of the load segments.

Which entries stay: host entries (`host-...`, required by the bundle format), the code objects whose
processor is one of `keep_archs` (feature suffixes such as `:sramecc+:xnack-` are matched as the
runtime does: an entry without the feature fits any setting), the generic targets those archs run
(`gfx9-generic` for gfx906, `gfx11-generic` for gfx1100, ...), and target-independent SPIR-V entries
(`spirv64-amd-amdhsa--amdgcnspirv`, compiled by comgr at run time).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import shutil
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.elffile import ELFFile

from pipeline.errors import PackageError
from pipeline.records import record

MAGIC = b"__CLANG_OFFLOAD_BUNDLE__"
CCOB_MAGIC = b"CCOB"
#: Sections that hold offload bundles in linked HIP objects.
FATBIN_SECTIONS = (".hip_fatbin",)
#: Code objects start on this boundary in bundles clang writes for HIP (-bundle-align).
BUNDLE_ALIGN = 4096

# llvm::compression::Format
_ZLIB, _ZSTD = 0, 1

# Generic targets and the processors that run them (clr hip_fatbin.cpp TargetGenericMap,
# LLVM AMDGPUUsage "Generic Processors").
GENERIC_TARGETS: dict[str, frozenset[str]] = {
    "gfx9-generic": frozenset({"gfx900", "gfx902", "gfx904", "gfx906", "gfx909", "gfx90c"}),
    "gfx9-4-generic": frozenset({"gfx942", "gfx950"}),
    "gfx10-1-generic": frozenset({"gfx1010", "gfx1011", "gfx1012", "gfx1013"}),
    "gfx10-3-generic": frozenset({f"gfx103{i}" for i in range(7)}),
    "gfx11-generic": frozenset({"gfx1100", "gfx1101", "gfx1102", "gfx1103",
                                "gfx1150", "gfx1151", "gfx1152", "gfx1153"}),
    "gfx12-generic": frozenset({"gfx1200", "gfx1201"}),
}


# ------------------------------------------------------------------------------------------------
# Entry IDs


@record(positional=True)
class EntryId:
    """A bundle entry ID, `<kind>-<arch>-<vendor>-<os>-<env>[-<target id>]`."""

    raw: str
    kind: str
    triple: str
    target_id: str  # "gfx906:sramecc+:xnack-", or "" (host, spirv)

    @classmethod
    def parse(cls, raw: str) -> EntryId:
        parts = raw.split("-", 5)
        if len(parts) < 5:
            return cls(raw, parts[0], "-".join(parts[1:]), "")
        if len(parts) == 5:
            # old style "hip-amdgcn-amd-amdhsa-gfx906": no environment field
            if parts[4].startswith("gfx"):
                return cls(raw, parts[0], "-".join(parts[1:4]) + "-", parts[4])
            return cls(raw, parts[0], "-".join(parts[1:5]), "")
        return cls(raw, parts[0], "-".join(parts[1:5]), parts[5])

    @property
    def is_host(self) -> bool:
        return self.kind == "host"

    @property
    def is_spirv(self) -> bool:
        return self.triple.startswith("spirv")

    @property
    def processor(self) -> str:
        return self.target_id.split(":", 1)[0]

    @property
    def features(self) -> dict[str, str]:
        """{"xnack": "-", "sramecc": "+"} from the target ID's suffixes."""
        out = {}
        for feat in self.target_id.split(":")[1:]:
            if feat and feat[-1] in "+-":
                out[feat[:-1]] = feat[-1]
        return out


def _split_arch(arch: str) -> tuple[str, dict[str, str]]:
    head, *feats = arch.split(":")
    return head, {f[:-1]: f[-1] for f in feats if f and f[-1] in "+-"}


def wanted(entry: str | EntryId, keep_archs: Iterable[str], *, keep_generic: bool = True,
           keep_spirv: bool = True) -> bool:
    """Whether a bundle entry stays when a package serves `keep_archs`."""
    eid = entry if isinstance(entry, EntryId) else EntryId.parse(entry)
    if eid.is_host:
        return True
    if eid.is_spirv and not eid.processor.startswith("gfx"):
        return keep_spirv
    proc, feats = eid.processor, eid.features
    for arch in keep_archs:
        want_proc, want_feats = _split_arch(arch)
        fits = proc == want_proc or (keep_generic and want_proc in GENERIC_TARGETS.get(proc, ()))
        # as the runtime does: an entry's unspecified feature fits any device setting
        if fits and all(feats.get(k, v) == v for k, v in want_feats.items()):
            return True
    return False


# ------------------------------------------------------------------------------------------------
# Bundle parsing


@record(positional=True)
class Entry:
    """One code object in a bundle; `offset` is relative to the (decompressed) bundle start."""

    id: str
    offset: int
    size: int

    @property
    def target(self) -> EntryId:
        return EntryId.parse(self.id)


@record(positional=True)
class Bundle:
    """One offload bundle in a file. `offset` is its file offset, `span` the bytes it owns there."""

    section: str
    offset: int
    span: int
    compressed: bool
    entries: tuple[Entry, ...]
    header_size: int  # uncompressed: bytes of the header; compressed: of the CCOB header
    ccob_version: int = 0
    ccob_method: int = 0


@record(positional=True)
class CodeObject:
    """A non-empty bundle entry, as `list_code_objects` reports it."""

    section: str
    bundle_offset: int
    id: str
    size: int
    sha256: str
    compressed: bool

    @property
    def processor(self) -> str:
        return EntryId.parse(self.id).processor


def parse_header(buf: bytes | mmap.mmap, start: int = 0) -> tuple[list[Entry], int]:
    """Entries and header size of the uncompressed bundle at `buf[start:]`."""
    if bytes(buf[start:start + len(MAGIC)]) != MAGIC:
        raise PackageError(f"no offload bundle at offset {start}")
    pos = start + len(MAGIC)
    (count,) = struct.unpack_from("<Q", buf, pos)
    pos += 8
    if count > 4096:
        raise PackageError(f"offload bundle at offset {start} claims {count} entries")
    entries = []
    for _ in range(count):
        offset, size, id_len = struct.unpack_from("<QQQ", buf, pos)
        pos += 24
        if id_len > 1024:
            raise PackageError(f"offload bundle at offset {start}: entry ID of {id_len} bytes")
        eid = bytes(buf[pos:pos + id_len]).decode("ascii", "replace")
        pos += id_len
        entries.append(Entry(eid, offset, size))
    return entries, pos - start


def build_header(entries: Sequence[Entry]) -> bytes:
    out = [MAGIC, struct.pack("<Q", len(entries))]
    for e in entries:
        raw = e.id.encode("ascii")
        out.append(struct.pack("<QQQ", e.offset, e.size, len(raw)))
        out.append(raw)
    return b"".join(out)


def _ccob_header(buf, start: int) -> tuple[int, int, int, int, int, int]:
    """(version, method, header size, total size or 0, uncompressed size, hash) of a CCOB bundle."""
    version, method = struct.unpack_from("<HH", buf, start + 4)
    if version == 1:
        usize, digest = struct.unpack_from("<IQ", buf, start + 8)
        return version, method, 20, 0, usize, digest
    if version == 2:
        total, usize, digest = struct.unpack_from("<IIQ", buf, start + 8)
        return version, method, 24, total, usize, digest
    if version == 3:
        total, usize, digest = struct.unpack_from("<QQQ", buf, start + 8)
        return version, method, 32, total, usize, digest
    raise PackageError(f"compressed offload bundle at offset {start}: unknown format version {version}")


def _decompress(method: int, data: bytes, usize: int) -> tuple[bytes, int]:
    """Decompressed bytes and how many input bytes the stream used."""
    if method == _ZSTD:
        import zstandard

        dobj = zstandard.ZstdDecompressor().decompressobj()
        out = dobj.decompress(data)
        return out, len(data) - len(dobj.unused_data)
    if method == _ZLIB:
        dobj = zlib.decompressobj()
        out = dobj.decompress(data, usize + 1)
        return out, len(data) - len(dobj.unused_data)
    raise PackageError(f"compressed offload bundle: unknown compression method {method}")


def _compress(method: int, data: bytes) -> bytes:
    if method == _ZSTD:
        import zstandard

        params = zstandard.ZstdCompressionParameters.from_level(
            19, source_size=len(data), enable_ldm=True, threads=0)
        return zstandard.ZstdCompressor(compression_params=params).compress(data)
    return zlib.compress(data, 9)


def md5_low(data: bytes) -> int:
    """The hash CCOB headers carry: llvm::MD5Result::low(), the digest's first 8 bytes, little-endian."""
    return int.from_bytes(hashlib.md5(data).digest()[:8], "little")


def build_ccob(version: int, method: int, payload: bytes) -> bytes:
    comp = _compress(method, payload)
    digest = md5_low(payload)
    if version == 3:
        total = 32 + len(comp)
        head = CCOB_MAGIC + struct.pack("<HHQQQ", version, method, total, len(payload), digest)
    else:  # 2 (and 1, which has no size field and is written as 2)
        total = 24 + len(comp)
        if total > 0xFFFFFFFF or len(payload) > 0xFFFFFFFF:
            raise PackageError("compressed offload bundle too large for format version 2")
        head = CCOB_MAGIC + struct.pack("<HHIIQ", 2, method, total, len(payload), digest)
    return head + comp


def _decompressed_payload(buf, b: Bundle) -> bytes:
    _version, method, hsize, _total, usize, _ = _ccob_header(buf, b.offset)
    data = bytes(buf[b.offset + hsize:b.offset + b.span])
    out, _used = _decompress(method, data, usize)
    if len(out) != usize:
        raise PackageError(f"compressed offload bundle at offset {b.offset}: "
                           f"{len(out)} bytes decompressed, header says {usize}")
    return out


def _fatbin_sections(path: Path) -> list[tuple[str, int, int]]:
    with open(path, "rb") as fh:
        try:
            elf = ELFFile(fh)
        except Exception:
            return []
        return [(s.name, s["sh_offset"], s["sh_size"]) for s in elf.iter_sections()
                if s.name in FATBIN_SECTIONS and s["sh_type"] != "SHT_NOBITS" and s["sh_size"]]


def _skip_zeros(buf, pos: int, end: int, chunk: int = 1 << 16) -> int:
    while pos < end:
        block = buf[pos:min(pos + chunk, end)]
        rest = block.lstrip(b"\0")
        if rest:
            return pos + len(block) - len(rest)
        pos += len(block)
    return end


def _scan(buf, name: str, start: int, size: int) -> list[Bundle]:
    """The bundles of one section: each starts after the zero padding that ends the one before."""
    end = start + size
    bundles: list[Bundle] = []
    pos = start
    while (pos := _skip_zeros(buf, pos, end)) < end:
        head = bytes(buf[pos:pos + len(MAGIC)])
        if head != MAGIC and not head.startswith(CCOB_MAGIC):
            raise PackageError(f"{name}: unrecognised data at file offset {pos} "
                               f"(neither {MAGIC.decode()} nor {CCOB_MAGIC.decode()})")
        if head == MAGIC:
            entries, hsize = parse_header(buf, pos)
            span = max([e.offset + e.size for e in entries] + [hsize])
            if pos + span > end:
                raise PackageError(f"{name}: offload bundle at offset {pos} runs past the section end")
            bundles.append(Bundle(name, pos, span, False, tuple(entries), hsize))
        else:
            version, method, hsize, total, usize, _ = _ccob_header(buf, pos)
            if total == 0:  # version 1: the stream's own end
                _, used = _decompress(method, bytes(buf[pos + hsize:end]), usize)
                total = hsize + used
            if pos + total > end:
                raise PackageError(f"{name}: compressed bundle at offset {pos} runs past the section end")
            b = Bundle(name, pos, total, True, (), hsize, version, method)
            entries, _ = parse_header(_decompressed_payload(buf, b))
            bundles.append(Bundle(name, pos, total, True, tuple(entries), hsize, version, method))
        pos += bundles[-1].span
    return bundles


def find_bundles(path: str | os.PathLike) -> list[Bundle]:
    """Every offload bundle in the fat-binary sections of an ELF file (none for other files)."""
    path = Path(path)
    sections = _fatbin_sections(path)
    if not sections:
        return []
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        out: list[Bundle] = []
        for name, off, size in sections:
            out.extend(_scan(buf, name, off, size))
        return out


def has_offload_code(path: str | os.PathLike) -> bool:
    return bool(_fatbin_sections(Path(path)))


def _entry_bytes(buf, b: Bundle, payload: bytes | None, e: Entry) -> bytes:
    if b.compressed:
        assert payload is not None
        return payload[e.offset:e.offset + e.size]
    return bytes(buf[b.offset + e.offset:b.offset + e.offset + e.size])


def list_code_objects(path: str | os.PathLike) -> list[CodeObject]:
    """The non-empty code objects of every bundle, with their sizes and sha256."""
    path = Path(path)
    bundles = find_bundles(path)
    if not bundles:
        return []
    out = []
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        for b in bundles:
            payload = _decompressed_payload(buf, b) if b.compressed else None
            for e in b.entries:
                if e.size == 0:
                    continue
                digest = hashlib.sha256(_entry_bytes(buf, b, payload, e)).hexdigest()
                out.append(CodeObject(b.section, b.offset, e.id, e.size, digest, b.compressed))
    return out


# ------------------------------------------------------------------------------------------------
# Stripping


@record(positional=True)
class BundleReport:
    offset: int
    compressed: bool
    kept: tuple[str, ...]
    dropped: tuple[str, ...]
    bytes_before: int  # bytes of the bundle with content: its span
    bytes_after: int  # header + kept code objects (uncompressed) or the new compressed size

    def to_dict(self) -> dict:
        return {"offset": self.offset, "compressed": self.compressed, "kept": list(self.kept),
                "dropped": list(self.dropped), "bytes_before": self.bytes_before,
                "bytes_after": self.bytes_after}


@dataclass
class StripReport:
    """What `strip_file` did to one file: for the manifest and the bench."""

    path: str
    keep_archs: tuple[str, ...]
    file_size: int  # unchanged by stripping
    bundles: list[BundleReport] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(b.dropped for b in self.bundles)

    @property
    def compressed(self) -> bool:
        return any(b.compressed for b in self.bundles)

    @property
    def code_bytes_before(self) -> int:
        return sum(b.bytes_before for b in self.bundles)

    @property
    def code_bytes_after(self) -> int:
        return sum(b.bytes_after for b in self.bundles)

    @property
    def zeroed_bytes(self) -> int:
        return self.code_bytes_before - self.code_bytes_after

    def entries(self, which: str) -> dict[str, int]:
        """How many bundles kept (`which="kept"`) or dropped each entry ID."""
        out: dict[str, int] = {}
        for b in self.bundles:
            for eid in getattr(b, which):
                out[eid] = out.get(eid, 0) + 1
        return dict(sorted(out.items()))

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "keep_archs": list(self.keep_archs),
            "file_size": self.file_size,
            "bundles": len(self.bundles),
            "compressed": self.compressed,
            "kept": self.entries("kept"),
            "dropped": self.entries("dropped"),
            "code_bytes_before": self.code_bytes_before,
            "code_bytes_after": self.code_bytes_after,
            "zeroed_bytes": self.zeroed_bytes,
        }


def _zero(buf, start: int, end: int, chunk: int = 1 << 22) -> None:
    zeros = bytes(min(chunk, max(end - start, 0)))
    while start < end:
        n = min(chunk, end - start)
        buf[start:start + n] = zeros[:n]
        start += n


def _plan(b: Bundle, keep_archs: Sequence[str], keep_generic: bool, keep_spirv: bool,
          where: str) -> tuple[list[Entry], list[Entry]]:
    kept = [e for e in b.entries if wanted(e.id, keep_archs, keep_generic=keep_generic,
                                           keep_spirv=keep_spirv)]
    dropped = [e for e in b.entries if e not in kept]
    had_code = any(not e.target.is_host and e.size for e in b.entries)
    if dropped and had_code and not any(not e.target.is_host and e.size for e in kept):
        archs = ", ".join(sorted({e.target.target_id or e.id for e in b.entries if not e.target.is_host}))
        raise PackageError(
            f"{where}: the offload bundle at offset {b.offset} has no code object for "
            f"{', '.join(keep_archs)} (it holds {archs}); stripping would leave it empty. "
            "Check the target's runtime.archs, or turn stripping off for this target.")
    return kept, dropped


def _rewrite_plain(buf, b: Bundle, kept: list[Entry]) -> int:
    header = build_header(kept)
    assert len(header) <= b.header_size
    buf[b.offset:b.offset + len(header)] = header
    cursor = b.offset + len(header)
    for e in sorted(kept, key=lambda e: e.offset):
        if e.size == 0:
            continue
        _zero(buf, cursor, b.offset + e.offset)
        cursor = max(cursor, b.offset + e.offset + e.size)
    _zero(buf, cursor, b.offset + b.span)
    return len(header) + sum(e.size for e in kept)


def _repack(payload: bytes, kept: list[Entry]) -> bytes:
    """An uncompressed bundle holding `kept` (from `payload`), code objects 4096-aligned."""

    def layout(header_len: int) -> list[Entry]:
        pos, out = header_len, []
        for e in kept:  # clang aligns every entry, empty ones too
            pos = -(-pos // BUNDLE_ALIGN) * BUNDLE_ALIGN
            out.append(Entry(e.id, pos, e.size))
            pos += e.size
        return out

    placed = layout(len(build_header(kept)))
    header = build_header(placed)
    out = bytearray(max([len(header)] + [e.offset + e.size for e in placed]))
    out[:len(header)] = header
    for old, new in zip(kept, placed):
        out[new.offset:new.offset + new.size] = payload[old.offset:old.offset + old.size]
    return bytes(out)


def _rewrite_compressed(buf, b: Bundle, kept: list[Entry]) -> int:
    payload = _decompressed_payload(buf, b)
    blob = build_ccob(b.ccob_version, b.ccob_method, _repack(payload, kept))
    if len(blob) > b.span:
        raise PackageError(f"compressed offload bundle at offset {b.offset}: "
                           f"rewritten bundle ({len(blob)} bytes) would not fit in {b.span}")
    buf[b.offset:b.offset + len(blob)] = blob
    _zero(buf, b.offset + len(blob), b.offset + b.span)
    return len(blob)


def strip_file(src: str | os.PathLike, dest: str | os.PathLike, keep_archs: Sequence[str], *,
               keep_generic: bool = True, keep_spirv: bool = True) -> StripReport:
    """Copy `src` to `dest` keeping only the code objects `keep_archs` need (see the module doc).

    `dest` may be `src` (rewritten in place). A file without offload bundles is copied unchanged and
    reported with no bundles. Raises PackageError when a bundle would be left without device code.
    """
    src, dest = Path(src), Path(dest)
    keep = tuple(keep_archs)
    if not keep:
        raise PackageError("strip_file: no archs to keep")
    bundles = find_bundles(src)
    if src.resolve() != dest.resolve():
        shutil.copyfile(src, dest)
        shutil.copymode(src, dest)
    report = StripReport(str(dest), keep, dest.stat().st_size)
    if not bundles:
        return report
    plans = [(b, *_plan(b, keep, keep_generic, keep_spirv, str(src))) for b in bundles]
    with open(dest, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as buf:
        for b, kept, dropped in plans:
            if not dropped:
                after = b.span
            elif b.compressed:
                after = _rewrite_compressed(buf, b, kept)
            else:
                after = _rewrite_plain(buf, b, kept)
            report.bundles.append(BundleReport(b.offset, b.compressed, tuple(e.id for e in kept),
                                               tuple(e.id for e in dropped), b.span, after))
        buf.flush()
    return report


# ------------------------------------------------------------------------------------------------
# Checking a stripped file against its original


def compare(original: str | os.PathLike, stripped: str | os.PathLike,
            keep_archs: Sequence[str], *, keep_generic: bool = True,
            keep_spirv: bool = True) -> list[str]:
    """Problems found in `stripped` against `original`; empty when the strip is sound.

    Checks: the same size and bundle starts; every kept code object byte-identical; no dropped
    one listed; bytes outside the fat-binary sections unchanged; dropped ranges of uncompressed
    bundles all zero.
    """
    original, stripped = Path(original), Path(stripped)
    problems: list[str] = []
    if original.stat().st_size != stripped.stat().st_size:
        return [f"size changed: {original.stat().st_size} -> {stripped.stat().st_size}"]
    before, after = find_bundles(original), find_bundles(stripped)
    if [b.offset for b in before] != [b.offset for b in after]:
        return ["bundle offsets differ"]
    sections = _fatbin_sections(original)
    with open(original, "rb") as f1, mmap.mmap(f1.fileno(), 0, access=mmap.ACCESS_READ) as o, \
            open(stripped, "rb") as f2, mmap.mmap(f2.fileno(), 0, access=mmap.ACCESS_READ) as s:
        cursor = 0
        for _name, off, size in sorted(sections, key=lambda x: x[1]):
            if o[cursor:off] != s[cursor:off]:
                problems.append(f"bytes outside the fat binary changed in [{cursor}, {off})")
            cursor = off + size
        if o[cursor:] != s[cursor:]:
            problems.append(f"bytes outside the fat binary changed after offset {cursor}")
        for b0, b1 in zip(before, after):
            p0 = _decompressed_payload(o, b0) if b0.compressed else None
            p1 = _decompressed_payload(s, b1) if b1.compressed else None
            old = {e.id: e for e in b0.entries}
            new = {e.id: e for e in b1.entries}
            for eid, e in old.items():
                should = wanted(eid, keep_archs, keep_generic=keep_generic, keep_spirv=keep_spirv)
                if should and eid not in new:
                    problems.append(f"bundle {b0.offset}: {eid} missing")
                elif not should and eid in new:
                    problems.append(f"bundle {b0.offset}: {eid} still listed")
                elif should and _entry_bytes(o, b0, p0, e) != _entry_bytes(s, b1, p1, new[eid]):
                    problems.append(f"bundle {b0.offset}: {eid} differs from the original")
            if not b1.compressed:
                spans = sorted((e.offset, e.offset + e.size) for e in b1.entries if e.size)
                pos = b1.header_size
                for lo, hi in [*spans, (b0.span, b0.span)]:
                    if lo > pos and s[b1.offset + pos:b1.offset + lo].strip(b"\0"):
                        problems.append(f"bundle {b0.offset}: bytes [{pos}, {lo}) not zeroed")
                    pos = max(pos, hi)
    return problems


def stray_code(path: str | os.PathLike, keep_archs: Sequence[str]) -> list[str]:
    """Problems of a stripped file: no code objects left at all, or code objects of archs outside
    `keep_archs` (what verification checks in an unpacked package)."""
    objects = list_code_objects(path)
    if not objects:
        return [f"{Path(path).name}: stripped, but holds no GPU code objects at all"]
    extra = sorted({o.id for o in objects if not wanted(o.id, keep_archs)})
    if extra:
        return [f"{Path(path).name}: holds code objects for {', '.join(extra)}, though only "
                f"{', '.join(keep_archs)} were kept"]
    return []
