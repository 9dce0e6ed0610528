"""Sessions of the Ollama build pipeline. The work lives in the `pipeline` package; these only call it.

    nox -s build -- gfx1103         build, package and verify one target
    nox -s targets -- --json        the matrix, for CI
    nox -s tests                    the test suite (Docker tier included)
    nox -s release -- --dry-run     assemble dist/release/ from the built targets

Each session's options: nox -s SESSION -- --help (lint and tests pass theirs to ruff and pytest).
"""

import hashlib
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True

# Every package a session installs is held to the versions of constraints.txt (Dependabot updates it),
# the build backend pip fetches to build the project included: PIP_CONSTRAINT reaches that build up to
# pip 26.1, PIP_BUILD_CONSTRAINT from pip 25.3 on (from 26.2 on only it; older pips ignore it).
CONSTRAINTS_FILE = str(Path(__file__).resolve().parent / "constraints.txt")
CONSTRAINTS = ("--constraint", CONSTRAINTS_FILE)
PIP_ENV = {"PIP_CONSTRAINT": CONSTRAINTS_FILE, "PIP_BUILD_CONSTRAINT": CONSTRAINTS_FILE}
# pipeline.errors.CLOSED_PIPE: the reader of the output went away (`nox -s targets -- --json | head -1`).
# The sessions that only print take it as success; a build cut short by it fails.
CLOSED_PIPE = 141


def _install(session: nox.Session, *extras: str) -> None:
    """Editable install of the package, once per pyproject.toml: the source is followed live, so only a
    change of dependencies needs pip again (keeps a no-op build to the cache checks)."""
    spec = f".[{','.join(extras)}]" if extras else "."
    key = hashlib.sha256(Path("pyproject.toml").read_bytes() + Path("constraints.txt").read_bytes()
                         + spec.encode()).hexdigest()[:16]
    marker = Path(session.virtualenv.location) / f".pipeline-installed-{key}"
    if not marker.exists():
        session.install("--quiet", *CONSTRAINTS, "--editable", spec, env=PIP_ENV)
        marker.write_text(spec + "\n")


@nox.session
def build(session: nox.Session) -> None:
    """Build targets: `nox -s build -- gfx1103`, globs ('gfx*') or --all. Output in dist/<target>/."""
    _install(session)
    session.run("python", "-m", "pipeline", "build", *session.posargs)


@nox.session(default=False)
def image(session: nox.Session) -> None:
    """Build targets and make their runtime Docker images: `nox -s image -- gfx1103`
    (ollama-pipeline/ollama:<version>-<target>, saved in dist/<target>/ as .image.tar.gz)."""
    _install(session)
    session.run("python", "-m", "pipeline", "image", *session.posargs)


@nox.session
def verify(session: nox.Session) -> None:
    """Verify archives in a clean container of their runtime floor:
    `nox -s verify -- dist/gfx906/*.tar.zst`."""
    _install(session)
    session.run("python", "-m", "pipeline", "verify", *session.posargs)


@nox.session
def targets(session: nox.Session) -> None:
    """Show the target matrix; `-- --json` for CI."""
    _install(session)
    session.run("python", "-m", "pipeline", "targets", *session.posargs, success_codes=[0, CLOSED_PIPE])


@nox.session
def plan(session: nox.Session) -> None:
    """Show what a build would run, with the hash of every stage: `nox -s plan -- cpu`."""
    _install(session)
    session.run("python", "-m", "pipeline", "plan", *session.posargs, success_codes=[0, CLOSED_PIPE])


@nox.session
def patches(session: nox.Session) -> None:
    """Maintain the patch series: `-- check [--ref TAG]`, `-- apply --ref TAG --into DIR`,
    `-- refresh --from DIR`, `-- test --ref TAG`."""
    _install(session)
    session.run("python", "-m", "pipeline", "patches", *session.posargs)


@nox.session(default=False)
def track(session: nox.Session) -> None:
    """Follow upstream: every tag from v0.12.5 to the newest in the source, each patch's verdict, the build
    layout (in-tree ggml / fetched llama.cpp), go.mod's Go and the presets; `-- --build TARGET` also builds
    TARGET at every pinned tag. Markdown in dist/track.md, JSON in dist/track.json."""
    _install(session)
    session.run("python", "-m", "pipeline", "track", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite: unit tests, then the Docker tier (and the upstream tier with OLLAMA_SOURCE)."""
    _install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session(default=False)
def golden(session: nox.Session) -> None:
    """Rewrite the golden files of rendered templates from what the code renders now; review `git diff`."""
    _install(session, "test")
    session.run("pytest", "tests/unit/test_dockerfile.py", "--update-golden", "-q", *session.posargs)


@nox.session(default=False)
def release(session: nox.Session) -> None:
    """Assemble built targets into dist/release/ (archives, manifests, SHA256SUMS, notes):
    `nox -s release -- [TARGET...] [--dry-run]`; the release workflow publishes that folder."""
    _install(session)
    session.run("python", "-m", "pipeline", "release", *session.posargs)


@nox.session(default=False)
def publish(session: nox.Session) -> None:
    """Publish dist/release/ as the GitHub release of a tag with gh: a draft (made or reused), uploads
    that overwrite, a check of every asset, then publish; run again after any failure:
    `nox -s publish -- TAG [FOLDER] [--draft-only]`."""
    _install(session)
    session.run("python", "-m", "pipeline", "publish", *session.posargs)


@nox.session(default=False)
def lint(session: nox.Session) -> None:
    """Lint with ruff (rules in pyproject.toml [tool.ruff.lint]; `-- --fix` to apply safe fixes) and the
    GitHub workflows with zizmor (offline: its audits that ask the GitHub API are skipped); any zizmor
    finding fails."""
    # Pinned, in constraints.txt: a new release must not change what passes.
    session.install("--quiet", *CONSTRAINTS, "ruff", "zizmor", env=PIP_ENV)
    session.run("ruff", "check", "pipeline", "tests", "noxfile.py", *session.posargs)
    session.run("zizmor", "--offline", "--no-progress", ".github")


@nox.session(default=False)
def clean(session: nox.Session) -> None:
    """Remove the pipeline's cache folder, containers, images and volumes and say how much space that freed:
    `nox -s clean`, `-- --dry-run` to list only, `-- --cache-only` to leave Docker alone."""
    _install(session)
    session.run("python", "-m", "pipeline", "clean", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Measure the pipeline; numbers go to dist/bench.json (--output to change). No-op rebuild time and,
    with --cold, a cold build's time outside the toolchain (`nox -s bench -- cpu --cold`); --gpu: a few GPU
    sources for the target's archs against upstream's list; --backend-archs: the whole GPU backend cold once
    per arch list (`nox -s bench -- gfx1103 --backend-archs gfx1100,gfx1103 --backend-archs gfx1100`);
    as root, --disk: the peak disk of each release build job (`sudo nox -s bench -- --disk cpu gfx906`),
    --builder-twice: a builder built twice, package versions compared.
    """
    _install(session)
    session.run("python", "-m", "pipeline", "bench", *session.posargs)


@nox.session(default=False)
def memtest(session: nox.Session) -> None:
    """How Ollama's estimator places scenarios on GPUs, upstream against patched:
    `nox -s memtest -- [SCENARIO...] [--ref v0.12.5] [--host-go]`; JSON in dist/memtest.json."""
    _install(session)
    session.run("python", "-m", "pipeline", "memtest", *session.posargs)
