"""The one jinja2 set-up: every template the pipeline renders (Dockerfiles, runtime files, release notes,
the memory workbench's Go driver) goes through `render`, so they all treat undefined names as errors
and whitespace the same way.

Values from data reach the templates checked (pipeline.config.values), and each is rendered through the
filter of its context, which quotes it there or refuses what cannot be said there (a control character
anywhere; a newline would start a new instruction):

    sh         a word of a shell command line (shlex.quote: `g++` stays `g++`, `a b` becomes `'a b'`)
    sh_dq      inside "..." of a shell command line (\\ " $ ` escaped)
    printf_sq  inside printf '...' (refuses ' \\ %)
    docker     a word of a Dockerfile instruction (ENV, ARG, COPY, FROM: bare, or "..." when needed)
    docker_dq  inside "..." of a Dockerfile instruction (LABEL values; \\ " $ escaped)
    env_key    an environment variable name
    line       one line of free text (a comment)
    systemd    a value of a systemd unit setting (% doubled)
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2

from pipeline.errors import ConfigError

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _plain(value: Any, context: str) -> str:
    text = str(value)
    if _CONTROL.search(text):
        raise ConfigError(f"{text!r} holds a newline or a control character and cannot go into {context}")
    return text


def sh(value: Any) -> str:
    return shlex.quote(_plain(value, "a shell command"))


def sh_dq(value: Any) -> str:
    return re.sub(r'([\\"$`])', r"\\\1", _plain(value, "a shell string"))


def printf_sq(value: Any) -> str:
    text = _plain(value, "a printf format")
    if any(c in text for c in "'\\%"):
        raise ConfigError(f"{text!r} holds ' \\ or % and cannot go into a printf format")
    return text


def docker(value: Any) -> str:
    text = _plain(value, "a Dockerfile")
    if text and not re.search(r"[\s\"'\\$]", text):
        return text
    return f'"{docker_dq(text)}"'


def docker_dq(value: Any) -> str:
    return re.sub(r'([\\"$])', r"\\\1", _plain(value, "a Dockerfile string"))


def env_key(value: Any) -> str:
    text = _plain(value, "an environment")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text):
        raise ConfigError(f"{text!r} is not an environment variable name")
    return text


def line(value: Any) -> str:
    return _plain(value, "a line of text")


def systemd(value: Any) -> str:
    return _plain(value, "a systemd unit").replace("%", "%%")


FILTERS: Mapping[str, Callable[[Any], str]] = {
    "sh": sh, "sh_dq": sh_dq, "printf_sq": printf_sq, "docker": docker, "docker_dq": docker_dq,
    "env_key": env_key, "line": line, "systemd": systemd}


def environment(folder: Path, filters: Mapping[str, Callable[..., Any]] | None = None) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters.update(FILTERS)
    env.filters.update(filters or {})
    return env


def render(folder: Path, name: str, filters: Mapping[str, Callable[..., Any]] | None = None,
           **context: Any) -> str:
    """Render `name` from `folder`; a missing template, an undefined name or a value its context cannot
    hold is a ConfigError naming it."""
    try:
        return environment(folder, filters).get_template(name).render(**context)
    except jinja2.TemplateNotFound as exc:
        raise ConfigError(f"template {exc.name!r} not found in {folder}") from None
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"template {folder / name}: {exc.message}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"template {exc.filename or folder / name}, line {exc.lineno}: "
                          f"{exc.message}") from None
    except ConfigError as exc:
        raise ConfigError(f"template {folder / name}: {exc}") from None


def names(folder: Path) -> list[str]:
    """The templates of a folder (*.j2), sorted."""
    return sorted(p.name for p in folder.glob("*.j2"))
