"""The package manifest: one schema, in one module, read and written only through it.

Two copies exist (their names are pipeline.formats.PackageLayout's): lib/ollama/manifest.json inside
the archive (everything but the archive's own checksum) and dist/<target>/manifest.json beside it (with
`archive`: name, size, sha256). Release
assembly, verification and the runtime image read it with `Manifest.load`, which refuses a file that
does not match the schema with one line naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.config import loader, values
from pipeline.config.values import checked
from pipeline.errors import ConfigError, PackageError
from pipeline.records import record

VERSION = 2


@record
class Upstream:
    url: str
    tag: str
    commit: str
    version: str


@record
class PatchRecord:
    name: str
    sha256: str
    subject: str
    upstream_status: str
    applies_to: str


@record
class BuilderRecord:
    name: str
    image: str
    image_id: str
    template: str
    suite: str = checked(values.DEBIAN_SUITE)
    packages: tuple[str, ...]
    # Every package installed in the builder with its version (dpkg-query in the build container).
    package_versions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Stand-ins of driver libraries in the image, for verify's load test only (never in the package).
    driver_stubs: Mapping[str, str] = dataclasses.field(default_factory=dict)


@record
class FileRecord:
    """A regular file (size, sha256, mode) or a symbolic link (link): a file without its checksum and size
    is refused, so no file of a package goes unchecked."""

    path: str
    size: int | None = None
    sha256: str | None = None
    mode: str | None = None
    link: str | None = None

    def __post_init__(self) -> None:
        if not self.path or self.path.startswith("/") or "\0" in self.path or ".." in self.path.split("/"):
            raise ValueError(f"file {self.path!r}: not a path inside the package")
        if self.link is not None:
            if self.sha256 is not None or self.size is not None:
                raise ValueError(f"file {self.path!r}: a link has no size or sha256")
            return
        if self.sha256 is None or not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"file {self.path!r}: no sha256 (64 hex digits); every file of a package is "
                             "checked by its checksum")
        if self.size is None or self.size < 0:
            raise ValueError(f"file {self.path!r}: no size")
        if self.mode not in ("0644", "0755"):
            raise ValueError(f"file {self.path!r}: mode {self.mode!r} is not 0644 or 0755")


@record
class Tensile:
    serves: tuple[str, ...] = ()
    pruned_files: int = 0
    pruned_bytes: int = 0


@record
class Floor:
    """The oldest system the package runs on: its library policy and what that system provides."""

    # By name only: verify loads pipeline/config/policies/<policy>.toml, never a path from an archive.
    policy: str = checked(values.NAME)
    suite: str = checked(values.DEBIAN_SUITE)
    # The highest symbol version per family the package's ELF files need (GLIBC_2.31, GLIBCXX_3.4.28, ...)
    needs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # The highest the floor system defines (the policy's max_versions).
    allows: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # The suites the package is verified on (the floor's first).
    verified_on: tuple[str, ...] = ()
    # The glibc the floor pass lowered the package's libraries to ("" without the pass), and the
    # compatibility library it added: soname, sha256, the folders it lies in, what it exports.
    lowered_to: str | None = None
    compat: Mapping[str, Any] | None = None


@record
class HostNeed:
    """One thing the running system must provide: the highest symbol version of a family (GLIBC,
    GLIBCXX, CXXABI, ...) the package's ELF files need from a system library, and that library."""

    family: str
    version: str
    # The system library that must define it ("" where the closure's record does not say).
    library: str


@record
class ArchiveRecord:
    name: str
    size: int
    sha256: str


@record
class Manifest:
    manifest_version: int
    target: str
    description: str
    version: str
    upstream: Upstream
    patches: tuple[PatchRecord, ...]
    builder: BuilderRecord
    backends: tuple[str, ...]
    gpu_archs: tuple[str, ...]
    runtime_env: Mapping[str, str]
    hashes: Mapping[str, str]
    source_date_epoch: int
    files: tuple[FileRecord, ...]
    floor: Floor | None = None
    # The library closure's record (pipeline.closure.walk.Closure.to_dict) and where each came from.
    libraries: Mapping[str, Any] | None = None
    library_packages: Mapping[str, str] = dataclasses.field(default_factory=dict)
    gpu_code_objects: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    tensile: Tensile = dataclasses.field(default_factory=Tensile)
    # What packaging changed in bundled files (e.g. GPU code of other archs removed), by package path.
    stripped: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # The builder that compiled the CPU backends and bin/ollama, where it is not `builder`.
    host_builder: BuilderRecord | None = None
    # What the glibc floor pass changed, by package path: every rewritten reference (symbol, old and new
    # version, where it binds on the floor, why), needs removed or renamed, DT_NEEDED added, the file's
    # sha256 before and after, and the GPU code sections with their unchanged sha256 and address.
    lowered: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Only in the copy beside the archive: the archive's own name, size and sha256.
    archive: ArchiveRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        return plain(self)

    def host_needs(self) -> tuple[HostNeed, ...]:
        """What the system the package runs on must provide, per family: the floor's needs (after any
        floor pass, what the ELF files reference from system libraries), each with the library the
        closure's record names for it. Empty without a floor (no library policy)."""
        if self.floor is None:
            return ()
        uses = (self.libraries or {}).get("max_versions") or {}
        return tuple(HostNeed(family=family, version=version,
                              library=str((uses.get(family) or {}).get("library", "")))
                     for family, version in sorted(self.floor.needs.items()))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def inside(self) -> bytes:
        """The copy that goes into the archive: without the archive's own checksum."""
        return dataclasses.replace(self, archive=None).to_json().encode()

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> Manifest:
        if not isinstance(doc, dict):
            raise PackageError(f"{where}: not a manifest (expected a JSON object)")
        if doc.get("manifest_version") != VERSION:
            raise PackageError(f"{where}: manifest version {doc.get('manifest_version')!r}, this pipeline "
                               f"reads version {VERSION}; rebuild the package with this pipeline")
        try:
            return loader.build(cls, doc, f"{where}:")
        except ConfigError as exc:
            raise PackageError(f"{exc}; the manifest does not match this pipeline's schema "
                               "(rebuild the package)") from None

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PackageError(f"{path}: no manifest; rebuild the package") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PackageError(f"{path}: cannot read the manifest ({exc})") from None
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise PackageError(f"{path}: not valid JSON ({exc}); rebuild the package") from None
        return cls.from_dict(doc, str(path))


def plain(value: Any) -> Any:
    """A record as JSON-ready data: records as objects (fields that are None left out), mappings as
    objects, tuples as lists."""
    if dataclasses.is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if getattr(value, f.name) is not None}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value
