"""A package's shared-library closure, resolved inside the builder image it was built in.

pipeline.closure walks DT_NEEDED over a folder tree; this module gives it the builder image's view:
a sparse copy (one per builder image, in the cache) holding only the libraries a walk asked for,
copied out of a container of the image as `ldconfig -p` locates them. The walk repeats until nothing
new is found, so a fetched library's own needs are fetched too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from docker.types import Mount

from . import build, closure, fsutil
from .container import Container
from .log import Log
from .plan import Plan
from .settings import Settings

SYSROOT = "/pipeline-sysroot"
_LD_CACHE = re.compile(r"^\s*(\S+) \(([^)]*)\) => (\S+)$", re.MULTILINE)
_COPY = f'for p; do mkdir -p "{SYSROOT}$(dirname "$p")" && cp -L "$p" "{SYSROOT}$p"; done'


def sysroot_dir(plan: Plan, settings: Settings) -> Path:
    return settings.cache / "sysroots" / plan.hashes["builder"][:24]


_OWNER = ('for p; do r=$(readlink -f "$p"); dpkg -S "$r" 2>/dev/null || dpkg -S "$p" 2>/dev/null '
          '|| echo "?: $p"; done')
OWNERS = ".packages.json"


def owners(plan: Plan, settings: Settings) -> dict[str, str]:
    """Which Debian package of the builder image each fetched library came from (path -> package)."""
    path = sysroot_dir(plan, settings) / OWNERS
    return json.loads(path.read_text()) if path.is_file() else {}


def resolve(plan: Plan, package_root: Path, settings: Settings, log: Log) -> closure.Closure | None:
    """The closure of package_root under the builder's policy; raises ClosureError naming what is
    missing or too new. None when the builder names no policy (nothing is bundled)."""
    if not plan.builder.policy:
        log.line(f"builder {plan.builder_name} names no library policy: no libraries are bundled")
        return None
    policy = closure.load_policy(plan.builder.policy)
    sysroot = sysroot_dir(plan, settings)
    sysroot.mkdir(parents=True, exist_ok=True)
    result = closure.compute(package_root, sysroot, policy, check=False)
    if result.missing:
        with Container(plan.image_tag, log, mounts=[Mount(SYSROOT, str(sysroot), type="bind")],
                       user=build.user(), keep=settings.keep_containers) as box:
            located = ld_cache(box.exec(["ldconfig", "-p"], capture=True))
            asked: set[str] = set()
            while wanted := [s for s in result.missing if s not in asked]:
                asked.update(wanted)
                paths = sorted({located[s] for s in wanted if s in located})
                if not paths:
                    break
                log.line(f"copying from the builder image: {', '.join(paths)}")
                box.exec(["sh", "-c", _COPY, "sh", *paths])
                _record_owners(box, sysroot, paths)
                result = closure.compute(package_root, sysroot, policy, check=False)
    for line in result.summary():
        log.line(line)
    result.check()
    return result


def ld_cache(text: str) -> dict[str, str]:
    """soname -> path of the x86-64 libraries in `ldconfig -p` output (first entry wins, as in ld.so)."""
    found: dict[str, str] = {}
    for soname, flags, path in _LD_CACHE.findall(text):
        if "x86-64" in flags:
            found.setdefault(soname, path)
    return found


def _record_owners(box: Container, sysroot: Path, paths: list[str]) -> None:
    known_file = sysroot / OWNERS
    known = json.loads(known_file.read_text()) if known_file.is_file() else {}
    for line, path in zip(box.exec(["sh", "-c", _OWNER, "sh", *paths], capture=True).splitlines(), paths,
                          strict=False):
        known[path] = line.split(":", 1)[0] if not line.startswith("?") else "?"
    fsutil.write_text(known_file, json.dumps(known, indent=2, sort_keys=True) + "\n")
