"""Package stage: a reproducible archive with a manifest, written atomically under dist/<target>/.

    BuildResult ─▶ Packaged (dist/<target>/ollama-<version>-<target>.tar.zst + manifest.json)

The layout is pipeline.formats.PackageLayout, upstream's release archives' (bin/ollama, lib/ollama/...),
so the Go code finds its runners the same way. Into it go: the build's files; the libraries of its
closure under the builder's library policy, taken from the builder image (pipeline.closure.sysroot),
with what its GPU runtimes open at run time (pipeline.closure.loads); only the Tensile files of the
archs the runtime asks for (pipeline.gpu.tensile); bundled ROCm libraries without the GPU code of other
archs (gpucode.py); where the policy has a floor pass, every library lowered to its glibc, with the
compatibility library beside them (lowering.py); share/ollama/ from the runtime templates; the
manifest. Archives are written by pipeline.infra.archive; the manifest's schema is
pipeline.stages.manifest's. The manifest beside the archive is the stage's record: a package whose
manifest names this stage hash and whose archive is unchanged is reused.
"""

from __future__ import annotations

import dataclasses
import os
import types
from pathlib import Path

from pipeline.closure import sysroot
from pipeline.closure.floor import ABI_CHANGES
from pipeline.closure.loads import load_inventory
from pipeline.closure.walk import Closure
from pipeline.config.paths import COMPAT_SOURCE, GLIBC_TABLES, POLICIES, RUNTIME_LOADS, RUNTIME_TEMPLATES
from pipeline.config.policy import Policy, held_to, load_policy
from pipeline.config.settings import Settings
from pipeline.errors import ConfigError, PackageError
from pipeline.formats import PackageLayout
from pipeline.gpu import archs, tensile
from pipeline.hashing import file_sha256
from pipeline.infra import archive, fsutil, templates
from pipeline.stages import manifest as schema
from pipeline.stages.manifest import plain
from pipeline.stages.package import gpucode, lowering
from pipeline.stages.plan import Context, Plan
from pipeline.stages.results import BuilderImage, BuildResult, Packaged


def key(plan: Plan, settings: Settings) -> object:
    # Everything the manifest records about the target, the policy's content (and the floor pass's data
    # it names), the run-time load inventory and the runtime templates.
    return [plan.target.package, plan.target.runtime, plan.target.name, plan.target.description,
            plan.target.source, plan.version, plan.builder.policy, plan.builder.driver_stubs,
            [(p.name, file_sha256(p)) for p in _data_files(plan)],
            [(name, file_sha256(RUNTIME_TEMPLATES / name)) for name in templates.names(RUNTIME_TEMPLATES)],
            schema.VERSION]


def _data_files(plan: Plan) -> list[Path]:
    """The policy files and the floor pass's data this target's package depends on."""
    files = [RUNTIME_LOADS]
    if not plan.builder.policy:
        return files
    path = POLICIES / f"{plan.builder.policy}.toml"
    if not path.is_file():
        return files
    files.append(path)
    fp = load_policy(plan.builder.policy).floor_pass
    if fp is not None:
        files.append(POLICIES / f"{fp.without}.toml")
        if plan.target.package.floor_pass:
            files += [GLIBC_TABLES / f"{t}.json" for t in (fp.glibc, fp.newer) if t]
            files += [ABI_CHANGES, COMPAT_SOURCE]
    return files


def policy_of(plan: Plan) -> Policy | None:
    """The library policy the target's package is held to (None: the builder names none)."""
    if not plan.builder.policy:
        return None
    return held_to(load_policy(plan.builder.policy), plan.target.package.floor_pass)


def artifacts(packaged: Packaged) -> tuple[Path, ...]:
    """The archive: with its manifest, what every release holds of a target."""
    return (packaged.archive,)


def run(ctx: Context, *, build: BuildResult, host_builder: BuilderImage) -> Packaged:
    """Write the target's archive and manifest, or reuse them when they match this package hash."""
    plan, log, settings = ctx.plan, ctx.log, ctx.settings
    folder = ctx.places.target(plan.out)
    path = folder / plan.archive_name
    beside = folder / PackageLayout.BESIDE
    if (current := _current(path, beside, ctx.hash)) is not None:
        ctx.stage.cached(f"{path.name} matches package hash {ctx.hash[:12]}")
        return current

    root = build.root
    policy = policy_of(plan)
    found = _closure(ctx, build, policy)
    entries = _collect(root) + [(b.dest, b.source) for b in (found.bundles if found else ())]
    serves = plan.target.runtime.archs
    entries, pruned = tensile.prune(sorted(entries), serves)
    if pruned:
        log.line(f"pruned {len(pruned)} Tensile files of archs the runtime never asks for "
                 f"({sum(p.stat().st_size for _, p in pruned) / 1e6:.0f} MB); serving {', '.join(serves)}")
    if PackageLayout.BIN not in {e[0] for e in entries}:
        raise PackageError(f"the build produced no {PackageLayout.BIN} under {root}; see {log.path}")
    with fsutil.scratch_dir(settings.places.scratch, f"{plan.name}-strip") as scratch:
        stripped: dict[str, dict] = {}
        if serves and plan.target.package.strip_gpu_code:
            own = [b.library for b in plan.backends if b.library]
            entries, stripped = gpucode.strip(entries, own, serves, Path(scratch), log)
        lowered = None
        if found is not None and found.policy.floor_pass is not None:
            lowered = lowering.lower(entries, found, found.policy, host_builder.tag, Path(scratch),
                                     settings, log)
            entries, found = lowered.entries, lowered.closure
        manifest = _manifest(ctx, build, entries, found, pruned, stripped, lowered)
        generated = {**runtime_files(plan, manifest), PackageLayout.INSIDE: manifest.inside()}
        log.line(f"writing {path} ({len(entries)} entries, mtime {build.source_date_epoch})")
        # The archive, its manifest and SHA256SUMS are written in full before any of them is published.
        sums = folder / PackageLayout.SUMS
        with fsutil.atomic_files(path, beside, sums) as (new_archive, new_beside, new_sums):
            with open(new_archive, "wb") as f:
                archive.write(f, entries, generated, epoch=build.source_date_epoch,
                              fmt=plan.target.package.format, level=plan.target.package.level)
            record = schema.ArchiveRecord(name=path.name, size=new_archive.stat().st_size,
                                          sha256=file_sha256(new_archive))
            manifest = _with_archive(manifest, record)
            new_beside.write_text(manifest.to_json(), encoding="utf-8")
            new_sums.write_text(f"{record.sha256}  {path.name}\n", encoding="utf-8")
    log.line(f"{path.name}: {record.size / 1e6:.1f} MB, sha256 {record.sha256}")
    return Packaged(archive=path, manifest=manifest)


def _with_archive(manifest: schema.Manifest, record: schema.ArchiveRecord) -> schema.Manifest:
    return dataclasses.replace(manifest, archive=record)


def _current(path: Path, beside: Path, package_hash: str) -> Packaged | None:
    """The package whose manifest beside its archive is this package hash's, unchanged since; else None."""
    if not (path.is_file() and beside.is_file()):
        return None
    try:
        recorded = Packaged.from_json(beside.read_text(encoding="utf-8"), beside.parent)
    except (PackageError, ConfigError, OSError, UnicodeDecodeError):
        return None
    archive = recorded.manifest.archive
    if (recorded.manifest.hashes.get("package") != package_hash or recorded.archive != path
            or archive.size != path.stat().st_size or archive.sha256 != file_sha256(path)):
        return None
    return recorded


def _closure(ctx: Context, build: BuildResult, policy: Policy | None) -> Closure | None:
    plan = ctx.plan
    if policy is None:
        ctx.log.line(f"builder {plan.builder_name} names no library policy: no libraries are bundled")
        return None
    folder = ctx.places.sysroot(plan.hashes["builder"])
    # With a floor pass, the symbol versions are checked once the pass has lowered them.
    return sysroot.resolve(build.image.tag, policy, build.root, folder, ctx.settings, ctx.log,
                           inventory=load_inventory(), versions=policy.floor_pass is None)


def _collect(root: Path) -> list[tuple[str, Path]]:
    """Every path under root as (archive name, path), sorted; refuses links that leave the tree."""
    entries: list[tuple[str, Path]] = []
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                target = os.readlink(path)
                resolved = (path.parent / target).resolve()
                if os.path.isabs(target) or not resolved.is_relative_to(real_root):
                    raise PackageError(f"{rel} is a symlink to {target}, which leaves the package; "
                                       "only relative links inside the tree can be packaged")
            elif not (path.is_file() or path.is_dir()):
                raise PackageError(f"{rel} is neither a file, a folder nor a symlink; cannot package it")
            entries.append((rel, path))
    entries.sort()
    return entries


def _manifest(ctx: Context, build: BuildResult, entries: list[tuple[str, Path]], found: Closure | None,
              pruned: list[tuple[str, Path]], stripped: dict[str, dict],
              lowered: lowering.Lowered | None = None) -> schema.Manifest:
    plan = ctx.plan
    files = []
    for rel, path in entries:
        if path.is_symlink():
            files.append(schema.FileRecord(path=rel, link=os.readlink(path)))
        elif path.is_file():
            files.append(schema.FileRecord(path=rel, size=path.stat().st_size, sha256=file_sha256(path),
                                           mode="0755" if archive.executable(path) else "0644"))
    t = plan.target
    floor = None
    came_from: dict[str, str] = {}
    if found is not None:
        floor = schema.Floor(policy=found.policy.name, suite=found.policy.suite,
                             needs=types.MappingProxyType({p: u.version
                                                           for p, u in found.max_versions.items()}),
                             allows=found.policy.max_versions, verified_on=found.policy.verify_suites,
                             lowered_to=lowered.floor.label if lowered else None,
                             compat=types.MappingProxyType(lowered.compat) if lowered else None)
        owners = sysroot.owners(ctx.places.sysroot(plan.hashes["builder"]))
        came_from = {b.soname: owners.get(b.found_at, "?") for b in found.bundles}
        if lowered is not None and lowered.compat["folders"]:
            came_from[lowered.compat["soname"]] = ("compiled by the pipeline on the floor from "
                                                   "pipeline/closure/compat/ollama_glibc_compat.c")
    pruned_bytes = sum(p.stat().st_size for _, p in pruned)
    return schema.Manifest(
        manifest_version=schema.VERSION,
        target=t.name,
        description=t.description,
        version=plan.version,
        upstream=schema.Upstream(url=t.source.url, tag=t.source.tag, commit=t.source.commit,
                                 version=plan.upstream_version),
        patches=tuple(schema.PatchRecord(**p.record()) for p in plan.patches),
        builder=schema.BuilderRecord(name=plan.builder_name, image=build.image.tag, image_id=build.image.id,
                                     template=plan.builder.template, suite=plan.builder.suite,
                                     packages=plan.builder.packages, package_versions=build.builder_packages,
                                     driver_stubs=plan.builder.driver_stubs),
        host_builder=_host_record(plan, build),
        backends=tuple(b.preset for b in plan.backends),
        gpu_archs=t.gpu_archs,
        runtime_env=t.runtime_env,
        hashes=plan.hashes,
        source_date_epoch=build.source_date_epoch,
        files=tuple(files),
        floor=floor,
        libraries=found.to_dict() if found else None,
        library_packages=came_from,
        gpu_code_objects=build.code_objects,
        tensile=schema.Tensile(serves=t.runtime.archs, pruned_files=len(pruned) + build.tensile_dropped[0],
                               pruned_bytes=pruned_bytes + build.tensile_dropped[1]),
        stripped=stripped,
        lowered={rel: plain(rec) for rel, rec in sorted(lowered.records.items())} if lowered else {},
    )


def _host_record(plan: Plan, build: BuildResult) -> schema.BuilderRecord | None:
    if build.host_image is None or plan.host is None:
        return None
    return schema.BuilderRecord(name=plan.host_name, image=build.host_image.tag, image_id=build.host_image.id,
                                template=plan.host.template, suite=plan.host.suite,
                                packages=plan.host.packages, package_versions=build.host_packages)


def runtime_files(plan: Plan, manifest: schema.Manifest | None = None) -> dict[str, bytes]:
    """share/ollama/: env file, systemd unit, install script and README, from pipeline/templates/runtime.
    The package's `manifest` gives install.sh the floor it checks the host against."""
    names = templates.names(RUNTIME_TEMPLATES)
    context = {"target": plan.target, "version": plan.version, "patches": plan.patches,
               "host": host_needs(plan, manifest), "manifest": PackageLayout.INSIDE,
               "share_files": [n.removesuffix(".j2") for n in names]}
    return {f"{PackageLayout.SHARE}/{name.removesuffix('.j2')}":
            templates.render(RUNTIME_TEMPLATES, name, **context).encode()
            for name in names}


def host_needs(plan: Plan, manifest: schema.Manifest | None) -> dict[str, object]:
    """What install.sh checks on the host before it changes anything, as the manifest's floor records
    it (glibc by version, the other system libraries by the symbol versions the package needs from
    them), and what it hints at (the GPU's device, driver branch or loader)."""
    floor = manifest.floor if manifest is not None else None
    policy_name = floor.policy if floor is not None else plan.builder.policy
    policy = load_policy(policy_name) if policy_name else None
    needs = manifest.host_needs() if manifest is not None else ()
    glibc = next((n.version.rpartition("_")[2] for n in needs if n.family == "GLIBC"), "")
    codes = {b.gpu_code for b in plan.backends}
    host_libraries = tuple(policy.host_libraries) if policy else ()
    return {
        "glibc": glibc,
        "libraries": [f"{n.library}:{n.version}" for n in needs if n.family != "GLIBC" and n.library],
        "floor": policy.description if policy else "",
        "rocm": "hip" in codes,
        "nvidia_branch": archs.nvidia_driver_branch(plan.target.gpu_archs) if "cuda" in codes else "",
        "host_libraries": [(lib, " ".join(policy.host_packages)) for lib in host_libraries],
        "vulkan": "libvulkan.so.1" in host_libraries,
    }
