"""The one decorator of the pipeline's value types: frozen, slotted dataclasses with keyword-only
fields (`@record`), or positional ones (`@record(positional=True)`). Every record type uses it, so
how records are made (the Python versions it must run on) is decided here only.

Python 3.10 gave dataclasses `slots=` and `kw_only=`; on 3.9 the same classes are made by hand here:
a keyword-only `__init__` (fields with defaults may then come before fields without, as with
kw_only=True) and the class made again with `__slots__`, as dataclasses' own slots=True does."""

from __future__ import annotations

import dataclasses
import sys

NATIVE = sys.version_info >= (3, 10)


def record(cls=None, /, *, positional: bool = False, frozen: bool = True):
    """`@record` or `@record(positional=True, frozen=False)` on a class with annotated fields."""

    def make(c):
        if NATIVE:
            return dataclasses.dataclass(c, frozen=frozen, slots=True, kw_only=not positional)
        return made_by_hand(c, positional=positional, frozen=frozen)

    return make if cls is None else make(cls)


def made_by_hand(cls, *, positional: bool, frozen: bool):
    """The record of `cls` without dataclasses' slots= and kw_only= (Python 3.9's dataclasses); the
    same class on every Python, so tests run it on newer ones too."""
    if positional:
        cls = dataclasses.dataclass(cls, frozen=frozen)
    else:
        cls = dataclasses.dataclass(cls, frozen=frozen, init=False)
        cls.__init__ = _keyword_init(cls)
    return _with_slots(cls)


def _keyword_init(cls):
    fields = [f for f in dataclasses.fields(cls) if f.init]
    later = [f for f in dataclasses.fields(cls) if not f.init]
    names = {f.name for f in fields}
    qualname = cls.__qualname__

    def __init__(self, *args, **kwargs):
        if args:
            raise TypeError(f"{qualname}.__init__() takes keyword arguments only "
                            f"({len(args)} positional given)")
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            raise TypeError(f"{qualname}.__init__() got an unexpected keyword argument {unknown[0]!r}")
        missing = []
        for f in fields + later:
            if f.init and f.name in kwargs:
                value = kwargs[f.name]
            elif f.default is not dataclasses.MISSING:
                value = f.default
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            elif f.init:
                missing.append(f.name)
                continue
            else:
                continue
            object.__setattr__(self, f.name, value)
        if missing:
            raise TypeError(f"{qualname}.__init__() missing {len(missing)} required keyword-only "
                            f"argument{'s' if len(missing) > 1 else ''}: "
                            + " and ".join(repr(m) for m in missing))
        if hasattr(self, "__post_init__"):
            self.__post_init__()

    __init__.__qualname__ = f"{qualname}.__init__"
    return __init__


def _with_slots(cls):
    """The class made again with `__slots__` for its fields (what dataclasses' slots=True does)."""
    names = tuple(f.name for f in dataclasses.fields(cls))
    body = dict(cls.__dict__)
    inherited = {s for base in cls.__mro__[1:-1] for s in getattr(base, "__slots__", ())}
    body["__slots__"] = tuple(n for n in names if n not in inherited)
    for name in names:
        body.pop(name, None)  # a default left as a class attribute would clash with the slot
    body.pop("__dict__", None)
    body.pop("__weakref__", None)
    qualname = getattr(cls, "__qualname__", None)
    cls = type(cls)(cls.__name__, cls.__bases__, body)
    if qualname is not None:
        cls.__qualname__ = qualname
    if cls.__dataclass_params__.frozen:
        # Frozen and slotted: no __dict__ to restore, so pickling and copying go field by field.
        def __getstate__(self):
            return [getattr(self, n) for n in names]

        def __setstate__(self, state):
            for n, v in zip(names, state):
                object.__setattr__(self, n, v)

        cls.__getstate__ = __getstate__
        cls.__setstate__ = __setstate__
    return cls
