"""Every string of targets.toml, found by walking the loader's schema (the dataclasses of
pipeline.config.targets that targets.toml's tables are read into), each with what a hostile or careless
value of it would inject: a newline, `;`, a quote and a space. A field added to the schema without a
kind of value fails `string_fields`; a string field the walk cannot place in targets.toml fails too.

The bad-input table (test_bad_input.py) turns each (field, injection) into a case: `plan` refuses the
value in one line naming the file, the table and the key. Free text takes `;`, quotes and spaces (a
description, a CMake cache value, a preset name takes spaces): there the value is accepted and rendered
quoted for its context, so only the newline is a case."""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from pipeline.config import loader, targets, values

# What each injection adds, by name.
INJECTIONS = {"newline": "\nRUN touch x", "semicolon": ";touch x", "quote": "\"'", "space": " x"}
# The kinds whose values may hold some of them (free text, quoted where rendered).
TAKES = {values.TEXT.name: {"semicolon", "quote", "space"}, values.CMAKE_VALUE.name: {"semicolon", "quote",
                                                                                      "space"},
         values.PRESET.name: {"space"}}

# Where each table of the schema sits in targets.toml: (path of keys, the table as messages name it).
# A list index is an array of tables ([[upstream.release_build]], extra_suites = [{...}]).
ROOTS: dict[type, tuple[tuple[Any, ...], str]] = {
    targets.Target: (("targets", "cpu"), "[targets.cpu]"),
    targets.Builder: (("builders", "debian-rocm"), "[builders.debian-rocm]"),
    targets.Backend: (("backends", "rocm"), "[backends.rocm]"),
    targets.Download: (("downloads", "cmake"), "[downloads.cmake]"),
    targets.Upstream: (("upstream",), "[upstream]"),
}
# Fields that are not strings of the file: a target's name is its table's key (checked with the
# table names), a builder's downloads name [downloads] tables (checked as names of them).
NOT_STRINGS = {(targets.Target, "name"), (targets.Builder, "downloads")}


@dataclasses.dataclass(frozen=True)
class StringField:
    cls: type
    name: str
    path: tuple[Any, ...]  # keys to the field's table in the document
    table: str  # the table as the loader's messages name it
    shape: str  # "str", "list", "values", "keys", "inner keys" (a table of tables' keys), "inner values"
    kind: values.Kind  # the kind of the string injected
    values_kind: values.Kind | None = None  # of a table's values, where its keys are injected
    keys_kind: values.Kind | None = None  # of a table's keys, where its values are injected

    @property
    def id(self) -> str:
        return f"{self.table.strip('[]')}.{self.name}:{self.shape}"


def _strings(tp: Any) -> list[str]:
    """The shapes of strings a field's type holds."""
    if typing.get_origin(tp) in loader.UNIONS:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if tp is str:
        return ["str"]
    origin = typing.get_origin(tp)
    if origin is tuple and typing.get_args(tp)[0] is str:
        return ["list"]
    if origin in (Mapping, dict):
        inner = typing.get_args(tp)[1]
        if inner is str:
            return ["values", "keys"]
        if typing.get_origin(inner) in (Mapping, dict):
            return ["inner values", "keys", "inner keys"]
    return []


def _nested(tp: Any) -> tuple[type, bool] | None:
    """(dataclass, is a list of them) for a field holding tables."""
    if dataclasses.is_dataclass(tp):
        return tp, False
    if typing.get_origin(tp) is tuple and dataclasses.is_dataclass(typing.get_args(tp)[0]):
        return typing.get_args(tp)[0], True
    return None


def walk(cls: type, path: tuple[Any, ...], table: str) -> Iterator[StringField]:
    hints = loader.type_hints(cls)
    for f in dataclasses.fields(cls):
        if (cls, f.name) in NOT_STRINGS:
            continue
        tp = hints[f.name]
        if (inner := _nested(tp)) is not None:
            sub, many = inner
            yield from walk(sub, (*path, f.name, 0) if many else (*path, f.name),
                            f"{table[:-1]}.{f.name} #1]" if many else f"{table[:-1]}.{f.name}]")
            continue
        for shape in _strings(tp):
            kind, keys = values.kind_of(f)
            chosen = keys if shape in ("keys",) else kind
            if shape == "inner keys":
                chosen = values.ENV_KEY  # checked by the record itself (Runtime.env_versions)
            if chosen is None:
                raise AssertionError(f"{cls.__name__}.{f.name} ({shape}) declares no kind of value: every "
                                     "string of targets.toml is checked (pipeline.config.values.checked)")
            yield StringField(cls, f.name, path, table, shape, chosen, values_kind=kind, keys_kind=keys)


def string_fields() -> list[StringField]:
    return [sf for cls, (path, table) in ROOTS.items() for sf in walk(cls, path, table)]


def _table(doc: dict, path: tuple[Any, ...]) -> dict:
    """The table at `path`, made where missing (a list where the next key is an index)."""
    node: Any = doc
    for i, key in enumerate(path):
        if isinstance(key, int):
            while len(node) <= key:
                node.append({})
        elif key not in node:
            node[key] = [] if i + 1 < len(path) and isinstance(path[i + 1], int) else {}
        node = node[key]
    return node


def inject(doc: dict, sf: StringField, text: str) -> str:
    """Put `text` into the field (after a valid value), and return the value that carries it."""
    table = _table(doc, sf.path)
    current = table.get(sf.name)
    example = sf.kind.example if sf.kind.example else "x"
    if sf.shape == "str":
        value = (current or example) + text
        table[sf.name] = value
    elif sf.shape == "list":
        value = ((current or [example])[0]) + text
        table[sf.name] = [value, *(current or [])[1:]]
    elif sf.shape == "values":
        key, old = next(iter((current or {}).items()), (sf.keys_kind.example, example))
        value = old + text
        table[sf.name] = {**(current or {}), key: value}
    elif sf.shape == "keys":
        key, old = next(iter((current or {}).items()), (sf.kind.example, _value_for(sf)))
        if not current and sf.values_kind is not None and not isinstance(old, dict):
            old = sf.values_kind.example
        value = key + text
        table[sf.name] = {value: old}
    elif sf.shape == "inner values":
        value = "1" + text
        table[sf.name] = {">=0.12.5": {"SOME_KEY": value}}
    else:  # inner keys
        value = "SOME_KEY" + text
        table[sf.name] = {">=0.12.5": {value: "1"}}
    return value


def _value_for(sf: StringField) -> Any:
    """A valid value for a table whose key is injected."""
    kind, _ = values.kind_of(next(f for f in dataclasses.fields(sf.cls) if f.name == sf.name))
    if sf.cls is targets.Runtime and sf.name == "env_versions":
        return {"SOME_KEY": "1"}
    return kind.example if kind is not None else "1"


def dump(doc: dict) -> str:
    """A TOML document of `doc`: each top-level table as one inline table (TOML allows them nested)."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
    return "".join(f"{json.dumps(k)} = {value(v)}\n" for k, v in doc.items())


def cases() -> list[tuple[StringField, str]]:
    """Every (string field, injection) that the field's kind refuses."""
    return [(sf, name) for sf in string_fields() for name in INJECTIONS
            if name not in TAKES.get(sf.kind.name, set())]
