"""What each stage hands forward: frozen, typed values, one per stage.

    source ─▶ SourceTree ─▶ patches ─▶ PatchedTree ─┐
                               builder ─▶ BuilderImage ─┴▶ build ─▶ BuildResult ─▶ package ─▶ Packaged
    Packaged ─▶ verify ─▶ Verified ─▶ image ─▶ RuntimeImage

A stage takes the results of the stages it names in the stage table as keyword arguments and returns
its own; nothing is re-read from disk inside one run. Results that outlive a run (a finished build in
the cache) are written with to_json and read back with from_json by the stage that owns them.
"""

from __future__ import annotations

import dataclasses
import json
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.stages.manifest import Manifest
from pipeline.records import record


@record
class SourceTree:
    """The upstream tree of the pinned commit, exported into the cache (read-only for later stages)."""

    path: Path
    commit: str
    commit_time: int
    # Files a partial clone never fetched (left out of the tree and listed in the log).
    left_out: tuple[str, ...] = ()
    # The llama.cpp supplied into the tree (infra/llamacpp.DIR) for versions that fetch it: tag, commit.
    llama_cpp: tuple[str, str] | None = None


@record
class PatchedTree:
    """The source tree with the target's patches applied, in the cache."""

    path: Path
    source: SourceTree
    patches: tuple[str, ...]


@record
class BuilderImage:
    tag: str
    id: str


@record
class StepTime:
    step: str
    seconds: float


@record
class BuildResult:
    """Ollama's build output (`root`: bin/ollama, lib/ollama/...) and how it was made."""

    root: Path
    image: BuilderImage
    version: str
    source_date_epoch: int
    seconds: float
    steps: tuple[StepTime, ...]
    # GPU library -> the code objects read back out of it (gfx906, sass:sm_37, ...).
    code_objects: Mapping[str, tuple[str, ...]]
    # Every package installed in the builder, with its version (dpkg-query in the build container).
    builder_packages: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # rocBLAS Tensile files of other archs dropped from the output: (files, bytes).
    tensile_dropped: tuple[int, int] = (0, 0)

    def to_json(self) -> str:
        return json.dumps({
            "image": {"tag": self.image.tag, "id": self.image.id}, "version": self.version,
            "source_date_epoch": self.source_date_epoch, "seconds": self.seconds,
            "steps": [{"step": s.step, "seconds": s.seconds} for s in self.steps],
            "code_objects": {k: list(v) for k, v in self.code_objects.items()},
            "builder_packages": dict(self.builder_packages), "tensile_dropped": list(self.tensile_dropped),
        }, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, root: Path) -> BuildResult:
        d = json.loads(text)
        return cls(root=root, image=BuilderImage(**d["image"]), version=d["version"],
                   source_date_epoch=d["source_date_epoch"], seconds=d["seconds"],
                   steps=tuple(StepTime(**s) for s in d["steps"]),
                   code_objects=types.MappingProxyType({k: tuple(v) for k, v in d["code_objects"].items()}),
                   builder_packages=types.MappingProxyType(d.get("builder_packages", {})),
                   tensile_dropped=tuple(d.get("tensile_dropped", (0, 0))))


@record
class Packaged:
    """The archive in dist/<target>/ and its manifest (the one beside it, with the archive's sha256)."""

    archive: Path
    manifest: Manifest


@record
class Verified:
    """A package that passed verification on its floor."""

    package: Packaged
    suite: str
    version_output: str
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@record
class RuntimeImage:
    """The Docker image of a verified package, and its saved tarball for the release."""

    tag: str
    id: str
    tarball: Path
