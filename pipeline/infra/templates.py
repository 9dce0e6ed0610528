"""The one jinja2 set-up: every template the pipeline renders (Dockerfiles, runtime files, release notes,
the memory workbench's Go driver) goes through `render`, so they all treat undefined names as errors
and whitespace the same way."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2

from pipeline.errors import ConfigError


def environment(folder: Path, filters: Mapping[str, Callable[..., Any]] | None = None) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters.update(filters or {})
    return env


def render(folder: Path, name: str, filters: Mapping[str, Callable[..., Any]] | None = None,
           **context: Any) -> str:
    """Render `name` from `folder`; a missing template or an undefined name is a ConfigError naming it."""
    try:
        return environment(folder, filters).get_template(name).render(**context)
    except jinja2.TemplateNotFound as exc:
        raise ConfigError(f"template {exc.name!r} not found in {folder}") from None
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"template {folder / name}: {exc.message}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"template {exc.filename or folder / name}, line {exc.lineno}: "
                          f"{exc.message}") from None


def names(folder: Path) -> list[str]:
    """The templates of a folder (*.j2), sorted."""
    return sorted(p.name for p in folder.glob("*.j2"))
