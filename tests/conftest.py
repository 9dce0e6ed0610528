"""Options shared by both tiers."""

from __future__ import annotations


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite golden files from what the code renders now (then review `git diff`); "
                          "`nox -s golden` passes it")
