"""A package's shared-library closure, resolved inside the image it was built in.

pipeline.closure.walk walks DT_NEEDED over a folder tree; this module gives it an image's view: a
sparse copy of the image (the "sysroot", one per image, in the cache) holding only the libraries a walk
asked for, copied out of a container of the image as `ldconfig -p` locates them. The walk repeats
until nothing new is found, so a fetched library's own needs are fetched too. Which Debian package
each library came from is recorded beside it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from docker.types import Mount

from pipeline.closure import walk
from pipeline.closure.loads import Inventory
from pipeline.config.policy import Policy
from pipeline.config.settings import Settings
from pipeline.infra import fsutil, toolchain
from pipeline.infra.container import Container
from pipeline.infra.log import Log

MOUNT = "/pipeline-sysroot"
OWNERS = ".packages.json"
_LD_CACHE = re.compile(r"^\s*(\S+) \(([^)]*)\) => (\S+)$", re.MULTILINE)
_COPY = f'for p; do mkdir -p "{MOUNT}$(dirname "$p")" && cp -L "$p" "{MOUNT}$p"; done'
_OWNER = ('for p; do r=$(readlink -f "$p"); dpkg -S "$r" 2>/dev/null || dpkg -S "$p" 2>/dev/null '
          '|| echo "?: $p"; done')


def resolve(image: str, policy: Policy, package_root: Path, sysroot: Path, settings: Settings,
            log: Log, *, inventory: Inventory | None = None, versions: bool = True) -> walk.Closure:
    """The closure of package_root under `policy`, libraries taken from `image` into `sysroot` (with
    what `inventory` says the runtimes open at run time); raises ClosureError naming what is missing
    or, with `versions`, too new."""
    sysroot.mkdir(parents=True, exist_ok=True)
    result = walk.compute(package_root, sysroot, policy, inventory=inventory, check=False)
    if result.missing:
        with Container(image, log, mounts=[Mount(MOUNT, str(sysroot), type="bind")],
                       user=toolchain.user(), keep=settings.keep_containers) as box:
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
                result = walk.compute(package_root, sysroot, policy, inventory=inventory, check=False)
    for line in result.summary():
        log.line(line)
    result.check(versions=versions)
    return result


def owners(sysroot: Path) -> dict[str, str]:
    """Which Debian package of the image each fetched library came from (path -> package); a record that
    is unreadable or of another shape counts as none (the libraries' owners are looked up again)."""
    try:
        found = json.loads((sysroot / OWNERS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if isinstance(k, str) and isinstance(v, str)}


def ld_cache(text: str) -> dict[str, str]:
    """soname -> path of the x86-64 libraries in `ldconfig -p` output (first entry wins, as in ld.so)."""
    found: dict[str, str] = {}
    for soname, flags, path in _LD_CACHE.findall(text):
        if "x86-64" in flags:
            found.setdefault(soname, path)
    return found


def _record_owners(box: Container, sysroot: Path, paths: list[str]) -> None:
    known = owners(sysroot)
    for line, path in zip(box.exec(["sh", "-c", _OWNER, "sh", *paths], capture=True).splitlines(), paths):
        known[path] = line.split(":", 1)[0] if not line.startswith("?") else "?"
    fsutil.write_text(sysroot / OWNERS, json.dumps(known, indent=2, sort_keys=True) + "\n")
