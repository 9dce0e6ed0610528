"""What each string of a data file may hold, by what reads it: the kinds of value, checked where the value
is read (the loader checks every field that declares one) and nowhere trusted later.

A field of a schema declares its kind with `checked(KIND)` (for a table of strings, `keys=` the kind of
its keys): the loader refuses a value outside it with one line naming the file, the table, the key and
what the key accepts. Every kind refuses control characters (a newline would start a new Dockerfile
instruction or shell command). Only TEXT (descriptions) and CMAKE_VALUE (a CMake cache value, passed to
cmake as one argument) take spaces, quotes and `;`; templates render them quoted for their context
(pipeline.infra.templates). Everything else is a word of a small alphabet: Debian package and suite
names, environment keys and values, CMake names, absolute folders, relative folders that stay inside
their parent, image references by Docker's grammar, version specifiers that admit a version.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from pipeline.config import names
from pipeline.records import record

# Characters a shell, a Dockerfile or a format would read, named when a word holds one.
_SPECIAL = ";&|<>()$`\\\"'*?[]{}!#~%^"
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@record(positional=True)
class Kind:
    """A kind of value: its name, what it accepts (for messages), a value it accepts (for tests) and the
    check (None, or why the value is not of the kind)."""

    name: str
    rule: str
    example: str
    problem: Callable[[str], str | None]

    def check(self, value: str) -> str | None:
        if _CONTROL.search(value):
            return "it holds a newline or another control character"
        return self.problem(value)


def _word(pattern: str, what: str, *, empty: bool = False) -> Callable[[str], str | None]:
    compiled = re.compile(pattern)

    def problem(value: str) -> str | None:
        if not value:
            return None if empty else "it is empty"
        if compiled.fullmatch(value):
            return None
        if any(c.isspace() for c in value):
            return "it holds a space"
        if odd := next((c for c in value if c in _SPECIAL and not compiled.fullmatch(c * 2)), None):
            return f"it holds {odd!r}"
        return f"it is not {what}"
    return problem


def _text(value: str) -> str | None:
    return None


def _url(value: str) -> str | None:
    return names.url_problem(value) if value else None


def _download_url(value: str) -> str | None:
    """A download's location (the default of a build argument in a Dockerfile): an http(s) or file URL, or
    one that starts with a registry placeholder ({pypi_files}, {go_proxy})."""
    rest = value
    for placeholder in ("{pypi_files}", "{go_proxy}"):
        if value.startswith(placeholder + "/"):
            rest = "https://placeholder" + value[len(placeholder):]
    return names.url_problem(rest, names.MIRROR_SCHEMES, local=False)


def _ref(value: str) -> str | None:
    return names.ref_problem(value)


def _tag(value: str) -> str | None:
    """An upstream tag: a git tag that is a version (v0.12.5)."""
    if problem := names.ref_problem(value):
        return problem
    try:
        Version(value.removeprefix("v"))
    except InvalidVersion:
        return "it is not a version tag such as v0.12.5"
    return None


def _abs_dir(value: str) -> str | None:
    if not value.startswith("/"):
        return "it is not an absolute folder"
    if not re.fullmatch(r"/[A-Za-z0-9._+/-]*", value):
        return "letters, digits and . _ + - / only"
    if any(part in (".", "..") for part in value.split("/")) or "//" in value:
        return "it holds '.', '..' or '//'"
    return None


def _rel_dir(value: str) -> str | None:
    if not value:
        return None
    if value.startswith(("/", "-")) or not re.fullmatch(r"[A-Za-z0-9._+/-]+", value):
        return "not a relative folder of letters, digits and . _ + - /"
    if any(part in ("", ".", "..") for part in value.split("/")):
        return "it would leave its folder (a part is empty, '.' or '..')"
    return None


def _specifier(value: str) -> str | None:
    return specifier_problem(value)


def specifier_problem(value: str) -> str | None:
    """Why `value` is not a PEP 440 specifier that admits some version, or None."""
    if not re.fullmatch(r"[0-9A-Za-z.,<>=!~*+]+", value):
        return "not a version specifier such as \">=0.12.4,<0.12.11\" (no spaces)"
    try:
        spec = SpecifierSet(value)
    except InvalidSpecifier:
        return "not a version specifier such as \">=0.12.4,<0.12.11\""
    if not len(spec):
        return "it names no version bound"
    if not admits_some(spec):
        return "it admits no version (its bounds contradict each other)"
    return None


def admits_some(spec: SpecifierSet) -> bool:
    """Whether a version specifier admits any version at all (">=0.13,<0.12" admits none)."""
    return any(spec.contains(v, prereleases=True) for v in _witnesses(spec))


def _witnesses(spec: SpecifierSet) -> list[Version]:
    """Versions that a satisfiable specifier of the versions it names admits at least one of: each named
    version, and the versions just above and below it at every level."""
    out = [Version("0"), Version("99999")]
    for s in spec:
        try:
            v = Version(s.version.removesuffix(".*"))
        except InvalidVersion:
            continue
        parts = list(v.release)
        out.append(v)
        out.append(Version(".".join(map(str, [*parts, 1]))))
        for i in range(len(parts)):
            up = [*parts[:i], parts[i] + 1]
            out.append(Version(".".join(map(str, up))))
            if parts[i] > 0:
                down = [*parts[:i], parts[i] - 1, 99999]
                out.append(Version(".".join(map(str, down))))
    return out


def _image_ref(value: str) -> str | None:
    return image_ref_problem(value) if value else None


# Docker's reference grammar (distribution/reference): [domain/]path[:tag][@digest].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*" \
          r"(?::[0-9]+)?)"
_DOMAIN_RE = re.compile(_DOMAIN)
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
NAME_MAX = 255


def image_ref_problem(ref: str) -> str | None:
    """Why Docker would refuse `ref` as an image reference (name[:tag][@digest]), or None."""
    name, _, digest = ref.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        return f"digest {digest!r} is not algorithm:hex"
    tag = ""
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            why = "longer than 128 characters" if len(tag) > 128 else "letters, digits, _ . - only, not first"
            return f"tag {tag!r} is not a Docker tag ({why})"
    first, _, rest = name.partition("/")
    # As Docker reads it: a first part with '.' or ':' (or localhost) is a registry's host.
    path = rest if rest and ("." in first or ":" in first or first == "localhost") else name
    if path is rest and not _DOMAIN_RE.fullmatch(first):
        return f"registry {first!r} is not a host name"
    if not _PATH.fullmatch(path):
        return (f"name {name!r} is not a Docker image name (lower-case parts of letters and digits joined "
                "by one . or _, two _, or dashes, separated by '/')")
    if len(name) > NAME_MAX:
        return f"name is longer than {NAME_MAX} characters"
    return None


def image_component_problem(value: str) -> str | None:
    """Why `value` cannot be a part of an image name (builder-<name>), or None."""
    if not re.fullmatch(_COMPONENT, value):
        return ("it is not a part of a Docker image name (lower-case letters and digits joined by one . or "
                "_, two _, or dashes)")
    return None


def choice(*allowed: str) -> Kind:
    return Kind("choice", f"one of {', '.join(repr(a) for a in allowed)}", allowed[0],
                lambda v: None if v in allowed else "it is not one of these")


TEXT = Kind("text", "one line of text", "A text; with \"quotes\" and 'more'", _text)
NAME = Kind("name", names.NAME_RULE, "cpu", _word(names.NAME_PATTERN.pattern.strip("^$"), "such a name"))
URL = Kind("url", "an https, http, ssh, git or file URL, user@host:path or a local path",
           "https://example.com/x.git", _url)
DOWNLOAD_URL = Kind("download URL", "an https, http or file URL (or one starting with {pypi_files}/ or "
                    "{go_proxy}/)", "https://example.com/x.tar.gz", _download_url)
REF = Kind("ref", "a git tag name", "b9452", _ref)
TAG = Kind("tag", "a git tag that is a version, such as v0.12.5", "v0.12.5", _tag)
COMMIT = Kind("commit", "a full 40-digit commit id", "0" * 40,
              _word(r"[0-9a-fA-F]{40}", "a full 40-digit commit id"))
SHA256 = Kind("sha256", "64 hex digits", "0" * 64, _word(r"[0-9a-f]{64}", "64 lower-case hex digits"))
DEBIAN_PACKAGE = Kind("Debian package", "a Debian package name (libfoo-dev, g++, name=VERSION or name/SUITE)",
                      "libfoo-dev",
                      _word(r"[a-z0-9][a-z0-9+.-]+(?:(?:=[A-Za-z0-9.+~:-]+)|(?:/[a-z][a-z0-9.-]*))?",
                            "a Debian package name"))
APT_PIN = Kind("apt pin", "a Debian package name or a pattern of one (libamd-comgr*)", "libfoo*",
               _word(r"[a-z0-9*?][a-z0-9+.*?-]*", "a Debian package name or pattern"))
DEBIAN_SUITE = Kind("Debian suite", "a Debian suite or codename (bullseye, trixie, sid, bookworm-backports)",
                    "trixie", _word(r"[a-z][a-z0-9.-]{0,39}", "a Debian suite name"))
DEBIAN_COMPONENT = Kind("Debian component", "an archive component (main, contrib, non-free)", "main",
                        _word(r"[a-z][a-z0-9-]{0,39}", "an archive component"))
ABS_DIR = Kind("absolute folder", "an absolute folder of letters, digits and . _ + - / (no '..')", "/opt/x",
               _abs_dir)
ABS_FILE = Kind("absolute file", "an absolute path of letters, digits and . _ + - / (no '..')",
                "/usr/lib/x.so", _abs_dir)
REL_DIR = Kind("relative folder", "a folder inside its parent (letters, digits, . _ + - /; no '..')",
               "rocm", _rel_dir)
ENV_KEY = Kind("environment key", "an environment variable name (letters, digits and _, not a digit first)",
               "SOME_VAR", _word(r"[A-Za-z_][A-Za-z0-9_]*", "an environment variable name"))
ENV_VALUE = Kind("environment value", "letters, digits and _ . , : / = + @ % - only (it reaches a "
                 "Dockerfile, a shell and a systemd EnvironmentFile)", "1",
                 _word(r"[A-Za-z0-9_.,:/=+@%-]*", "a plain value", empty=True))
CMAKE_NAME = Kind("CMake variable", "a CMake variable name (letters, digits and _, not a digit first)",
                  "SOME_VARIABLE", _word(r"[A-Za-z_][A-Za-z0-9_]*", "a CMake variable name"))
CMAKE_VALUE = Kind("CMake value", "one line (passed to cmake as one argument)", "-O2 -g;x", _text)
PRESET = Kind("CMake preset", "a preset name of letters, digits, spaces and . _ + -", "ROCm 6",
              _word(r"[A-Za-z0-9._+][A-Za-z0-9 ._+-]*", "a preset name"))
COMPONENT = Kind("install component", "letters, digits and . _ + -", "CPU",
                 _word(r"[A-Za-z0-9_.+][A-Za-z0-9_.+-]*", "an install component name"))
FILE_NAME = Kind("file name", "a file name of letters, digits and . _ + -", "libggml-x.so",
                 _word(r"(?!\.\.?$)[A-Za-z0-9_.+][A-Za-z0-9_.+-]*", "a file name", empty=True))
FILE_PATTERN = Kind("file name pattern", "a file name pattern such as \"libvulkan.so*\"", "libx.so*",
                    _word(r"[A-Za-z0-9_.+*?\[\]][A-Za-z0-9_.+*?\[\]-]*", "a file name pattern"))
TEMPLATE = Kind("template", "a template file of docker/ (name.Dockerfile.j2)", "debian.Dockerfile.j2",
                _word(r"[A-Za-z0-9][A-Za-z0-9._-]*\.j2", "a template name of docker/"))
IMAGE_REF = Kind("image reference", "a Docker image reference (name:tag or name@sha256:digest)",
                 "example/image:1.0", _image_ref)
GO_FLAG = Kind("go flag", "an option of go build (-trimpath, -tags=a,b)", "-trimpath",
               _word(r"-[A-Za-z0-9_.,:/=+@%-]+", "an option (starting with '-', no spaces or quotes)"))
GO_VERSION = Kind("Go version", "a Go version such as 1.26.0", "1.26.0",
                  _word(r"(?:go)?[0-9]+(?:\.[0-9]+)*(?:(?:rc|beta)[0-9]+)?", "a Go version"))
SPECIFIER = Kind("version specifier", "a version specifier that admits a version, such as \">=0.12.6\"",
                 ">=0.12.6", _specifier)
ARCH = Kind("GPU arch", "a GPU arch such as gfx906 or 37-real", "gfx906",
            _word(r"[A-Za-z0-9_:+-]+", "a GPU arch"))
VERSION_FORMAT = Kind("version format", "a format such as \"{version}+{target}\"", "{version}+{target}",
                      _word(r"[A-Za-z0-9.+_~{}-]+", "a version format"))
GO_VARIABLE = Kind("Go variable", "a Go package path and variable", "example.com/x/version.Version",
                   _word(r"[A-Za-z0-9_.~/-]+\.[A-Za-z_][A-Za-z0-9_]*", "a Go package path and variable"))


def checked(kind: Kind, *, keys: Kind | None = None, **field: Any) -> Any:
    """A schema field whose strings (a list's items, a table's values) are of `kind`, its keys of `keys`."""
    return dataclasses.field(metadata={"kind": kind, "keys": keys}, **field)


def kind_of(f: dataclasses.Field) -> tuple[Kind | None, Kind | None]:
    """(the kind of a field's strings, the kind of its keys)."""
    return f.metadata.get("kind"), f.metadata.get("keys")
