"""The names, refs, URLs and archs the pipeline accepts from its users, checked where they are read.

Every value that ends up in a path (a target name is a folder of dist/ and of the cache) or on a
command line (a URL or a tag handed to git) passes one of these checks first, so that no user value
reaches a subprocess as an option and none writes outside the folders it belongs to:

* names of targets, builders and backends: NAME_PATTERN (lower-case letter first, then lower-case
  letters, digits, `_` and `-`; at most 40 characters), not one of RESERVED;
* git refs (tags): what `git check-ref-format` accepts for refs/tags/<tag>, no leading `-`, no quotes
  or shell characters;
* source URLs: https, http, ssh, git and file URLs, scp-style `user@host:path`, or a local path; never
  a leading `-`, whitespace, control characters, quotes or shell characters, or a transport helper
  (`ext::`, `fd::`);
* GPU archs: those the builder's compiler knows (KNOWN_ARCHS per code format).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pipeline.config import places
from pipeline.errors import ConfigError

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
NAME_RULE = "a lower-case letter, then lower-case letters, digits, '_' or '-' (at most 40 characters)"
# Names that mean something else where target names are used: selector keywords and commands, and the
# folders of dist/ and of the cache (pipeline.config.places).
KEYWORDS = ("all", "none", "default", "defaults", "images", "clean", "plan", "targets", "manifest", "tmp")
RESERVED = frozenset({*KEYWORDS, *places.CACHE_FOLDERS, *places.DIST_NAMES})

URL_SCHEMES = ("https", "http", "ssh", "git", "file")
MIRROR_SCHEMES = ("https", "http", "file")
_CONTROL = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]")
# Characters no repository or mirror URL of ours needs, and which a shell or a Dockerfile would read.
_SHELL = "\"'`$;<>|\\"

# GPU archs the builders' compilers know: clang's AMDGPU processors (ROCm 6.x), nvcc 11.x's SM numbers.
HIP_ARCHS = frozenset({
    "gfx700", "gfx701", "gfx702", "gfx703", "gfx704", "gfx705", "gfx801", "gfx802", "gfx803", "gfx805",
    "gfx810", "gfx900", "gfx902", "gfx904", "gfx906", "gfx908", "gfx909", "gfx90a", "gfx90c", "gfx940",
    "gfx941", "gfx942", "gfx950", "gfx1010", "gfx1011", "gfx1012", "gfx1013", "gfx1030", "gfx1031",
    "gfx1032", "gfx1033", "gfx1034", "gfx1035", "gfx1036", "gfx1100", "gfx1101", "gfx1102", "gfx1103",
    "gfx1150", "gfx1151", "gfx1152", "gfx1153", "gfx1200", "gfx1201"})
CUDA_ARCHS = frozenset({"35", "37", "50", "52", "53", "60", "61", "62", "70", "72", "75", "80", "86",
                        "87", "89", "90"})
_HIP_FEATURES = re.compile(r"^(?P<proc>gfx[0-9a-f]+)(?P<features>(:(xnack|sramecc)[+-])*)$")


def check_name(value: object, what: str, where: str) -> str:
    """A target, builder or backend name: NAME_PATTERN, no path separators, not a reserved word."""
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise ConfigError(f"{where} {what} name {value!r} is not allowed: use {NAME_RULE}")
    if value in RESERVED:
        raise ConfigError(f"{where} {what} name {value!r} is reserved (it names a keyword or an output "
                          "folder); pick another name")
    return value


def ref_problem(ref: str) -> str | None:
    """Why `ref` is not a valid tag name (git check-ref-format of refs/tags/<ref>), or None."""
    if not ref:
        return "it is empty"
    if ref.startswith("-"):
        return "it starts with '-'"
    if _CONTROL.search(ref) or any(c in ref for c in "~^:?*[\\"):
        return "it holds a space, a control character or one of ~ ^ : ? * [ \\"
    if any(c in ref for c in _SHELL):
        return "it holds a quote, a backslash or one of ` $ ; < > |"
    if ".." in ref or "@{" in ref or ref == "@":
        return "it holds '..' or '@{' or is '@'"
    if ref.startswith("/") or ref.endswith(("/", ".")) or "//" in ref:
        return "it starts or ends with '/', holds '//' or ends with '.'"
    if any(part.startswith(".") or part.endswith(".lock") for part in ref.split("/")):
        return "a part of it starts with '.' or ends with '.lock'"
    return None


# A version tag that names a pre-release: SemVer's `-` suffix (v1.2.0-rc.1, 1.2.0-beta) or PEP 440's
# a/b/rc/dev (v1.2.0rc1); build metadata (+...) alone does not make one.
_PRERELEASE = re.compile(r"^v?\d+(?:\.\d+)*"
                         r"(?:-[0-9A-Za-z][0-9A-Za-z.-]*|\.?(?:a|b|rc|alpha|beta|pre|dev)\.?\d*)"
                         r"(?:\+[0-9A-Za-z.-]+)?$")


def is_prerelease(tag: str) -> bool:
    """Whether a release tag names a pre-release: published as one, it moves no stable image tag."""
    return bool(_PRERELEASE.match(tag))


def check_ref(ref: object, where: str) -> str:
    if not isinstance(ref, str):
        raise ConfigError(f"{where} must be a tag name, got {ref!r}")
    problem = ref_problem(ref)
    if problem:
        raise ConfigError(f"{where} {ref!r} is not a valid git tag ({problem}); use a tag such as v0.12.5")
    return ref


def url_problem(url: str, schemes: tuple[str, ...] = URL_SCHEMES, *, local: bool = True) -> str | None:
    """Why `url` is not an acceptable repository or mirror location, or None."""
    if not url:
        return "it is empty"
    if url.startswith("-"):
        return "it starts with '-' (it would be read as an option)"
    if _CONTROL.search(url):
        return "it holds whitespace or control characters"
    if any(c in url for c in _SHELL):
        return "it holds a quote, a backslash or one of ` $ ; < > |"
    if "::" in url.split("/", 1)[0] or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*::", url):
        return "transport helpers (ext::, fd::) are not allowed"
    if "://" in url:
        parts = urlsplit(url)
        if parts.scheme.lower() not in schemes:
            return f"scheme {parts.scheme!r} is not one of {', '.join(schemes)}"
        host = (parts.netloc.rsplit("@", 1)[-1])
        if parts.scheme.lower() != "file" and (not host or host.startswith("-")):
            return "no host, or a host starting with '-'"
        return None
    if not local:
        return f"not a URL ({', '.join(s + '://' for s in schemes)})"
    # scp-style user@host:path (git reads it so when no '/' comes before the first ':').
    if ":" in url and "/" not in url.split(":", 1)[0] and not url.startswith((".", "/", "~")):
        where, path = url.split(":", 1)
        host = where.rsplit("@", 1)[-1]
        if not host or host.startswith("-") or path.startswith("-"):
            return "a host or path starting with '-'"
    return None


def local_form(url: str) -> bool:
    """Whether git reads `url` as a local path: not a URL (scheme://) and not scp-style user@host:path."""
    if "://" in url:
        return False
    head = url.split(":", 1)[0]
    return ":" not in url or "/" in head or url.startswith((".", "/", "~"))


def check_url(url: object, where: str, schemes: tuple[str, ...] = URL_SCHEMES, *, local: bool = True) -> str:
    if not isinstance(url, str):
        raise ConfigError(f"{where} must be a string, got {url!r}")
    problem = url_problem(url, schemes, local=local)
    if problem:
        allowed = ", ".join(f"{s}://" for s in schemes)
        allowed += ", user@host:path or a local path" if local else ""
        raise ConfigError(f"{where} {url!r} is not allowed: {problem}; use {allowed}")
    return url


def arch_problem(gpu_code: str, arch: str) -> str | None:
    """Why `arch` is not an arch the compiler of `gpu_code` ("hip" or "cuda") knows, or None."""
    if gpu_code == "hip":
        m = _HIP_FEATURES.match(arch)
        if not m or m["proc"] not in HIP_ARCHS:
            return "not an AMDGPU processor clang knows (such as gfx906, gfx1100, gfx90a:xnack-)"
        return None
    if gpu_code == "cuda":
        number, _, kind = arch.partition("-")
        if number not in CUDA_ARCHS or kind not in ("", "real", "virtual"):
            return ("not a CUDA architecture nvcc 11 knows (such as 37-real, 61, 86-virtual; known: "
                    f"{', '.join(sorted(CUDA_ARCHS, key=int))})")
        return None
    return None


def cuda_number(arch: str) -> str:
    """37-real, sm_37, 37 -> 37."""
    return arch.removeprefix("sm_").partition("-")[0]
