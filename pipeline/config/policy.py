"""Library policies: what the oldest system a package supports provides, as data.

A policy is pipeline/config/policies/<name>.toml, read into a frozen `Policy` with the same typed loader
and messages as targets.toml: the sonames the system provides (never bundled), the driver libraries
that must never be shipped, the highest symbol version per family (GLIBC, GLIBCXX, ...) the floor
defines, and the Debian suite of that floor (packages are verified in a clean container of it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.config import loader
from pipeline.config.paths import POLICIES
from pipeline.errors import ConfigError
from pipeline.records import record

_SONAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]*\.so(\.[0-9A-Za-z_]+)*")
_PREFIX = re.compile(r"[A-Z][A-Z0-9]*")
NUMERIC = re.compile(r"[0-9]+(\.[0-9]+)*")


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
        if "GLIBC" not in self.max_versions:
            raise ValueError("key 'max_versions' must set GLIBC (the glibc version of the floor)")
        for prefix, version in self.max_versions.items():
            if not _PREFIX.fullmatch(prefix):
                raise ValueError(f"key 'max_versions': {prefix!r} is not a version prefix such as GLIBC")
            if not NUMERIC.fullmatch(version):
                raise ValueError(f"key 'max_versions': {prefix} = {version!r} is not a version such as "
                                 "\"2.36\"")

    @property
    def glibc(self) -> str:
        return self.max_versions["GLIBC"]

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
