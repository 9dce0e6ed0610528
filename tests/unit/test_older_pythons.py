"""What Python 3.9 lacks, made by the pipeline itself: records (dataclasses without slots= and
kw_only=), the type hints of the loader's schemas (`X | None` cannot be evaluated there), and tar
extraction without tarfile's filters (Debian 11's 3.9.2). Each is tested on every Python: the 3.9 way
against the native one where the Python has both."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import io
import os
import pickle
import pkgutil
import stat
import sys
import tarfile
import typing
from typing import Optional, Union

import pytest
import zstandard

import pipeline
from pipeline.config import loader
from pipeline.formats import PackageLayout
from pipeline.infra import archive
from pipeline.records import made_by_hand, record

NATIVE = sys.version_info >= (3, 10)


class Shape:
    name: str
    size: int = 0
    tags: list[str] = dataclasses.field(default_factory=list)
    note: str | None = None
    later: int  # after fields with defaults: allowed, as every field is keyword-only

    def __post_init__(self):
        if self.size < 0:
            raise ValueError("size must not be negative")


class Pair:
    left: int
    right: int = 2


# Module-level record types, so pickle finds them.
HandShape = made_by_hand(type("HandShape", (), {**{k: v for k, v in vars(Shape).items()
                                                   if k not in ("__dict__", "__weakref__")}}),
                         positional=False, frozen=True)
HandPair = made_by_hand(type("HandPair", (), {k: v for k, v in vars(Pair).items()
                                              if k not in ("__dict__", "__weakref__")}),
                        positional=True, frozen=True)
KINDS = [("by hand", HandShape, HandPair)]
if NATIVE:
    NativeShape = dataclasses.dataclass(type("NativeShape", (), {k: v for k, v in vars(Shape).items()
                                                                 if k not in ("__dict__", "__weakref__")}),
                                        frozen=True, slots=True, kw_only=True)
    NativePair = dataclasses.dataclass(type("NativePair", (), {k: v for k, v in vars(Pair).items()
                                                               if k not in ("__dict__", "__weakref__")}),
                                       frozen=True, slots=True)
    KINDS.append(("native", NativeShape, NativePair))
for _kind, _shape, _pair in KINDS:
    _shape.__module__ = _pair.__module__ = __name__


@pytest.mark.parametrize(("kind", "S", "P"), KINDS, ids=[k[0] for k in KINDS])
def test_records_are_frozen_slotted_and_keyword_only(kind, S, P):
    s = S(name="a", later=1)
    assert (s.name, s.size, s.tags, s.note, s.later) == ("a", 0, [], None, 1)
    assert s == S(name="a", later=1) and s != S(name="a", later=2)
    assert not hasattr(s, "__dict__") and set(S.__slots__) == {"name", "size", "tags", "note", "later"}
    assert S(name="a", later=1).tags is not s.tags  # default_factory runs per record
    with pytest.raises(TypeError):
        S("a", 0, [], None, 1)  # keyword-only
    with pytest.raises(TypeError, match="later"):
        S(name="a")
    with pytest.raises(TypeError, match="colour"):
        S(name="a", later=1, colour="red")
    with pytest.raises(ValueError, match="negative"):
        S(name="a", later=1, size=-1)  # __post_init__ runs
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.name = "b"
    with pytest.raises(dataclasses.FrozenInstanceError):
        del s.name
    assert dataclasses.replace(s, size=3) == S(name="a", later=1, size=3)
    assert dataclasses.asdict(s) == {"name": "a", "size": 0, "tags": [], "note": None, "later": 1}
    assert pickle.loads(pickle.dumps(s)) == s and copy.deepcopy(s) == s
    assert "name='a'" in repr(s)

    p = P(1)
    assert hash(p) == hash(P(1, 2))
    assert p == P(left=1, right=2) and (p.left, p.right) == (1, 2) and not hasattr(p, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.left = 3


def test_the_record_decorator_makes_the_same_class_natively_or_by_hand():
    @record
    class R:
        a: int
        b: str = "x"

    @record(positional=True, frozen=False)
    class M:
        a: int

    assert R(a=1) == R(a=1, b="x") and not hasattr(R(a=1), "__dict__")
    with pytest.raises(TypeError):
        R(1)
    m = M(1)
    m.a = 2
    assert m.a == 2


def schema_classes():
    """Every dataclass of the pipeline's modules."""
    found = []
    for info in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        found += [obj for obj in vars(module).values()
                  if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == info.name]
    return found


def test_every_records_type_hints_evaluate_the_3_9_way_as_python_evaluates_them():
    classes = schema_classes()
    assert len(classes) > 30
    for cls in classes:
        by_hand = loader.union_type_hints(cls)
        assert set(by_hand) >= {f.name for f in dataclasses.fields(cls)}, cls
        if NATIVE:
            assert by_hand == typing.get_type_hints(cls), cls


def test_unions_are_read_as_typing_union_where_the_python_cannot_evaluate_them():
    @dataclasses.dataclass
    class T:
        a: int | None
        b: tuple[str, ...] | None = None
        c: dict[str, int | str] = dataclasses.field(default_factory=dict)

    hints = loader.union_type_hints(T)
    assert hints == {"a": Optional[int], "b": Optional[tuple[str, ...]], "c": dict[str, Union[int, str]]}
    assert loader.type_hints(T) == hints
    assert loader.build(T, {"a": None, "b": ["x"]}, "t.toml: [t]") == T(a=None, b=("x",))


def package_tar() -> bytes:
    members = [("bin", tarfile.DIRTYPE, 0o777, b""), ("bin/ollama", tarfile.REGTYPE, 0o6775, b"#!x"),
               ("lib", tarfile.DIRTYPE, 0o700, b""), ("lib/data", tarfile.REGTYPE, 0o466, b"d"),
               ("lib/link", tarfile.SYMTYPE, 0o777, b""),
               (PackageLayout.INSIDE, tarfile.REGTYPE, 0o644, b"{}")]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, mode, data in members:
            info = tarfile.TarInfo(name)
            info.type, info.mode = kind, mode
            info.uid, info.gid, info.uname, info.gname = 4321, 4321, "x", "x"
            if kind == tarfile.SYMTYPE:
                info.linkname = "data"
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return zstandard.ZstdCompressor().compress(buf.getvalue())


WAYS = [False, pytest.param(True, marks=pytest.mark.skipif(not archive.HAS_FILTERS,
                                                          reason="this Python's tarfile has no filters"))]


@pytest.mark.parametrize("filters", WAYS, ids=["without filters", "tarfile's data filter"])
def test_unpacking_gives_the_same_safe_files_with_or_without_tarfiles_filters(tmp_path, monkeypatch,
                                                                               filters):
    monkeypatch.setattr(archive, "HAS_FILTERS", filters)
    path = tmp_path / "ollama-1.0.0-cpu.tar.zst"
    path.write_bytes(package_tar())
    old = os.umask(0o022)
    try:
        assert archive.unpack(path, tmp_path / "out", tmp_path) == {}
    finally:
        os.umask(old)
    out = tmp_path / "out"

    def mode(rel):
        return stat.S_IMODE(os.lstat(out / rel).st_mode)

    # no setuid/setgid, no group or other write; a file not executable by its owner by nobody; the
    # owner reads and writes every file; folders as the umask makes them; nobody's owner from the archive
    assert (mode("bin/ollama"), mode("lib/data"), mode("bin"), mode("lib")) == (0o755, 0o644, 0o755, 0o755)
    assert os.readlink(out / "lib/link") == "data"
    assert {os.lstat(out / rel).st_uid for rel in ("bin", "bin/ollama", "lib/data", "lib/link")} \
        == {os.geteuid()}
