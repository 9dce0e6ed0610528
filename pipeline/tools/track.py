"""Follow upstream: every Ollama tag from a starting version to the newest, what of the series still
applies there and how that version builds.

    nox -s track [-- --since v0.12.5] [--rc] [--build TARGET] [--json FILE] [--markdown FILE]

Per tag (read from the source, never built unless asked):

* each patch's verdict, as `patches check` gives it (applies / conflicts (file, hunk) / already
  upstream / out of range); a patch out of range is also tried on its own (`probe`), so the report
  shows what a new range would take;
* the build layout: ``in-tree`` (ggml vendored under ml/backend/ggml/ggml, v0.12 to v0.24) or
  ``fetched`` (llama.cpp fetched by CMake at configure time from the tag in LLAMA_CPP_VERSION, v0.30
  on), with that llama.cpp tag;
* go.mod's Go version, the presets of interest (CUDA 11, ROCm 6, ROCm 7, Vulkan), whether the ROCm
  presets list gfx906 / gfx1103, and whether llm/memory.go exists (the memory workbench and patches
  0003/0004/0006/0007 need it: upstream deleted it in v0.12.11);
* the targets whose go steps would run a Go older than go.mod's `go` directive (``go_short``: the
  toolchain rules in targets.toml need a new entry);
* whether the tag is pinned in targets.toml (only pinned tags are built), and with ``--build TARGET``
  whether TARGET builds, packages and verifies at it.

Markdown for people, JSON for machines; the scheduled workflow `.github/workflows/track.yml`
publishes both.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from packaging.version import InvalidVersion, Version

from pipeline.config.settings import Settings
from pipeline.config.targets import Matrix, go_version, planned_go, tag_version
from pipeline.errors import PipelineError, UsageError, one_line
from pipeline.infra import git
from pipeline.infra.log import Log
from pipeline.records import record
from pipeline.tools import patchtool
from pipeline.upstream import layouts, llamacpp

PRESETS = ("CUDA 11", "ROCm 6", "ROCm 7", "Vulkan")
ARCHS = ("gfx906", "gfx1103")
_GO_LINE = re.compile(rb"^go\s+(\S+)\s*$", re.MULTILINE)


@record(positional=True)
class TagFacts:
    layout: str  # in-tree | fetched | unknown
    llama_cpp: str  # the llama.cpp tag a fetched layout configures with ("" in tree)
    go: str
    presets: tuple[str, ...]
    rocm_archs: tuple[str, ...]  # of ARCHS, those a ROCm preset lists
    memory_go: bool


def versions(tags: Sequence[str], since: str, rc: bool = False) -> list[str]:
    """The tags that are versions >= since, oldest first; pre-releases only with `rc`."""
    start = tag_version(since)
    found = []
    for tag in tags:
        if not tag.startswith("v"):
            continue
        try:
            v = Version(tag[1:])
        except InvalidVersion:
            continue
        if v.local or v.is_devrelease or v.is_postrelease or (v.is_prerelease and not rc):
            continue
        if v >= start:
            found.append((v, tag))
    return [tag for _, tag in sorted(found)]


def layout(gitdir: Path, commit: str, log: Log) -> TagFacts:
    """How the commit builds, read from its tree."""
    llama = git.read_blob(gitdir, commit, llamacpp.VERSION_FILE, log)
    if llama is not None:
        kind = "fetched"
    elif git.has_path(gitdir, commit, layouts.InTree.MARKER, log):
        kind = layouts.InTree.name
    else:
        kind = "unknown"
    gomod = git.read_blob(gitdir, commit, "go.mod", log) or b""
    m = _GO_LINE.search(gomod)
    presets: list[str] = []
    archs: set[str] = set()
    raw = git.read_blob(gitdir, commit, "CMakePresets.json", log)
    if raw:
        try:
            doc = json.loads(raw)
            for p in doc.get("configurePresets", []):
                if p.get("name") in PRESETS:
                    presets.append(p["name"])
                if str(p.get("name", "")).startswith("ROCm"):
                    listed = str(p.get("cacheVariables", {}).get("AMDGPU_TARGETS", "")).split(";")
                    archs.update(a for a in ARCHS if a in listed)
        except (ValueError, AttributeError, TypeError):
            log.line(f"warning: CMakePresets.json of {commit[:12]} is not the JSON expected; presets unknown")
    return TagFacts(layout=kind, llama_cpp=(llama or b"").decode(errors="replace").strip(),
                  go=m[1].decode() if m else "", presets=tuple(p for p in PRESETS if p in presets),
                  rocm_archs=tuple(a for a in ARCHS if a in archs),
                  memory_go=git.has_path(gitdir, commit, "llm/memory.go", log))


def report(matrix: Matrix, settings: Settings, log: Log, *, since: str = "v0.12.5", rc: bool = False,
           build: Callable[[str], dict] | None = None, build_target: str = "") -> dict:
    """The tracking report as data. `build(tag)` (given with --build) builds a pinned tag and returns
    {"result": "builds and verifies" | "fails", "detail": ...}."""
    url = settings.source or next(iter(matrix.targets.values())).source.url
    if git.is_local(url):
        gitdir = git.repository(url, [], settings.places, log)
        all_tags = git.local_tags(gitdir, log)
    else:
        all_tags = git.remote_tags(url, log)
    tags = versions(list(all_tags), since, rc)
    if not tags:
        raise UsageError(f"no upstream tag from {since} on in {url}; check --since and the source's tags")
    if not git.is_local(url):
        gitdir = git.repository(url, tags, settings.places, log)
        # A remote tag may name a tree or a blob: only the tags that are commits here are reported.
        for tag in list(tags):
            if git.commit_of(gitdir, tag, log) is None:
                log.line(f"tag {tag} is not a commit: left out")
                tags.remove(tag)
        if not tags:
            raise UsageError(f"no upstream tag from {since} on in {url} names a commit")
    verdicts = patchtool.check(matrix, settings, tags, log, probe=True, gitdir=gitdir)
    by_tag: dict[str, list[patchtool.Verdict]] = {}
    for v in verdicts:
        by_tag.setdefault(v.ref, []).append(v)
    rows = []
    for tag in tags:
        commit = all_tags[tag]
        found = layout(gitdir, commit, log)
        pinned = matrix.pins.get(tag)
        row = {"tag": tag, "commit": commit,
               **{k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(found).items()},
               "go_short": go_short(matrix, tag, found.go),
               "pinned": "yes" if pinned == commit else ("moved" if pinned else "no"),
               # Whether the source stage can supply this tag's llama.cpp ([upstream.llama_cpp.pins]).
               "llama_cpp_pinned": bool(found.llama_cpp) and found.llama_cpp in matrix.llama_cpp.pins,
               "patches": {v.patch: {"verdict": v.verdict, "detail": v.detail, "probe": v.probe,
                                     "targets": list(v.targets)} for v in by_tag.get(tag, [])}}
        if build is not None:
            if pinned != commit:
                row["build"] = {"result": "not pinned" if not pinned else "refused: tag moved",
                                "detail": f"pin {tag} in [upstream.pins] to build it"}
            else:
                row["build"] = build(tag)
        rows.append(row)
    counts = Counter(p["verdict"] for r in rows for p in r["patches"].values())
    alone = Counter(p["probe"].split(" (")[0] for r in rows for p in r["patches"].values() if p["probe"])
    return {"source": url, "since": since, "rc": rc, "build_target": build_target,
            "patches": [p.name for p in matrix.patches(settings.patches_dir)],
            "tags": rows, "summary": {"tags": len(rows), "verdicts": dict(sorted(counts.items())),
                                      "out_of_range_alone": dict(sorted(alone.items())),
                                      "layouts": dict(Counter(r["layout"] for r in rows))}}


def go_short(matrix: Matrix, tag: str, gomod_go: str) -> list[str]:
    """The targets (admitting `tag`) whose go steps would run a Go older than go.mod's `go` directive
    (builds run with GOTOOLCHAIN=local, so they would fail): "target: planned < needed" each."""
    try:
        needed = go_version(gomod_go)
    except PipelineError:
        return []
    short = []
    for t in matrix.targets.values():
        if not t.admits(tag):
            continue
        have = planned_go(t, matrix.builders[t.builder], tag)
        if have and go_version(have) < needed:
            short.append(f"{t.name}: Go {have} < {gomod_go}")
    return short


def builder(matrix: Matrix, settings: Settings, target: str, run: Callable) -> Callable[[str], dict]:
    """build(tag) for report(): the target at that pinned tag through `run(plan)` (the orchestrator)."""
    from pipeline import stages  # the CLI's layer; tools may use it

    if target not in matrix.targets:
        raise UsageError(f"--build {target!r} is not a target; known: {', '.join(matrix.targets)}")

    def build(tag: str) -> dict:
        t = matrix.targets[target]
        if not t.admits(tag):
            return {"result": "not built", "detail": f"{target} builds upstream {t.versions}"}
        try:
            plan = stages.plan_for(matrix, matrix.at(t, tag), settings)
            outcome = run(plan)
        except PipelineError as exc:
            return {"result": "fails", "detail": one_line(str(exc))}
        return {"result": "builds and verifies", "detail": str(outcome.archive)}
    return build


def _cell(p: dict) -> str:
    text = p["verdict"]
    if p["verdict"] in ("conflicts", "blocked") and p["detail"]:
        text += f" ({p['detail']})"
    if p["probe"]:
        text += f"; alone: {p['probe']}"
    return text


SHORT = {"applies": "A", "conflicts": "C", "already upstream": "U", "out of range": "-", "not carried": "n",
         "blocked": "X"}


def render(rep: dict) -> str:
    """The report as markdown: a summary, one row per tag, and the patches' verdicts per tag."""
    s = rep["summary"]
    lines = [f"# Upstream tracking: {s['tags']} tags from {rep['since']}", "",
             f"Source: `{rep['source']}`. Verdicts: "
             + ", ".join(f"{k} {n}" for k, n in s["verdicts"].items()) + " (out of range, tried alone: "
             + (", ".join(f"{k} {n}" for k, n in s["out_of_range_alone"].items()) or "none") + "). Layouts: "
             + ", ".join(f"{k} {n}" for k, n in s["layouts"].items()) + ".", "",
             "Patches: " + ", ".join(f"P{i + 1} = `{n}`" for i, n in enumerate(rep["patches"])) + ". "
             "Cells: A applies, C conflicts, U already upstream, - out of range (a/c/u: what it would do "
             "on its own), B out of range and upstream has it (the patch's Backport commit is in the tag), "
             "X blocked (it does not apply after an earlier patch that conflicts), n not carried.", "",
             "llm/memory.go (the estimator patches 0003/0004/0006/0007 and the memory workbench change) "
             "exists only up to v0.12.10: from v0.12.11 layers are placed from the memory the runner "
             "reports (createLayout), which reserves each GPU's own graph, so the graph-memory patches "
             "have nothing left to change there.", ""]
    build = bool(rep["build_target"])
    head = ["tag", "layout", "llama.cpp", "go", "presets", "ROCm archs", "memory.go", "pinned",
            *(f"P{i + 1}" for i in range(len(rep["patches"])))]
    if build:
        head.append(f"build {rep['build_target']}")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rep["tags"]:
        llama = r["llama_cpp"] + ("" if r["llama_cpp_pinned"] else " (not pinned)") if r["llama_cpp"] else "-"
        cells = [r["tag"], r["layout"], llama, r["go"] or "?", ", ".join(r["presets"]) or "-",
                 ", ".join(r["rocm_archs"]) or "-", "yes" if r["memory_go"] else "no", r["pinned"]]
        for name in rep["patches"]:
            p = r["patches"].get(name, {"verdict": "not carried", "probe": ""})
            mark = SHORT.get(p["verdict"], "?")
            if "upstream has it" in p.get("detail", ""):
                mark = "B"
            elif p["verdict"] == "out of range" and p["probe"]:
                mark = SHORT.get(p["probe"].split(" (")[0], "?").lower()
            cells.append(mark)
        if build:
            cells.append(r["build"]["result"])
        lines.append("| " + " | ".join(cells) + " |")
    short = [(r["tag"], r.get("go_short", [])) for r in rep["tags"] if r.get("go_short")]
    if short:
        lines += ["", "## Go older than go.mod's", "",
                  "Builds run with GOTOOLCHAIN=local: add a rule to `[defaults.go] toolchains` and a "
                  "toolchain to the builders' `go_toolchains`.", ""]
        lines += [f"- {tag}: {'; '.join(items)}" for tag, items in short]
    details = [(r["tag"], name, _cell(p)) for r in rep["tags"] for name, p in r["patches"].items()
               if p["verdict"] in ("conflicts", "already upstream")]
    since: dict[str, str] = {}
    for r in rep["tags"]:
        for name, p in r["patches"].items():
            if "upstream has it" in p.get("detail", "") and name not in since:
                since[name] = r["tag"]
    if since:
        lines += ["", "## Upstream has these", ""]
        lines += [f"- `{name}`: from {tag} on (its Backport commit is in that tag's history)"
                  for name, tag in since.items()]
    if details:
        lines += ["", "## Conflicts and patches already upstream", ""]
        lines += [f"- {tag} `{name}`: {text}" for tag, name, text in details]
    return "\n".join(lines) + "\n"
