"""Library policies: what the oldest system a package supports provides, as data.

A policy is pipeline/config/policies/<name>.toml, read into a frozen `Policy` with the same typed loader
and messages as targets.toml: the sonames the system provides (never bundled), the driver libraries
that must never be shipped, the highest symbol version per family (GLIBC, GLIBCXX, ...) the floor
defines, and the Debian suite of that floor (packages are verified in a clean container of it). A policy
may also lower the package to its floor (`floor_pass`: the glibc floor pass of pipeline.closure.floor),
carry newer copies of system libraries some objects need (`carry`), and name the suites and the server
log lines verification asks for (`[verify]`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.config import loader
from pipeline.config.paths import GLIBC_TABLES, POLICIES
from pipeline.errors import ConfigError
from pipeline.records import record

_SONAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]*\.so(\.[0-9A-Za-z_]+)*")
_PREFIX = re.compile(r"[A-Z][A-Z0-9]*")
NUMERIC = re.compile(r"[0-9]+(\.[0-9]+)*")
_SUITE = re.compile(r"[a-z][a-z0-9-]*")


@record
class FloorPass:
    """The glibc floor pass (pipeline.closure.floor): the package's libraries lowered to this floor."""

    # The floor's glibc: pipeline/closure/glibc/<glibc>.json, read from that suite's libc6.
    glibc: str
    # The policy a target that turns the pass off gets (package.floor_pass = false): the floor its
    # libraries have as built.
    without: str
    # A newer glibc's table: every rewritten reference must bind there too. Empty: not checked.
    newer: str = ""


@record
class Verification:
    """How packages of this floor are verified."""

    # The Debian suites the package is verified on, each in a clean container: the floor's own suite
    # and newer ones (an old and a new glibc must both bind). Empty: the floor's suite only.
    suites: tuple[str, ...] = ()
    # Regular expressions the server log of the model run (OLLAMA_DEBUG=2, no GPU) must match on every
    # suite: the GPU backend loaded and found no device, say.
    server_log: tuple[str, ...] = ()


@record
class Policy:
    """What the oldest runtime system a package supports provides, and what must never be shipped."""

    name: str
    description: str
    # The highest version each system library family defines at the floor, by version prefix
    # (GLIBC = "2.36" allows GLIBC_2.36 and older). Versions needed from `provided` libraries are
    # checked against it; GLIBC is required.
    max_versions: Mapping[str, str]
    # Sonames the runtime system provides: relied on, never bundled, their needs not walked.
    provided: tuple[str, ...]
    # Sonames that must not be shipped even when found (driver libraries: libcuda.so.1).
    never_bundle: tuple[str, ...] = ()
    # The Debian suite of the floor system: packages are verified in a clean container of it.
    suite: str = ""
    # Libraries the host must install for the package to load (the Vulkan loader, libvulkan.so.1): never
    # bundled, like driver libraries, but verify installs `host_packages` on the floor first and then
    # requires them to resolve.
    host_libraries: tuple[str, ...] = ()
    host_packages: tuple[str, ...] = ()
    # The GPU drivers a host adds as Debian packages of the floor (Mesa's Vulkan drivers: RADV for AMD
    # GPUs, lavapipe on the CPU): the runtime image installs them with host_packages, and verify installs
    # them for the run on a software device (pipeline.smoke.lavapipe). Never bundled.
    driver_packages: tuple[str, ...] = ()
    # Provided libraries a package carries a copy of anyway, beside the objects that need a version of
    # them the floor lacks (the builder's libstdc++.so.6 beside ROCm libraries built with a newer gcc).
    carry: tuple[str, ...] = ()
    floor_pass: FloorPass | None = None
    verify: Verification = dataclasses.field(default_factory=Verification)

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for key in ("provided", "never_bundle"):
            for soname in getattr(self, key):
                if not _SONAME.fullmatch(soname):
                    raise ValueError(f"key {key!r}: {soname!r} is not a soname (exact names such as "
                                     "libc.so.6; no paths, no patterns)")
                if soname in seen:
                    where = "twice" if seen[soname] == key else f"in both {seen[soname]!r} and {key!r}"
                    raise ValueError(f"key {key!r}: {soname!r} is listed {where}")
                seen[soname] = key
        for soname in self.host_libraries:
            if soname not in self.never_bundle:
                raise ValueError(f"key 'host_libraries': {soname!r} must also be in never_bundle (the host's "
                                 "copy is used, never one from the package)")
        if bool(self.host_libraries) != bool(self.host_packages):
            raise ValueError("host_libraries and host_packages go together: the packages provide the "
                             "libraries")
        for key in ("host_packages", "driver_packages"):
            for pkg in getattr(self, key):
                if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", pkg):
                    raise ValueError(f"key {key!r}: {pkg!r} is not a Debian package name")
        if self.driver_packages and not self.host_packages:
            raise ValueError("key 'driver_packages' needs host_packages: a driver is loaded through the host "
                             "library the package links (the Vulkan loader)")
        for soname in self.carry:
            if soname not in self.provided:
                raise ValueError(f"key 'carry': {soname!r} is not in provided (a carried library is a system "
                                 "library the package brings a newer copy of)")
        if self.floor_pass is not None:
            self._check_floor_pass(self.floor_pass)
        for suite in self.verify.suites:
            if not _SUITE.fullmatch(suite):
                raise ValueError(f"[verify] suites: {suite!r} is not a Debian suite name")
        if self.verify.suites and self.suite not in self.verify.suites:
            raise ValueError(f"[verify] suites must include the floor's suite {self.suite!r}")
        for pattern in self.verify.server_log:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"[verify] server_log: {pattern!r} is not a regular expression "
                                 f"({exc})") from None
        if "GLIBC" not in self.max_versions:
            raise ValueError("key 'max_versions' must set GLIBC (the glibc version of the floor)")
        for prefix, version in self.max_versions.items():
            if not _PREFIX.fullmatch(prefix):
                raise ValueError(f"key 'max_versions': {prefix!r} is not a version prefix such as GLIBC")
            if not NUMERIC.fullmatch(version):
                raise ValueError(f"key 'max_versions': {prefix} = {version!r} is not a version such as "
                                 "\"2.36\"")

    def _check_floor_pass(self, fp: FloorPass) -> None:
        for key in ("glibc", "newer"):
            name = getattr(fp, key)
            if key == "newer" and not name:
                continue
            table = GLIBC_TABLES / f"{name}.json"
            if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", name) or not table.is_file():
                known = ", ".join(sorted(p.stem for p in GLIBC_TABLES.glob("*.json")))
                raise ValueError(f"[floor_pass] {key}: no glibc table {name!r} (known: {known})")
            if key == "glibc":
                found = json.loads(table.read_text(encoding="utf-8")).get("glibc")
                if found != self.max_versions.get("GLIBC"):
                    raise ValueError(f"[floor_pass] glibc: table {name!r} is glibc {found}, but max_versions "
                                     f"GLIBC is {self.max_versions.get('GLIBC')}; they must agree")
        if fp.without == self.name or not (POLICIES / f"{fp.without}.toml").is_file():
            raise ValueError(f"[floor_pass] without: {fp.without!r} is not another policy "
                             f"(known: {', '.join(available_policies())})")

    @property
    def glibc(self) -> str:
        return self.max_versions["GLIBC"]

    @property
    def verify_suites(self) -> tuple[str, ...]:
        """The suites packages are verified on, the floor's first."""
        rest = tuple(s for s in self.verify.suites if s != self.suite)
        return (self.suite, *rest) if self.suite else rest

    def allows(self, version_name: str) -> bool:
        """Whether a symbol version (GLIBC_2.34, GLIBCXX_3.4.30) exists on the floor's system.

        Prefixes the policy does not cap are allowed; a non-numeric version of a capped prefix
        (GLIBC_PRIVATE) is not.
        """
        prefix, _, version = version_name.rpartition("_")
        if prefix not in self.max_versions:
            return True
        if not NUMERIC.fullmatch(version):
            return False
        return vkey(version) <= vkey(self.max_versions[prefix])


def available_policies() -> list[str]:
    return sorted(p.stem for p in POLICIES.glob("*.toml"))


def load_policy(name_or_path: str | Path) -> Policy:
    """A policy by name (pipeline/config/policies/<name>.toml) or by path to a .toml file."""
    text_arg = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text_arg or text_arg.endswith(".toml"):
        path = Path(name_or_path)
    else:
        path = POLICIES / f"{text_arg}.toml"
        if not path.is_file():
            known = available_policies()
            raise ConfigError(f"unknown library policy {text_arg!r}{loader.hint(text_arg, known)}; "
                              f"known: {', '.join(known)}")
    return parse_policy(loader.read(path, "library policy"), path)


def parse_policy(doc: Mapping[str, Any], path: Path) -> Policy:
    where = f"{path}: [policy]"
    if "name" in doc:
        raise ConfigError(f"{where} key 'name' is not allowed: a policy is named by its file")
    table = {**doc, "name": Path(path).stem}
    return loader.build(Policy, table, where)


def vkey(version: str) -> tuple[int, ...]:
    parts = [int(p) for p in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def held_to(policy: Policy, floor_pass: bool) -> Policy:
    """The policy a package is held to: `policy`; or, for a target that turns the floor pass off
    (package.floor_pass = false), the policy the floor pass names as `without`."""
    if policy.floor_pass is None or floor_pass:
        return policy
    return load_policy(policy.floor_pass.without)
