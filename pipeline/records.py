"""The one decorator of the pipeline's value types: frozen, slotted dataclasses with keyword-only
fields (`@record`), or positional ones (`@record(positional=True)`). Every record type uses it, so
how records are made (the Python versions it must run on) is decided here only."""

from __future__ import annotations

import dataclasses


def record(cls=None, /, *, positional: bool = False, frozen: bool = True):
    """`@record` or `@record(positional=True, frozen=False)` on a class with annotated fields."""

    def make(c):
        return dataclasses.dataclass(c, frozen=frozen, slots=True, kw_only=not positional)

    return make if cls is None else make(cls)
