"""Shared by both tiers: the `--update-golden` option, and the plain console policy of the test process.

Under GitHub Actions (the CI of this project) GITHUB_ACTIONS and GITHUB_STEP_SUMMARY are set for the
test run itself; without the fixture, every Log a test opens would fold the console into groups and
append its stages to the CI job's summary. Tests of those modes set the variables they need.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite golden files from what the code renders now (then review `git diff`); "
                          "`nox -s golden` passes it")


@pytest.fixture(autouse=True)
def _plain_console(monkeypatch):
    for var in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "PIPELINE_QUIET"):
        monkeypatch.delenv(var, raising=False)
