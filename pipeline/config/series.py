"""The patch series: patches/NNNN-slug.patch in `git format-patch` form with a DEP-3 style header.

The header block sits in the commit message, one field per line:

    Description: what the patch does and why
    Author: who wrote it
    Origin: where it came from
    Upstream-Status: Pending | Submitted <url> | Backport <commit> | Inappropriate <why>
    Applies-To: >=0.12.4,<0.12.11       (a PEP 440 specifier over upstream versions)
    Targets: memory                     (groups of targets.toml's [groups], or target names)

A target carries the patches whose Applies-To admits its upstream version and whose Targets name it or
a group it belongs to, in file-name order. A patch that names groups needs no edit when a target joins
one: the target is added to the group in targets.toml, and the patch's bytes (and its siblings' builds)
stay as they are.
"""

from __future__ import annotations

import email.header
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from pipeline.config import loader, values
from pipeline.errors import ConfigError
from pipeline.hashing import file_sha256
from pipeline.records import record

NAME = re.compile(r"^(?P<number>\d{4})-(?P<slug>[a-z0-9][a-z0-9.-]*)\.patch$")
FIELDS = ("Description", "Author", "Origin", "Upstream-Status", "Applies-To", "Targets")
STATUS_KINDS = {"Pending": False, "Submitted": True, "Backport": True, "Inappropriate": True}
_FIELD_LINE = re.compile(r"^(?P<key>[A-Z][A-Za-z-]*):[ \t]*(?P<value>.*)$")


@record
class Patch:
    name: str
    path: Path
    sha256: str
    subject: str
    description: str
    author: str
    origin: str
    upstream_status: str
    applies_to: SpecifierSet
    # The targets that carry it: those its Targets field names, and the members of the groups it names.
    targets: tuple[str, ...]

    def admits(self, version: str | Version) -> bool:
        return self.applies_to.contains(Version(str(version)), prereleases=True)

    def record(self) -> dict:
        """What a build manifest says about the patch."""
        return {"name": self.name, "sha256": self.sha256, "subject": self.subject,
                "upstream_status": self.upstream_status, "applies_to": str(self.applies_to)}


def load(directory: Path, known_targets: Iterable[str] | None = None,
         groups: Mapping[str, Sequence[str]] | None = None) -> list[Patch]:
    """Every patch of the folder, validated, in series order. With `known_targets` (and the matrix's
    `groups`), the targets a header names are checked and its groups expanded."""
    if not directory.is_dir():
        return []
    patches = []
    numbers: dict[str, str] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".patch":
            continue
        m = NAME.match(path.name)
        if not m:
            raise ConfigError(f"{path}: patch names are NNNN-slug.patch (four digits, lower-case slug)")
        if m["number"] in numbers:
            raise ConfigError(f"{path}: number {m['number']} is also used by {numbers[m['number']]}")
        numbers[m["number"]] = path.name
        patches.append(parse(path, known_targets, groups))
    return patches


def parse(path: Path, known_targets: Iterable[str] | None = None,
          groups: Mapping[str, Sequence[str]] | None = None) -> Patch:
    try:
        loader.regular_file(path, "patch")
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the patch ({exc.strerror or exc})") from None
    head, sep, _diff = text.partition("\ndiff --git ")
    if not sep or not text.startswith("From "):
        raise ConfigError(f"{path}: not a `git format-patch` file (no 'From ' line or no diff)")
    head = head.split("\n---\n", 1)[0]  # the diffstat, when there is one
    subject = _subject(head, path)
    fields: dict[str, str] = {}
    for line in head.split("\n\n", 1)[-1].splitlines():
        m = _FIELD_LINE.match(line)
        if m and m["key"] in FIELDS:
            if m["key"] in fields:
                raise ConfigError(f"{path}: field {m['key']} appears twice")
            fields[m["key"]] = m["value"].strip()
    for key in FIELDS:
        if not fields.get(key):
            raise ConfigError(f"{path}: header field {key!r} is missing or empty (fields: "
                              f"{', '.join(FIELDS)})")
    status = fields["Upstream-Status"]
    kind, _, detail = status.partition(" ")
    if kind not in STATUS_KINDS:
        raise ConfigError(f"{path}: Upstream-Status must start with one of {', '.join(STATUS_KINDS)}, "
                          f"got {status!r}")
    if STATUS_KINDS[kind] and not detail.strip():
        raise ConfigError(f"{path}: Upstream-Status {kind} needs a detail (url, commit or reason)")
    try:
        spec = SpecifierSet(fields["Applies-To"])
        if not str(spec):
            raise InvalidSpecifier(fields["Applies-To"])
    except InvalidSpecifier:
        raise ConfigError(f"{path}: Applies-To {fields['Applies-To']!r} is not a version specifier "
                          "(e.g. >=0.12.4,<0.12.11)") from None
    if not values.admits_some(spec):
        raise ConfigError(f"{path}: Applies-To {fields['Applies-To']!r} admits no version (its bounds "
                          "contradict each other); give the range the patch applies to, such as "
                          ">=0.12.4,<0.12.11")
    named = tuple(fields["Targets"].replace(",", " ").split())
    if not named:
        raise ConfigError(f"{path}: Targets names no target; list the groups or targets that carry the patch "
                          "(such as 'Targets: memory' or 'Targets: gfx906 sm_37')")
    targets = named
    if known_targets is not None:
        known, groups = list(known_targets), dict(groups or {})
        carried: list[str] = []
        for name in named:
            if name not in known and name not in groups:
                raise ConfigError(f"{path}: Targets names {name!r}, which is not a target or a group of "
                                  f"targets.toml (targets: {', '.join(known)}; groups: "
                                  f"{', '.join(groups) or 'none'})")
            carried += [t for t in groups.get(name, (name,)) if t not in carried]
        targets = tuple(carried)
    return Patch(name=path.name, path=path, sha256=file_sha256(path), subject=subject,
                 description=fields["Description"], author=fields["Author"], origin=fields["Origin"],
                 upstream_status=status, applies_to=spec, targets=targets)


def _subject(head: str, path: Path) -> str:
    lines = head.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Subject: "):
            # format-patch folds long subjects onto indented continuation lines.
            parts = [line[len("Subject: "):]]
            for cont in lines[i + 1:]:
                if not cont.startswith((" ", "\t")):
                    break
                parts.append(cont.strip())
            raw = " ".join(parts)
            decoded = str(email.header.make_header(email.header.decode_header(raw)))
            return re.sub(r"^\[PATCH[^\]]*\]\s*", "", decoded)
    raise ConfigError(f"{path}: no Subject line")


def for_target(series: Sequence[Patch], target: str, version: str | Version) -> list[Patch]:
    return [p for p in series if target in p.targets and p.admits(version)]
