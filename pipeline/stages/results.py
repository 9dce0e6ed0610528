"""What each stage hands forward: frozen, typed values, one per stage.

    source ─▶ SourceTree ─▶ patches ─▶ PatchedTree ─┐
                               builder ─▶ BuilderImage ─┴▶ build ─▶ BuildResult ─▶ package ─▶ Packaged
    Packaged ─▶ verify ─▶ Verified ─▶ image ─▶ RuntimeImage

A stage takes the results of the stages it names in the stage table as keyword arguments and returns
its own; nothing is re-read from disk inside one run. Every result serialises itself: `to_json` (its
fields, less those `from_json` gives back) and `from_json(text, where, **needs)`, which reads it back
for the record's folder `where` and the results of the stages it needs, refusing a record of another
shape with a ConfigError. The orchestrator keeps a stage's record that way and reuses it while the
stage's hash is unchanged (pipeline.orchestrate).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pipeline.config import loader
from pipeline.errors import ConfigError
from pipeline.formats import PackageLayout
from pipeline.records import record
from pipeline.stages.manifest import Manifest, plain
from pipeline.upstream import layouts


class Result:
    """The serialisation every result type shares: its fields as a JSON object, except those named
    by `_given` (paths inside the record's folder, results of other stages), which `_give` returns."""

    __slots__ = ()
    _given: ClassVar[tuple[str, ...]] = ()

    def to_record(self) -> dict[str, Any]:
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)
                if f.name not in self._given and getattr(self, f.name) is not None}

    def to_json(self) -> str:
        return json.dumps(self.to_record(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def _give(cls, where: Path, needs: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    @classmethod
    def from_record(cls, doc: Any, where: Path, **needs: Any):
        return loader.build(cls, doc, f"{where}:", given=cls._give(where, needs))

    @classmethod
    def from_json(cls, text: str, where: Path, **needs: Any):
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc})") from None
        return cls.from_record(doc, where, **needs)


# The folder a tree stage keeps its tree in, beside its record.
TREE = "tree"


@record
class SourceTree(Result):
    """The upstream tree of the pinned commit, exported into the cache (read-only for later stages)."""

    _given = ("path",)

    path: Path
    commit: str
    commit_time: int
    # Files a partial clone never fetched (left out of the tree and listed in the log).
    left_out: tuple[str, ...] = ()
    # The llama.cpp supplied into the tree (upstream/llamacpp.DIR) for versions that fetch it: tag, commit.
    llama_cpp: tuple[str, str] | None = None

    @classmethod
    def _give(cls, where, needs):
        return {"path": where / TREE}


@record
class PatchedTree(Result):
    """The source tree with the target's patches applied, in the cache."""

    _given = ("path", "source")

    path: Path
    source: SourceTree
    patches: tuple[str, ...]

    @classmethod
    def _give(cls, where, needs):
        return {"path": where / TREE, "source": needs["source"]}


@record
class BuilderImage(Result):
    tag: str
    id: str


@record
class StepTime:
    step: str
    seconds: float


@record
class BuildResult(Result):
    """Ollama's build output (`root`: bin/ollama, lib/ollama/...) and how it was made."""

    _given = ("root",)

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
    # The host builder that compiled the CPU backends and bin/ollama, and its packages; None when the
    # builder compiled everything.
    host_image: BuilderImage | None = None
    host_packages: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def _give(cls, where, needs):
        return {"root": where / layouts.OUTPUT}


@record
class Packaged(Result):
    """The archive in dist/<target>/ and its manifest (the one beside it, with the archive's sha256).
    Its record is that manifest, written with the archive by the package stage."""

    archive: Path
    manifest: Manifest

    def to_json(self) -> str:
        return self.manifest.to_json()

    @classmethod
    def from_record(cls, doc, where, **needs):
        manifest = Manifest.from_dict(doc, str(where / PackageLayout.BESIDE))
        if manifest.archive is None:
            raise ConfigError(f"{where / PackageLayout.BESIDE}: names no archive")
        return cls(archive=where / manifest.archive.name, manifest=manifest)


@record
class Verified(Result):
    """A package that passed verification on its floor."""

    _given = ("package",)

    package: Packaged
    suite: str
    version_output: str
    # The sha256 of the archive verified.
    sha256: str
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def _give(cls, where, needs):
        return {"package": needs["package"]}


@record
class RuntimeImage(Result):
    """The Docker image of a verified package, and its saved tarball for the release."""

    tag: str
    id: str
    # The saved image, in the record's folder, and its sha256.
    tarball: Path
    sha256: str

    def to_record(self) -> dict[str, Any]:
        return {"tag": self.tag, "id": self.id, "tarball": self.tarball.name, "sha256": self.sha256}

    @classmethod
    def from_record(cls, doc, where, **needs):
        if not isinstance(doc, dict) or not isinstance(doc.get("tarball"), str) or "/" in doc["tarball"]:
            raise ConfigError(f"{where}: not a runtime image record")
        fields = {k: v for k, v in doc.items() if k != "tarball"}
        return loader.build(cls, fields, f"{where}:", given={"tarball": where / doc["tarball"]})
