"""Offload bundles: parsing, choosing entries, and rewriting them in place (pipeline.gpu.offload)."""

from __future__ import annotations

import hashlib
import random
import struct
import zlib

import pytest

from pipeline.errors import PackageError
from pipeline.gpu import offload

HOST = "host-x86_64-unknown-linux-gnu-"
GFX906 = "hipv4-amdgcn-amd-amdhsa--gfx906"
GFX1100 = "hipv4-amdgcn-amd-amdhsa--gfx1100"
GFX90A = "hipv4-amdgcn-amd-amdhsa--gfx90a:xnack-"


def code_object(seed: int, size: int) -> bytes:
    """Bytes that look like an AMDGPU ELF and differ per seed."""
    rng = random.Random(seed)
    return b"\x7fELF\x02\x01\x01\x40" + bytes(rng.randrange(1, 256) for _ in range(size - 8))


def plain_bundle(entries: dict[str, bytes]) -> bytes:
    """A bundle as clang writes it for HIP: header, then every entry on a 4096-byte boundary."""
    placed, pos = [], 4096
    for eid, data in entries.items():
        pos = -(-pos // 4096) * 4096
        placed.append(offload.Entry(eid, pos, len(data)))
        pos += len(data)
    out = bytearray(pos)
    header = offload.build_header(placed)
    out[:len(header)] = header
    for e, data in zip(placed, entries.values()):
        out[e.offset:e.offset + e.size] = data
    return bytes(out)


def compressed_bundle(entries: dict[str, bytes], version: int = 2, method: int = 1) -> bytes:
    return offload.build_ccob(version, method, plain_bundle(entries))


def elf_with(section_data: bytes, *, before: bytes = b"host code " * 50, name=b".hip_fatbin") -> bytes:
    """A minimal ELF64: a .text-like blob, the fat-binary section, .shstrtab, section headers."""
    shstrtab = b"\0.text\0" + name + b"\0.shstrtab\0"
    text_off = 64
    fat_off = -(-(text_off + len(before)) // 4096) * 4096
    str_off = fat_off + len(section_data)
    sh_off = -(-(str_off + len(shstrtab)) // 8) * 8
    ehdr = b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack(
        "<HHIQQQIHHHHHH", 3, 62, 1, 0, 0, sh_off, 0, 64, 0, 0, 64, 4, 3)

    def shdr(name_off, sh_type, flags, offset, size, align):
        return struct.pack("<IIQQQQIIQQ", name_off, sh_type, flags, offset, offset, size, 0, 0, align, 0)

    sections = (bytes(64)
                + shdr(1, 1, 6, text_off, len(before), 16)
                + shdr(7, 1, 2, fat_off, len(section_data), 4096)
                + shdr(8 + len(name), 3, 0, str_off, len(shstrtab), 1))
    out = bytearray(sh_off + len(sections))
    out[:64] = ehdr
    out[text_off:text_off + len(before)] = before
    out[fat_off:fat_off + len(section_data)] = section_data
    out[str_off:str_off + len(shstrtab)] = shstrtab
    out[sh_off:] = sections
    return bytes(out)


def fatbin(*bundles: bytes) -> bytes:
    """Bundles laid out as the linker does: each on a 4096-byte boundary, zero padding between."""
    out = bytearray()
    for b in bundles:
        out += bytes(-len(out) % 4096) + b
    return bytes(out)


@pytest.fixture
def codes():
    return {HOST: b"", GFX1100: code_object(1, 5000), GFX906: code_object(2, 4400),
            GFX90A: code_object(3, 3000)}


@pytest.fixture
def lib(tmp_path, codes):
    second = {HOST: b"", GFX1100: code_object(4, 7000), GFX906: code_object(5, 300)}
    path = tmp_path / "libfat.so"
    path.write_bytes(elf_with(fatbin(plain_bundle(codes), plain_bundle(second))))
    return path


# --- entry IDs and the choice of entries ----------------------------------------------------------

def test_entry_ids_are_parsed_as_llvm_does():
    e = offload.EntryId.parse("hipv4-amdgcn-amd-amdhsa--gfx906:sramecc+:xnack-")
    assert (e.kind, e.triple, e.processor) == ("hipv4", "amdgcn-amd-amdhsa-", "gfx906")
    assert e.features == {"sramecc": "+", "xnack": "-"}
    host = offload.EntryId.parse(HOST)
    assert host.is_host and host.processor == ""
    assert offload.EntryId.parse("hip-amdgcn-amd-amdhsa-gfx803").processor == "gfx803"
    assert offload.EntryId.parse("hipv4-spirv64-amd-amdhsa--amdgcnspirv").is_spirv


@pytest.mark.parametrize("entry, keep, expected", [
    (HOST, ["gfx906"], True),
    (GFX906, ["gfx906"], True),
    (GFX1100, ["gfx906"], False),
    ("hipv4-amdgcn-amd-amdhsa--gfx1103", ["gfx1100"], False),
    ("hipv4-amdgcn-amd-amdhsa--gfx906:xnack-", ["gfx906"], True),
    ("hipv4-amdgcn-amd-amdhsa--gfx906:xnack-", ["gfx906:xnack+"], False),
    ("hipv4-amdgcn-amd-amdhsa--gfx906", ["gfx906:xnack+"], True),  # unspecified fits any setting
    ("hipv4-amdgcn-amd-amdhsa--gfx9-generic", ["gfx906"], True),
    ("hipv4-amdgcn-amd-amdhsa--gfx11-generic", ["gfx906"], False),
    ("hipv4-amdgcn-amd-amdhsa--gfx11-generic", ["gfx1100"], True),
    ("hipv4-spirv64-amd-amdhsa--amdgcnspirv", ["gfx906"], True),
])
def test_which_entries_a_target_keeps(entry, keep, expected):
    assert offload.wanted(entry, keep) is expected


def test_generic_and_spirv_entries_can_be_dropped_on_request():
    assert not offload.wanted("hipv4-amdgcn-amd-amdhsa--gfx9-generic", ["gfx906"], keep_generic=False)
    assert not offload.wanted("hipv4-spirv64-amd-amdhsa--amdgcnspirv", ["gfx906"], keep_spirv=False)


# --- reading ------------------------------------------------------------------------------------------

def test_bundles_and_code_objects_are_listed(lib, codes):
    bundles = offload.find_bundles(lib)
    assert len(bundles) == 2 and not any(b.compressed for b in bundles)
    assert [e.id for e in bundles[0].entries] == list(codes)
    objs = offload.list_code_objects(lib)
    assert [o.id for o in objs] == [GFX1100, GFX906, GFX90A, GFX1100, GFX906]  # empty host left out
    assert objs[1].sha256 == hashlib.sha256(codes[GFX906]).hexdigest()
    assert objs[1].processor == "gfx906"


def test_a_file_without_fat_binary_has_no_bundles(tmp_path):
    plain = tmp_path / "libplain.so"
    plain.write_bytes(elf_with(b"not a bundle", name=b".rodata"))
    text = tmp_path / "README"
    text.write_text("hello")
    assert offload.find_bundles(plain) == [] and offload.find_bundles(text) == []
    assert not offload.has_offload_code(plain)


def test_unknown_data_in_the_fat_binary_section_is_an_error(tmp_path):
    bad = tmp_path / "libbad.so"
    bad.write_bytes(elf_with(b"garbage"))
    with pytest.raises(PackageError, match="unrecognised data"):
        offload.find_bundles(bad)


# --- stripping uncompressed bundles -----------------------------------------------------------------

def test_strip_keeps_the_arch_byte_for_byte_and_zeroes_the_rest(lib, tmp_path, codes):
    out = tmp_path / "stripped.so"
    before = offload.find_bundles(lib)
    report = offload.strip_file(lib, out, ["gfx906"])

    assert out.stat().st_size == lib.stat().st_size
    after = offload.find_bundles(out)
    assert [b.offset for b in after] == [b.offset for b in before]  # the wrappers' pointers stay right
    for b0, b1 in zip(before, after):
        assert [e.id for e in b1.entries] == [HOST, GFX906]
        old = {e.id: e for e in b0.entries}
        assert all(e.offset == old[e.id].offset and e.size == old[e.id].size for e in b1.entries)
    data = out.read_bytes()
    assert data.count(codes[GFX906]) == 1
    assert codes[GFX1100] not in data and codes[GFX90A] not in data
    assert offload.compare(lib, out, ["gfx906"]) == []

    assert report.changed and not report.compressed
    assert report.entries("kept") == {GFX906: 2, HOST: 2}
    assert report.entries("dropped") == {GFX1100: 2, GFX90A: 1}
    assert report.code_bytes_after < report.code_bytes_before
    assert report.zeroed_bytes == report.code_bytes_before - report.code_bytes_after
    doc = report.to_dict()
    assert doc["bundles"] == 2 and doc["kept"][GFX906] == 2 and doc["file_size"] == lib.stat().st_size


def test_only_the_fat_binary_section_changes(lib, tmp_path):
    out = tmp_path / "stripped.so"
    offload.strip_file(lib, out, ["gfx1100"])
    a, b = lib.read_bytes(), out.read_bytes()
    start = offload.find_bundles(lib)[0].offset
    assert a[:start] == b[:start]
    assert a[-256:] == b[-256:]  # the section headers


def test_strip_in_place_and_twice_is_stable(lib, codes):
    offload.strip_file(lib, lib, ["gfx906", "gfx1100"])
    once = lib.read_bytes()
    report = offload.strip_file(lib, lib, ["gfx906", "gfx1100"])
    assert lib.read_bytes() == once and not report.changed
    assert {o.id for o in offload.list_code_objects(lib)} == {GFX906, GFX1100}


def test_strip_refuses_to_leave_a_bundle_without_device_code(lib, tmp_path):
    with pytest.raises(PackageError, match="no code object for gfx1030"):
        offload.strip_file(lib, tmp_path / "out.so", ["gfx1030"])
    with pytest.raises(PackageError, match="no archs"):
        offload.strip_file(lib, tmp_path / "out.so", [])


def test_a_file_without_bundles_is_copied_unchanged(tmp_path):
    src = tmp_path / "libplain.so"
    src.write_bytes(elf_with(b"\1" * 100, name=b".rodata"))
    src.chmod(0o755)
    report = offload.strip_file(src, tmp_path / "copy.so", ["gfx906"])
    assert (tmp_path / "copy.so").read_bytes() == src.read_bytes()
    assert (tmp_path / "copy.so").stat().st_mode & 0o777 == 0o755
    assert not report.changed and report.bundles == []


def test_compare_finds_a_changed_code_object(lib, tmp_path, codes):
    out = tmp_path / "stripped.so"
    offload.strip_file(lib, out, ["gfx906"])
    data = bytearray(out.read_bytes())
    where = data.index(codes[GFX906]) + 100
    data[where] ^= 0xFF
    out.write_bytes(bytes(data))
    assert offload.compare(lib, out, ["gfx906"]) == [
        f"bundle {offload.find_bundles(lib)[0].offset}: {GFX906} differs from the original"]


# --- compressed bundles ------------------------------------------------------------------------------------

@pytest.mark.parametrize("version, method", [(2, 1), (3, 1), (2, 0), (3, 0)])
def test_compressed_bundles_are_rebuilt_with_their_own_format(tmp_path, codes, version, method):
    lib = tmp_path / "libccob.so"
    lib.write_bytes(elf_with(fatbin(compressed_bundle(codes, version, method), plain_bundle(codes))))
    before = offload.find_bundles(lib)
    assert [b.compressed for b in before] == [True, False]
    assert before[0].ccob_version == version and before[0].ccob_method == method

    out = tmp_path / "stripped.so"
    report = offload.strip_file(lib, out, ["gfx1100"])
    after = offload.find_bundles(out)
    assert after[0].compressed and after[0].ccob_version == version and after[0].ccob_method == method
    assert after[0].span < before[0].span
    assert [e.id for e in after[0].entries] == [HOST, GFX1100]
    assert all(e.offset % 4096 == 0 for e in after[0].entries)
    assert offload.compare(lib, out, ["gfx1100"]) == []
    assert report.compressed

    raw = out.read_bytes()
    _v, _m, hsize, total, usize, digest = offload._ccob_header(raw, after[0].offset)
    payload = raw[after[0].offset + hsize:after[0].offset + total]
    inner = (zlib.decompress(payload) if method == 0
             else __import__("zstandard").ZstdDecompressor().decompress(payload, max_output_size=usize))
    assert digest == offload.md5_low(inner)  # the hash clang's bundler writes
    assert codes[GFX1100] in inner and codes[GFX906] not in inner
    assert raw[after[0].offset + total:before[0].offset + before[0].span].strip(b"\0") == b""


def test_md5_low_is_the_first_digest_bytes_little_endian():
    assert offload.md5_low(b"") == int.from_bytes(bytes.fromhex("d41d8cd98f00b204"), "little")
