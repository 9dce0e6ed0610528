"""What verify makes of the package's answers."""

from __future__ import annotations

import pytest

from pipeline.stages import verify


@pytest.mark.parametrize("output, line", [
    ("Warning: could not connect to a running Ollama instance\n"
     "Warning: client version is 0.24.0+gfx906\n", "ollama version is 0.24.0+gfx906"),
    ("ollama version is 0.12.5+cpu\n", "ollama version is 0.12.5+cpu"),
    ("something else\n", "something else"),
])
def test_the_version_answer_is_one_line_without_the_warnings(output, line):
    assert verify._client_version(output) == line
