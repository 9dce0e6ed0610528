"""Every builder's rendered Dockerfile passes the project's lint rules. The vendor images cannot be
pulled here, so this is how their Dockerfiles are checked; the Debian ones are also built in CI."""

from __future__ import annotations

import re

import pytest

from pipeline.config import targets
from pipeline.stages import builder as dockerfile

from .conftest import PROJECT, TARGETS_FILE

MATRIX = targets.load(TARGETS_FILE)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            keyword, _, args = pending.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
            pending = ""
    return out


def rendered(name: str) -> list[tuple[str, str]]:
    builder = MATRIX.builders[name]
    text = dockerfile.render(PROJECT / "docker", builder,
                             base_image=f"ollama-pipeline/debian:{builder.suite}")
    return instructions(text)


@pytest.fixture(params=list(MATRIX.builders), ids=str)
def builder(request):
    return request.param


def test_starts_from_a_pinned_image(builder):
    instructions_ = rendered(builder)
    assert instructions_[0][0] == "FROM"
    # Every stage (a download stage too) starts from a pinned image.
    for kind, args in instructions_:
        if kind == "FROM":
            image = re.sub(r"\s+AS\s+\S+$", "", args, flags=re.IGNORECASE)
            assert re.search(r"(:[\w.-]+|@sha256:[0-9a-f]{64})$", image) and not image.endswith(":latest")


def test_every_download_is_checked_against_a_fixed_sha256(builder):
    for kind, args in rendered(builder):
        if kind == "RUN" and re.search(r"\b(curl|wget) -", args):
            assert re.search(r'echo "[0-9a-f]{64}  \S+" \| sha256sum -c -', args), args


def test_every_declared_download_is_fetched_once(builder):
    runs = " ".join(a for k, a in rendered(builder) if k == "RUN")
    for d in MATRIX.builders[builder].downloads:
        assert runs.count(f"${{{d.build_arg}}}") == 1
        assert d.sha256 in runs


def test_build_arguments_are_declared_before_use(builder):
    declared: set[str] = set()
    for kind, args in rendered(builder):
        if kind == "ARG":
            declared.add(args.split("=")[0])
        for used in re.findall(r"\$\{?([A-Z][A-Z0-9_]*)\}?", args if kind == "RUN" else ""):
            assert used in declared or used in ("PATH",), f"{used} used before ARG"


def test_apt_lists_are_cleaned_in_the_layer_that_fills_them(builder):
    for kind, args in rendered(builder):
        if kind == "RUN" and "apt-get update" in args:
            assert "rm -rf /var/lib/apt/lists/*" in args
            assert "apt-get upgrade" not in args and "dist-upgrade" not in args


def test_recommends_are_never_installed(builder):
    text = " ".join(a for k, a in rendered(builder) if k == "RUN")
    for install in re.findall(r"apt-get install [^&]*", text):
        assert "--no-install-recommends" in install or 'APT::Install-Recommends "false"' in text


def test_go_and_the_caches_are_set_up_for_the_build(builder):
    env = " ".join(a for k, a in rendered(builder) if k == "ENV")
    for var in ("CCACHE_DIR=/cache/ccache", "GOMODCACHE=/cache/go-mod", "GOTOOLCHAIN=local"):
        assert var in env
    assert re.search(r"PATH=\S*go\S*/bin", env)
