"""Where the project's own files live: one owner for every folder the pipeline reads its data from."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
PROJECT_ROOT = PACKAGE.parent
# jinja2 templates shipped with the package: runtime/ (share/ollama of a package), release notes and
# the memory workbench's Go driver. (The Dockerfiles of builder and runtime images are docker/'s.)
TEMPLATES = PACKAGE / "templates"
RUNTIME_TEMPLATES = TEMPLATES / "runtime"
# Library policies: what the oldest system a package runs on provides.
POLICIES = PACKAGE / "config" / "policies"
# Project data beside the package.
TARGETS_FILE = PROJECT_ROOT / "targets.toml"
PATCHES = PROJECT_ROOT / "patches"
DOCKER_TEMPLATES = PROJECT_ROOT / "docker"
SCENARIOS = PROJECT_ROOT / "scenarios"
# Data of the library closure: what GPU runtimes open at run time, the glibc tables of the floor pass
# and the compatibility library's source.
CLOSURE_DATA = PACKAGE / "closure"
RUNTIME_LOADS = CLOSURE_DATA / "runtime-loads.toml"
GLIBC_TABLES = CLOSURE_DATA / "glibc"
COMPAT_SOURCE = CLOSURE_DATA / "compat" / "ollama_glibc_compat.c"
# The load probe verify runs on every ELF of a package (compiled on the floor).
LOAD_PROBE_SOURCE = PACKAGE / "smoke" / "loadprobe.c"
