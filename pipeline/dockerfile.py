"""Render docker/ templates with jinja2; undefined names are errors, not empty strings."""

from __future__ import annotations

from pathlib import Path

import jinja2

from .errors import ConfigError
from .targets import Builder


def render(templates: Path, builder: Builder, **extra) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    try:
        return env.get_template(builder.template).render(builder=builder, **extra)
    except jinja2.TemplateNotFound:
        raise ConfigError(f"builder template {builder.template!r} not found in {templates}") from None
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"template {builder.template}: {exc.message}") from None
