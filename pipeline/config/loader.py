"""The one typed TOML loader: a TOML file or table into frozen dataclasses, for every data file the
pipeline reads (targets.toml, library policies, memory scenarios).

The dataclass is the schema: its fields are the allowed keys, their types are checked (TOML's bool is
not an integer here), missing keys without a default are named, unknown keys are refused with a close
match, and every message names the file, the table and the key. A field that declares the kind of its
strings (pipeline.config.values.checked) has each string checked against it; a value a field's own
__post_init__ refuses (ValueError) is reported the same way.

TOML is read with the standard library's tomllib, or its backport tomli where the Python has none (3.9,
3.10: the same parser, published separately).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import errno
import os
import stat
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

# `X | Y` as a type is Python 3.10's (types.UnionType); typing.Union is what 3.9 makes of it here.
UNIONS = (typing.Union, getattr(types, "UnionType", typing.Union))

# Extra field types a schema may use, each with its converter: {Size: parse_size}. A converter gets the
# raw value and a description of where it is ("file: [table] key 'x'") and raises ConfigError.
Converters = Mapping[Any, Callable[[Any, str], Any]]


def regular_file(path: Path, what: str = "file") -> None:
    """Refuse what is not a regular file before it is opened: reading a FIFO or a device would block
    or never end. A missing file or a folder raises the OSError that opening it would."""
    st = os.stat(path)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{path}: is not a regular file (a FIFO, socket or device), not a {what}; "
                          "give a file")


def read(path: Path, what: str = "file") -> dict[str, Any]:
    """A TOML file as a dict; a missing, unreadable or malformed file is one ConfigError line."""
    try:
        regular_file(path, what)
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a {what}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def build(cls: type, table: Any, where: str, *, partial: bool = False, exclude: tuple[str, ...] = (),
          converters: Converters | None = None, given: Mapping[str, Any] | None = None):
    """Turn a TOML table into the frozen dataclass `cls`, checking keys and types against its fields.

    `where` names the table ("targets.toml: [targets.cpu]"). With `partial`, keys may be missing and
    only the checks are made: the converted values come back as a dict (for [defaults]). `given`: values
    of fields the caller supplies, which the table may not hold.
    """
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table, got {tname(table)}")
    given = dict(given or {})
    hints = type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in exclude and f.name not in given}
    reject_unknown(table, fields, where)
    kwargs = {}
    for name, f in fields.items():
        if name not in table:
            if partial:
                continue
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where} missing key {name!r} ({describe(hints[name], converters)})")
            continue
        inner = f"{where[:-1]}.{name}]" if where.endswith("]") else f"{where} [{name}]"
        kwargs[name] = convert(hints[name], table[name], f"{where} key {name!r}", inner, partial=partial,
                               converters=converters, kinds=(f.metadata.get("kind"), f.metadata.get("keys")))
    if partial:
        return kwargs
    try:
        return cls(**given, **kwargs)
    except ValueError as exc:
        raise ConfigError(f"{where} {exc}") from None


def convert(tp: Any, value: Any, what: str, inner: str, *, partial: bool = False,
            converters: Converters | None = None, kinds: tuple[Any, Any] = (None, None)):
    """One value against its declared type; `what` names it, `inner` names a nested table. `kinds`: the
    kind of the field's strings and of its keys (pipeline.config.values), checked too."""
    converters = converters or {}
    kind, keys = kinds
    if typing.get_origin(tp) in UNIONS:
        if value is None and type(None) in typing.get_args(tp):
            return None
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if tp in converters:
        return converters[tp](value, what)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, inner, partial=partial, converters=converters)
    if tp in (str, int, bool):
        if type(value) is not tp:  # bool is an int in Python; TOML keeps them apart and so do we
            raise ConfigError(f"{what} must be {describe(tp)}, got {tname(value)}")
        return _of_kind(value, kind, what) if tp is str else value
    origin = typing.get_origin(tp)
    if origin is tuple:
        item = typing.get_args(tp)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{what} must be {describe(tp, converters)}, got {tname(value)}")
        return tuple(convert(item, v, f"{what} item {i + 1}", f"{inner[:-1]} #{i + 1}]", partial=partial,
                             converters=converters, kinds=kinds) for i, v in enumerate(value))
    if origin in (Mapping, dict) or tp is Mapping:
        args = typing.get_args(tp)
        item = args[1] if len(args) == 2 else str
        if item is str:
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise ConfigError(f"{what} must be {describe(tp)}, got {tname(value)}")
            return types.MappingProxyType({_of_kind(k, keys, f"{what}: key"):
                                           _of_kind(v, kind, f"{what}: {k!r} =") for k, v in value.items()})
        if not isinstance(value, dict):
            raise ConfigError(f"{what} must be a table, got {tname(value)}")
        return types.MappingProxyType({_of_kind(k, keys, f"{what}: key"):
                                       convert(item, v, f"{what} key {k!r}", f"{inner[:-1]}.{k}]",
                                               partial=partial, converters=converters, kinds=(kind, None))
                                       for k, v in value.items()})
    if tp is Any:
        return value
    if tp is float:
        if type(value) not in (int, float):
            raise ConfigError(f"{what} must be a number, got {tname(value)}")
        return float(value)
    raise TypeError(f"unsupported schema type {tp!r}")  # a bug in a schema, not user input


def _of_kind(value: str, kind: Any, what: str) -> str:
    """`value` when it is of the field's declared kind (or none is declared); else one ConfigError."""
    if kind is not None and (problem := kind.check(value)):
        label = what if what.endswith((": key", "=")) else f"{what}:"
        raise ConfigError(f"{label} {value!r} is not allowed ({problem}); use {kind.rule}")
    return value


def type_hints(cls: type) -> dict[str, Any]:
    """The evaluated field types of `cls` (its annotations are strings: `from __future__ import
    annotations`). Python 3.9 cannot evaluate `X | None`; there it is read as typing.Union[X, None]."""
    if sys.version_info >= (3, 10):
        return typing.get_type_hints(cls)
    return union_type_hints(cls)


def union_type_hints(cls: type) -> dict[str, Any]:
    """typing.get_type_hints for Python 3.9: each string annotation is parsed, every `a | b` in it is
    rewritten to typing.Union[a, b], and it is evaluated in its class's module."""
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        module = sys.modules.get(klass.__module__)
        namespace = {**(vars(module) if module else {}), "__union__": typing.Union}
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            if isinstance(annotation, str):
                tree = _Unions().visit(ast.parse(annotation, mode="eval"))
                code = compile(ast.fix_missing_locations(tree), f"<annotation of {name}>", "eval")
                annotation = eval(code, namespace, dict(vars(klass)))
            hints[name] = annotation
    return hints


class _Unions(ast.NodeTransformer):
    """`a | b` in an annotation, as `__union__[a, b]` (typing.Union)."""

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        node = self.generic_visit(node)
        if not isinstance(node.op, ast.BitOr):
            return node
        return ast.Subscript(value=ast.Name(id="__union__", ctx=ast.Load()),
                             slice=ast.Tuple(elts=[node.left, node.right], ctx=ast.Load()),
                             ctx=ast.Load())


def describe(tp: Any, converters: Converters | None = None) -> str:
    """What a value of type `tp` looks like in TOML, for messages."""
    if typing.get_origin(tp) in UNIONS:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if converters and tp in converters:
        return getattr(converters[tp], "describes", "a value")
    origin = typing.get_origin(tp)
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        if dataclasses.is_dataclass(inner):
            return "a list of tables"
        return "a list of integers" if inner is int else "a list of strings"
    if origin in (Mapping, dict) or tp is Mapping:
        return "a table of strings"
    return {str: "a string", int: "an integer", bool: "true or false"}.get(tp, "a table")


def tname(value: Any) -> str:
    """What a TOML value is, for messages."""
    return {str: "a string", int: "an integer", bool: "a boolean", float: "a number", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def hint(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a choice is close to `word`, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def reject_unknown(table: Mapping[str, Any], allowed: Iterable[str], where: str, what: str = "key") -> None:
    allowed = list(allowed)
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{where} unknown {what} {key!r}{hint(key, allowed)}; "
                              f"allowed: {', '.join(allowed)}")
