"""Finding libraries the way glibc's loader does, inside a sysroot (a copy of a builder image's files)."""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from pipeline.closure.elf import ElfInfo, read_elf
from pipeline.errors import ClosureError
from pipeline.records import record

# Where glibc's loader looks last (after RPATH, LD_LIBRARY_PATH, RUNPATH and ld.so.cache), in the
# order of a Debian/Ubuntu x86-64 system: the multiarch folders, then the traditional ones.
DEFAULT_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib",
                "/usr/lib")

# Values of the loader's dynamic string tokens on Debian x86-64 ($ORIGIN is per object).
_TOKENS = {"LIB": "lib/x86_64-linux-gnu", "PLATFORM": "x86_64"}
_MAX_LINKS = 40  # the kernel's ELOOP limit


@record(positional=True)
class Found:
    soname: str
    path: PurePosixPath  # where the loader finds it, inside the sysroot: /usr/lib/x86_64-linux-gnu/libz.so.1
    file: Path  # the file on this machine, links resolved inside the sysroot
    info: ElfInfo


class Resolver:
    """Finds libraries the way glibc's loader would inside a sysroot (an exported builder image).

    Search order for a need of object X: X's DT_RPATH (only when it has no DT_RUNPATH),
    `library_path` (as LD_LIBRARY_PATH), X's DT_RUNPATH, the folders of the sysroot's
    /etc/ld.so.conf, then DEFAULT_DIRS. $ORIGIN is X's folder inside the sysroot. Symbolic links are
    followed inside the sysroot (an absolute target is taken from the sysroot's root); a link that
    climbs out of it is an error. Candidates of another ELF class or machine are skipped, as the
    loader does.
    """

    def __init__(self, sysroot: Path, *, library_path: Sequence[str] = (),
                 default_dirs: Sequence[str] = DEFAULT_DIRS, ld_so_conf: bool = True):
        self.sysroot = Path(sysroot).resolve()
        if not self.sysroot.is_dir():
            raise ClosureError(f"sysroot {sysroot} is not a folder")
        self.library_path = tuple(library_path)
        self.default_dirs = tuple(default_dirs)
        self.conf_dirs = tuple(self._read_ld_so_conf()) if ld_so_conf else ()
        self._elf: dict[Path, ElfInfo | None] = {}

    # Paths inside the sysroot are absolute POSIX paths as the builder sees them.
    def locate(self, path: str | PurePosixPath) -> Path | None:
        """The file at `path` inside the sysroot, links followed inside it; None when absent."""
        path = PurePosixPath(path)
        if not path.is_absolute():
            raise ValueError(f"{path}: paths inside the sysroot are absolute")
        todo = list(path.parts[1:])
        done: list[str] = []
        links = 0
        last_link: tuple[str, str] | None = None
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not done:
                    via = f": {last_link[0]} points to {last_link[1]}" if last_link else ""
                    raise ClosureError(f"{path} leaves the sysroot {self.sysroot}{via}; a library "
                                       "must be resolved inside the builder image")
                done.pop()
                continue
            host = self.sysroot.joinpath(*done, part)
            if host.is_symlink():
                links += 1
                if links > _MAX_LINKS:
                    raise ClosureError(f"{path}: too many levels of symbolic links in sysroot {self.sysroot}")
                target = os.readlink(host)
                last_link = ("/" + "/".join([*done, part]), target)
                if target.startswith("/"):
                    done = []
                todo = [p for p in PurePosixPath(target).parts if p != "/"] + todo
                continue
            if not host.exists():
                return None
            done.append(part)
        return self.sysroot.joinpath(*done)

    def elf(self, file: Path) -> ElfInfo | None:
        if file not in self._elf:
            self._elf[file] = read_elf(file) if file.is_file() else None
        return self._elf[file]

    def search_path(self, needer: ElfInfo, origin: PurePosixPath | None) -> list[PurePosixPath]:
        """Folders searched for the needs of `needer` whose folder in the sysroot is `origin`."""
        dirs: list[str] = []
        if needer.rpath and not needer.runpath:
            dirs += expand(needer.rpath, origin)
        dirs += self.library_path
        dirs += expand(needer.runpath, origin)
        dirs += self.conf_dirs
        dirs += self.default_dirs
        out: list[PurePosixPath] = []
        for d in dirs:
            p = PurePosixPath(d)
            if p.is_absolute() and p not in out:  # relative entries depend on the cwd: ignored
                out.append(p)
        return out

    def find(self, soname: str, needer: ElfInfo, origin: PurePosixPath | None = None) -> Found | None:
        """Where the loader would find `soname` for `needer` in the sysroot; None when nowhere."""
        if "/" in soname:
            candidates = [PurePosixPath(soname)] if soname.startswith("/") else []
        else:
            candidates = [d / soname for d in self.search_path(needer, origin)]
        for candidate in candidates:
            file = self.locate(candidate)
            if file is None or not file.is_file():
                continue
            info = self.elf(file)
            if info and info.elf_class == needer.elf_class and info.machine == needer.machine \
                    and info.type == "ET_DYN":
                return Found(soname, candidate, file, info)
        return None

    def _read_ld_so_conf(self) -> list[str]:
        dirs: list[str] = []
        self._conf_file(PurePosixPath("/etc/ld.so.conf"), dirs, depth=0)
        return dirs

    def _conf_file(self, path: PurePosixPath, dirs: list[str], depth: int) -> None:
        file = self.locate(path)
        if depth > 8 or file is None or not file.is_file():
            return
        for raw in file.read_text(errors="replace").splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            words = line.split()
            if words[0] == "include":
                for pattern in words[1:]:
                    pat = PurePosixPath(pattern)
                    if not pat.is_absolute():
                        pat = path.parent / pat
                    # The folder is resolved inside the sysroot like any path; its entries matched.
                    folder = self.locate(pat.parent)
                    if folder is None or not folder.is_dir():
                        continue
                    for name in sorted(os.listdir(folder)):
                        if fnmatch.fnmatchcase(name, pat.name):
                            self._conf_file(pat.parent / name, dirs, depth + 1)
            elif words[0] != "hwcap":
                dirs.extend(d for d in re.split(r"[\s:,=]+", line) if d.startswith("/"))


def expand(entries: Iterable[str], origin: PurePosixPath | None) -> list[str]:
    """RPATH/RUNPATH entries with $ORIGIN, $LIB and $PLATFORM replaced; $ORIGIN ones dropped without
    origin."""
    values = {**_TOKENS, "ORIGIN": str(origin)}

    def token(m: re.Match[str]) -> str:
        return values.get(m.group(1) or m.group(2), m.group(0))

    return [re.sub(r"\$(?:\{(\w+)\}|(\w+))", token, entry) for entry in entries
            if origin is not None or not re.search(r"\$(\{ORIGIN\}|ORIGIN)", entry)]
