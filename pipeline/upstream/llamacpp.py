"""llama.cpp for the upstream versions that fetch it (v0.30 on): read the tag from the tree, supply the
pinned source, never let CMake fetch it.

From v0.30 Ollama's tree holds no ggml: LLAMA_CPP_VERSION names a llama.cpp tag (b9452 at v0.30.0) that
cmake/local.cmake clones at configure time unless FETCHCONTENT_SOURCE_DIR_LLAMA_CPP (or
OLLAMA_LLAMA_CPP_SOURCE) names a source folder. Here that source comes from LLAMA_CPP_SOURCE (a local
clone or mirror) or [upstream.llama_cpp] url, at the commit pinned in [upstream.llama_cpp.pins]: a tag
that is not pinned, or that moved, is refused like an Ollama tag. It is written into the exported tree
under DIR, so the source stage, `patches check` and `patches apply` all see the code a build compiles,
and a patch of the series reaches llama.cpp files as DIR/<path>.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import names
from pipeline.config.settings import Settings
from pipeline.config.targets import LlamaCpp
from pipeline.errors import SourceError
from pipeline.infra import git
from pipeline.infra.log import Log

# The file of Ollama's tree that names the llama.cpp tag (absent while ggml is in the tree).
VERSION_FILE = "LLAMA_CPP_VERSION"
# Where the supplied llama.cpp lies in an exported Ollama tree (a build passes it to CMake as
# FETCHCONTENT_SOURCE_DIR_LLAMA_CPP).
DIR = "llama.cpp"
ORIGIN = ("LLAMA_CPP_SOURCE", "llama.cpp")


def tag_in(gitdir: Path, commit: str, log: Log) -> str | None:
    """The llama.cpp tag an Ollama commit configures with; None for versions with ggml in the tree."""
    raw = git.read_blob(gitdir, commit, VERSION_FILE, log)
    if raw is None:
        return None
    tag = raw.decode(errors="replace").strip()
    if problem := names.ref_problem(tag):
        raise SourceError(f"{VERSION_FILE} of upstream {commit[:12]} holds {tag[:40]!r}, which is not a git "
                          f"tag ({problem}); this upstream commit cannot be built from a pinned llama.cpp")
    return tag


def pinned(config: LlamaCpp, tag: str, ref: str) -> str:
    """The pinned commit of a llama.cpp tag, or a one-line refusal saying how to pin it."""
    if tag not in config.pins:
        raise SourceError(
            f"upstream {ref} builds llama.cpp {tag} (its {VERSION_FILE}), which targets.toml does not pin; "
            f"add \"{tag}\" = \"<commit>\" under [upstream.llama_cpp.pins], with the commit from "
            f"`git rev-parse {tag}^{{commit}}` in a clone of llama.cpp you trust")
    return config.pins[tag]


def supply(tree: Path, tag: str, ref: str, config: LlamaCpp, settings: Settings, log: Log,
           paths: set[str] | None = None) -> str:
    """Write llama.cpp `tag` (as pinned) into tree/DIR; returns its commit. With `paths` (paths of the
    Ollama tree, as a patch names them), only those under DIR/ are written."""
    commit = pinned(config, tag, ref)
    url = settings.llama_cpp_source or config.url
    if not url:
        raise SourceError(f"upstream {ref} builds llama.cpp {tag}: set LLAMA_CPP_SOURCE to a clone or "
                          "mirror of llama.cpp (or [upstream.llama_cpp] url in targets.toml); the build "
                          "never fetches")
    gitdir = git.repository(url, [tag], settings.places, log, origin=ORIGIN)
    git.verify_tag(gitdir, tag, commit, url, log, pin="[upstream.llama_cpp.pins]")
    inner = None if paths is None else {p.removeprefix(f"{DIR}/") for p in paths if p.startswith(f"{DIR}/")}
    if inner is None or inner:
        git.export(gitdir, commit, tree / DIR, log, paths=inner)
    log.line(f"llama.cpp {tag} -> {commit} supplied from {url} as {DIR}/")
    return commit
