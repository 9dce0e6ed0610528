"""Memory workbench: how Ollama's own estimator places a model on given GPUs, upstream against patched.

Scenarios (TOML, one per file) describe GPUs, a model's shape and the request options. For an upstream
ref that still has llm/memory.go (v0.12.x before v0.12.11) the upstream tree and the patched tree are
exported into a temporary folder, a Go test file is put into each tree's llm package, and `go test -c`
compiles it there (in the Go builder, or with the host's Go) into a test binary kept in the cache under
a key of its inputs, so a later run compiles nothing. The binary synthesizes each model as a GGUF with
metadata and tensor descriptions only (ggml.WriteGGUF, as llm/memory_test.go does) and calls
estimateGPULayers, predictServerFit and pickBestFullFitByLibrary. Results come back as JSON; this
module evaluates the scenarios' expectations and renders the report.

    scenario TOML ─▶ load (frozen) ─▶ input JSON ─▶ test binaries (before, after; cached) ─▶ results ─▶ report
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from docker.types import Mount
from packaging.specifiers import SpecifierSet

from pipeline.config import loader
from pipeline.config import targets as targets_mod
from pipeline.config.paths import SCENARIOS, TEMPLATES
from pipeline.config.settings import Settings
from pipeline.errors import ConfigError, SourceError
from pipeline.infra import fsutil, git, owner, templates, toolchain
from pipeline.infra.log import Log
from pipeline.tools import gobox, patchtool
from pipeline.records import record

SCENARIOS_DIR = SCENARIOS
DRIVER_TEMPLATE = "memtest_driver_test.go.j2"
DRIVER_NAME = "zz_pipeline_memtest_test.go"
IO_DIR = ".pipeline-memtest"
# Under the pipeline cache: the lock and the kept test binaries (--host-go compiles in memtest-src).
CACHE_DIR = "memtest"
KEEP_BINARIES = 6
# Where the kept binaries are mounted in the builder.
BIN_MOUNT = "/memtest"
# Versions whose llama-engine placement lives in llm/memory.go (it moved out in v0.12.11).
SUPPORTED = SpecifierSet(">=0.12.0,<0.12.11")
# Architectures whose synthesized shapes Ollama estimates with estimateGPULayers (the llama engine).
ARCHITECTURES = ("llama", "qwen2")
# Ollama-engine architectures the workbench synthesizes: ollamaServer.Load places them with createLayout
# in llm/server.go from the memory the runner reports, which the driver synthesizes from the shapes.
CREATE_LAYOUT = ("gemma3",)
# These always run on the Ollama engine in v0.12.x, which lays models out on its own.
OLLAMA_ENGINE = ("gemma3", "gemma3n", "mistral3", "qwen3moe", "llama4", "mllama", "qwen25vl", "gptoss",
                 "gpt-oss")
LIBRARIES = ("CUDA", "ROCm")
# Tensor types per role for a file type; a simplification of llama.cpp's mixes (Q4_K_M keeps Q6_K for
# ffn_down and the embeddings, as the patches' own tests model a 12B Q4_K_M).
QUANTIZATIONS: dict[str, dict[str, str]] = {
    "F32": {"default": "F32"},
    "F16": {"default": "F16"},
    "BF16": {"default": "BF16"},
    "Q8_0": {"default": "Q8_0"},
    "Q6_K": {"default": "Q6_K"},
    "Q5_K_M": {"default": "Q5_K", "ffn_down": "Q6_K", "embeddings": "Q6_K"},
    "Q4_K_M": {"default": "Q4_K", "ffn_down": "Q6_K", "embeddings": "Q6_K"},
    "Q4_0": {"default": "Q4_0", "embeddings": "Q6_K"},
}
TENSOR_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K",
                "Q5_K", "Q6_K")
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)?\s*$")
OPS = ("==", "!=", ">=", "<=", ">", "<")
_CHECK = re.compile(r"^\s*(==|!=|>=|<=|>|<)?\s*(.+?)\s*$")


Size = typing.NewType("Size", int)
# Checked before anything is compiled: sizes beyond these overflow the Go driver's arithmetic or make
# files no estimator run needs.
MAX_SIZE = 2**50  # 1 PiB
MAX_GPUS = 64
MAX_DIMENSION = 2**24


# ---------------------------------------------------------------------------------------------- schema

@record
class Gpu:
    count: int = 1
    library: str
    name: str = ""
    total: Size
    free: Size
    compute: str  # CUDA compute capability "3.7", or a ROCm "gfx906"
    driver: str = ""  # "470.82"
    integrated: bool = False
    minimum: Size | None = None  # Ollama's reserve per GPU (457 MiB for CUDA and ROCm)

    def __post_init__(self):
        if self.library not in LIBRARIES:
            raise ValueError(f"key 'library' must be one of {', '.join(LIBRARIES)}, got {self.library!r} "
                             "(v0.12.x discovery reports 'CUDA' and 'ROCm')")
        if not 1 <= self.count <= MAX_GPUS:
            raise ValueError(f"key 'count' must be 1 to {MAX_GPUS}, got {self.count}")
        if self.free > self.total:
            raise ValueError(f"key 'free' ({self.free} bytes) is more than 'total' ({self.total} bytes)")
        compute_numbers(self.library, self.compute)
        if self.driver and not re.fullmatch(r"\d+(\.\d+)?", self.driver):
            raise ValueError(f"key 'driver' must look like '470.82', got {self.driver!r}")


@record
class TensorSpec:
    name: str
    type: str
    shape: tuple[int, ...]

    def __post_init__(self):
        if self.type not in TENSOR_TYPES:
            raise ValueError(f"key 'type' must be one of {', '.join(TENSOR_TYPES)}, got {self.type!r}"
                             f"{loader.hint(self.type, TENSOR_TYPES)}")
        if not self.shape or any(d < 1 for d in self.shape):
            raise ValueError(f"key 'shape' of tensor {self.name!r} must list positive dimensions")
        if len(self.shape) > 4 or any(d > MAX_DIMENSION for d in self.shape):
            raise ValueError(f"key 'shape' of tensor {self.name!r}: at most 4 dimensions of at most "
                             f"{MAX_DIMENSION} each")


@record
class Model:
    architecture: str = "llama"
    block_count: int
    embedding_length: int
    feed_forward_length: int
    head_count: int
    head_count_kv: int
    head_dim: int = 0  # 0: embedding_length / head_count
    vocab_size: int
    context_length: int
    quantization: str = "Q4_K_M"
    tied_embeddings: bool = False  # the output layer is token_embd (no output.weight)
    # Explicit tensor descriptions replace the synthesized ones: per block (named without "blk.N.")
    # and outside the blocks.
    block_tensors: tuple[TensorSpec, ...] = ()
    tensors: tuple[TensorSpec, ...] = ()

    def __post_init__(self):
        if self.architecture in OLLAMA_ENGINE and self.architecture not in CREATE_LAYOUT:
            raise ValueError(
                f"key 'architecture' {self.architecture!r} runs on the Ollama engine in v0.12.x, which "
                "does not use estimateGPULayers; memtest synthesizes the runner's memory report for "
                f"{', '.join(CREATE_LAYOUT)} only; describe the model's shape with one of those or a "
                f"llama-engine architecture ({', '.join(ARCHITECTURES)})")
        if self.architecture not in ARCHITECTURES + CREATE_LAYOUT:
            raise ValueError(f"key 'architecture' must be one of {', '.join(ARCHITECTURES + CREATE_LAYOUT)}, "
                             f"got {self.architecture!r}")
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"key 'quantization' must be one of {', '.join(QUANTIZATIONS)}, got "
                             f"{self.quantization!r}{loader.hint(self.quantization, QUANTIZATIONS)}")
        for key in ("block_count", "embedding_length", "feed_forward_length", "head_count", "head_count_kv",
                    "vocab_size", "context_length"):
            if getattr(self, key) < 1:
                raise ValueError(f"key {key!r} must be at least 1, got {getattr(self, key)}")
            if getattr(self, key) > MAX_DIMENSION:
                raise ValueError(f"key {key!r} must be at most {MAX_DIMENSION}, got {getattr(self, key)}")
        if self.head_count % self.head_count_kv:
            raise ValueError(f"key 'head_count' ({self.head_count}) must be a multiple of 'head_count_kv' "
                             f"({self.head_count_kv})")

    @property
    def placement(self) -> str:
        """The placement path Ollama v0.12.x takes for this architecture."""
        return "createLayout" if self.architecture in CREATE_LAYOUT else "estimateGPULayers"

    @property
    def head_size(self) -> int:
        return self.head_dim or self.embedding_length // self.head_count


@record
class Options:
    num_ctx: int = 4096
    num_batch: int = 512
    num_parallel: int = 1
    num_gpu: int = -1  # -1: as many layers as fit

    def __post_init__(self):
        for key in ("num_ctx", "num_batch", "num_parallel"):
            if getattr(self, key) < 1:
                raise ValueError(f"key {key!r} must be at least 1, got {getattr(self, key)}")
            if getattr(self, key) > MAX_DIMENSION:
                raise ValueError(f"key {key!r} must be at most {MAX_DIMENSION}, got {getattr(self, key)}")
        if self.num_gpu < -1:
            raise ValueError(f"key 'num_gpu' must be -1 (automatic) or a layer count, got {self.num_gpu}")


@record(positional=True)
class Check:
    side: str  # before | after
    metric: str
    op: str
    value: int | bool


# What an expectation may test, and the type of its value.
METRICS: dict[str, type] = {
    "gpus_used": int,       # GPUs holding layers when the model is laid out over every GPU
    "layers_on_gpu": int,   # layers offloaded in that layout (blocks + output)
    "fits": bool,           # predictServerFit over every GPU: all layers on GPUs
    "scheduler_gpus": int,  # GPUs holding layers after pickBestFullFitByLibrary chose them (Load)
    "vram": Size,           # estimated VRAM of the layout, all GPUs together
    # graph reserved on the GPUs with layers other than the one reserving the most (the output GPU),
    # all together: what a split reserves beyond the one whole graph
    "graph_secondary": Size,
}


@record
class Scenario:
    name: str
    path: Path
    description: str
    gpus: tuple[Gpu, ...]
    model: Model
    options: Options
    env: Mapping[str, str]
    checks: tuple[Check, ...]

    @property
    def gpu_list(self) -> list[Gpu]:
        return [g for g in self.gpus for _ in range(g.count)]


TOP_LEVEL = ("description", "gpus", "model", "options", "env", "expect")


# ------------------------------------------------------------------------------------------- loading

def find(paths: Sequence[str | Path]) -> list[Path]:
    """Scenario files from files and folders (a folder: its *.toml, sorted); default: scenarios/."""
    files: list[Path] = []
    for p in [Path(p) for p in paths] or [SCENARIOS_DIR]:
        if p.is_dir():
            found = sorted(p.glob("*.toml"))
            if not found:
                raise ConfigError(f"{p}: no scenario files (*.toml) in this folder")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"scenario {p} not found (give .toml files or folders of them)")
    return list(dict.fromkeys(files))


def load_all(paths: Sequence[str | Path]) -> list[Scenario]:
    scenarios = [load(p) for p in find(paths)]
    seen: dict[str, Path] = {}
    for s in scenarios:
        if s.name in seen:
            raise ConfigError(f"{s.path}: scenario name {s.name!r} is also used by {seen[s.name]}")
        seen[s.name] = s.path
    return scenarios


def load(path: Path) -> Scenario:
    return parse(loader.read(Path(path), "scenario"), Path(path))


def parse(doc: Mapping[str, Any], path: Path) -> Scenario:
    where = f"{path}:"
    loader.reject_unknown(doc, TOP_LEVEL, f"{where} top level", "key")
    for key in ("gpus", "model"):
        if key not in doc:
            raise ConfigError(f"{where} missing table [{key}]")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where} key 'description' must be a string, got {loader.tname(description)}")
    raw_gpus = doc["gpus"]
    if isinstance(raw_gpus, dict):
        gpus = (loader.build(Gpu, raw_gpus, f"{where} [gpus]", converters=CONVERTERS),)
    elif isinstance(raw_gpus, list) and raw_gpus:
        gpus = tuple(loader.build(Gpu, t, f"{where} [[gpus]] #{i + 1}", converters=CONVERTERS)
                     for i, t in enumerate(raw_gpus))
    else:
        raise ConfigError(f"{where} [gpus] must be a table or an array of tables ([[gpus]])")
    if len({g.library for g in gpus}) > 1:
        raise ConfigError(f"{where} [gpus] mixes libraries; Ollama estimates one library at a time")
    model = loader.build(Model, doc["model"], f"{where} [model]", converters=CONVERTERS)
    options = loader.build(Options, doc.get("options", {}), f"{where} [options]", converters=CONVERTERS)
    env = doc.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ConfigError(f"{where} [env] must be a table of strings (OLLAMA_FLASH_ATTENTION = \"1\")")
    return Scenario(name=path.stem, path=path, description=description, gpus=gpus, model=model,
                    options=options, env=types.MappingProxyType(dict(env)),
                    checks=_checks(doc.get("expect", {}), f"{where} [expect]"))


def _checks(table: Any, where: str) -> tuple[Check, ...]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table with [expect.before] and/or [expect.after]")
    loader.reject_unknown(table, ("before", "after"), where, "table")
    checks = []
    for side, items in table.items():
        here = f"{where[:-1]}.{side}]"
        if not isinstance(items, dict):
            raise ConfigError(f"{here} must be a table (gpus_used = 1, layers_on_gpu = \">= 49\")")
        loader.reject_unknown(items, METRICS, here)
        for metric, raw in items.items():
            checks.append(Check(side, metric, *_expectation(METRICS[metric], raw, f"{here} key {metric!r}")))
    return tuple(checks)


def _expectation(kind: type, raw: Any, what: str) -> tuple[str, int | bool]:
    wanted = {bool: "true or false", int: "an integer or a comparison such as \">= 49\"",
              Size: "a size or a comparison such as \"<= 11 GiB\""}[kind]
    if kind is bool:
        if type(raw) is not bool:
            raise ConfigError(f"{what} must be {wanted}, got {loader.tname(raw)}")
        return "==", raw
    if type(raw) is int:
        return "==", raw
    if not isinstance(raw, str):
        raise ConfigError(f"{what} must be {wanted}, got {loader.tname(raw)}")
    m = _CHECK.match(raw)
    try:
        if not m:
            raise ValueError(raw)
        op, operand = m[1] or "==", m[2]
        value = parse_size(operand, what) if kind is Size else int(operand)
    except (ValueError, ConfigError):
        raise ConfigError(f"{what} must be {wanted} (operators {' '.join(OPS)}), got {raw!r}") from None
    return op, value


def parse_size(value: Any, what: str) -> int:
    """Bytes from an integer or a string with a unit ("11.2 GiB", "457 MiB", "32 GB")."""
    if type(value) is int and 0 <= value <= MAX_SIZE:
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m and (m[2] or "B").upper() in _UNITS and len(m[1]) <= 20:
            size = int(float(m[1]) * _UNITS[(m[2] or "B").upper()])
            if size <= MAX_SIZE:
                return size
    raise ConfigError(f"{what} must be a size up to 1 PiB: bytes or a string such as \"11.2 GiB\" or \"457 MiB\" "
                      f"(units {', '.join(u.replace('I', 'i') for u in _UNITS)}), got {value!r}")


parse_size.describes = "a size such as \"11.2 GiB\" or a number of bytes"
CONVERTERS = {Size: parse_size}


def compute_numbers(library: str, compute: str) -> tuple[int, int]:
    """(major, minor) as Ollama stores them: CUDA "3.7" is (3, 7); ROCm "gfx906" is (9, 6) and
    "gfx1103" (0x11, 0x03), the inverse of the gfx%x%02x Ollama logs."""
    if library == "ROCm":
        m = re.fullmatch(r"gfx([0-9a-f]{1,2})([0-9a-f]{2})", compute)
        if not m:
            raise ValueError(f"key 'compute' of a ROCm GPU must be a gfx name such as 'gfx906', got {compute!r}")
        return int(m[1], 16), int(m[2], 16)
    m = re.fullmatch(r"(\d+)\.(\d+)", compute)
    if not m:
        raise ValueError(f"key 'compute' of a CUDA GPU must be a compute capability such as '3.7', "
                         f"got {compute!r}")
    return int(m[1]), int(m[2])


# ------------------------------------------------------------------------------------ the Go driver

def tensors(model: Model) -> list[dict]:
    """Tensor descriptions of the synthetic GGUF: llama-style blocks, the output norm and embeddings."""
    quant = QUANTIZATIONS[model.quantization]
    main, down, embd_type = quant["default"], quant.get("ffn_down", quant["default"]), \
        quant.get("embeddings", quant["default"])
    e, ff, q, kv = (model.embedding_length, model.feed_forward_length, model.head_count * model.head_size,
                    model.head_count_kv * model.head_size)
    block = [TensorSpec(name=n, type=t, shape=s) for n, t, s in (
        ("attn_norm.weight", "F32", (e,)), ("attn_q.weight", main, (e, q)), ("attn_k.weight", main, (e, kv)),
        ("attn_v.weight", main, (e, kv)), ("attn_output.weight", main, (q, e)),
        ("ffn_norm.weight", "F32", (e,)), ("ffn_gate.weight", main, (e, ff)), ("ffn_up.weight", main, (e, ff)),
        ("ffn_down.weight", down, (ff, e)))]
    rest = [TensorSpec(name="output_norm.weight", type="F32", shape=(e,)),
            TensorSpec(name="token_embd.weight", type=embd_type, shape=(e, model.vocab_size))]
    if not model.tied_embeddings:
        rest.append(TensorSpec(name="output.weight", type=embd_type, shape=(e, model.vocab_size)))
    block = list(model.block_tensors) or block
    rest = list(model.tensors) or rest
    out = [{"name": f"blk.{i}.{t.name}", "type": t.type, "shape": list(t.shape)}
           for i in range(model.block_count) for t in block]
    return out + [{"name": t.name, "type": t.type, "shape": list(t.shape)} for t in rest]


def driver_input(s: Scenario) -> dict:
    """What the Go driver reads for one scenario."""
    m, arch = s.model, s.model.architecture
    kv = [("general.architecture", "string", arch), (f"{arch}.context_length", "uint32", m.context_length),
          (f"{arch}.embedding_length", "uint32", m.embedding_length),
          (f"{arch}.feed_forward_length", "uint32", m.feed_forward_length),
          (f"{arch}.block_count", "uint32", m.block_count),
          (f"{arch}.attention.head_count", "uint32", m.head_count),
          (f"{arch}.attention.head_count_kv", "uint32", m.head_count_kv),
          (f"{arch}.attention.key_length", "uint32", m.head_size),
          (f"{arch}.attention.value_length", "uint32", m.head_size)]
    if arch == "gemma3":
        kv.append((f"{arch}.attention.sliding_window", "uint32", 1024))  # gemma3's local attention window
    gpus = []
    for i, g in enumerate(s.gpu_list):
        major, minor = compute_numbers(g.library, g.compute)
        dmajor, _, dminor = g.driver.partition(".")
        gpus.append({"id": f"GPU-{i}", "library": g.library, "name": g.name, "total": g.total, "free": g.free,
                     "minimum": g.minimum or 0, "compute_major": major, "compute_minor": minor,
                     "driver_major": int(dmajor or 0), "driver_minor": int(dminor or 0),
                     "integrated": g.integrated})
    o = s.options
    return {"name": s.name, "placement": m.placement, "kv": [{"key": k, "type": t, "value": v} for k, t, v in kv],
            "vocab_size": m.vocab_size, "tensors": tensors(m), "gpus": gpus, "num_ctx": o.num_ctx,
            "num_batch": o.num_batch, "num_parallel": o.num_parallel, "num_gpu": o.num_gpu,
            "env": dict(s.env)}


def gpu_api(memory_go: str) -> tuple[str, str]:
    """(package, type) of the GPU list estimateGPULayers takes in this tree."""
    m = re.search(r"func estimateGPULayers\(gpus \[\](\w+)\.(\w+),", memory_go)
    if not m or m[1] not in ("discover", "ml"):
        raise SourceError("llm/memory.go has no estimateGPULayers(gpus []discover.GpuInfo | []ml.DeviceInfo, "
                          "...) here; memtest knows v0.12.0 to v0.12.10")
    return m[1], f"{m[1]}.{m[2]}"


def render_driver(memory_go: str) -> str:
    package, gpu_type = gpu_api(memory_go)
    return templates.render(TEMPLATES, DRIVER_TEMPLATE, gpu_package=package, gpu_type=gpu_type)


# ------------------------------------------------------------------------------------------ running

def check_ref(ref: str) -> None:
    from pipeline.config.series import upstream_version

    if not SUPPORTED.contains(upstream_version(ref), prereleases=True):
        raise ConfigError(f"memtest needs an upstream ref with llm/memory.go's estimateGPULayers, v0.12.0 to "
                          f"v0.12.10 ({SUPPORTED}); {ref} lays models out elsewhere (llm/memory.go was removed "
                          "in v0.12.11)")


def run(settings: Settings, log: Log, scenarios: Sequence[Scenario], ref: str, *, host_go: bool = False,
        targets: Sequence[str] = ()) -> dict:
    """Both trees of `ref` through the driver; returns the report (see `report`).

    Each side's test binary (`go test -c`) is kept in the cache under a key of what went into it
    (`cache_key`); a later run with the same upstream commit, patches, driver and toolchain runs the
    kept binaries and compiles nothing. One memtest at a time per cache (`locked`)."""

    check_ref(ref)
    if host_go and not shutil.which("go"):
        raise ConfigError("--host-go: no `go` on PATH")
    matrix = targets_mod.load(settings.targets_file)
    if targets:
        targets = [t.name for t in matrix.select(list(targets))]  # names or globs; typos get a close match
    home = settings.cache / CACHE_DIR
    with locked(home / "lock", log):
        gitdir = patchtool.repository(matrix, settings, [ref], log)
        commit = git.commit_of(gitdir, ref, log)
        image = None if host_go else gobox.builder_image(matrix, settings, log)
        tool = _host_toolchain(log) if host_go else f"builder {image}"
        series_in_range = [(p.name, p.path.read_bytes()) for p in patchtool.in_range(matrix, settings, ref, targets)]
        driver = (TEMPLATES / DRIVER_TEMPLATE).read_bytes()
        keys = {"before": cache_key(commit, (), driver, tool), "after": cache_key(commit, series_in_range, driver, tool)}
        binaries = {side: home / "bin" / f"{key}.test" for side, key in keys.items()}
        meta = home / "bin" / f"{keys['after']}.json"
        applied = json.loads(meta.read_text())["applied"] if meta.is_file() else None
        with tempfile.TemporaryDirectory(prefix="ollama-pipeline-memtest-", dir=settings.cache) as tmp:
            for side in ("before", "after"):
                if binaries[side].is_file() and (side == "before" or applied is not None):
                    log.line(f"{side}: test binary from the cache ({binaries[side].name[:16]})")
                    continue
                log.stage_name = side
                tree = Path(tmp) / side
                if side == "before":
                    git.export(gitdir, commit, tree, log)
                else:
                    applied = patchtool.apply(matrix, settings, ref, tree, log, targets)
                _compile(tree, binaries[side], settings, log, matrix, image)
                if side == "after":
                    fsutil.write_text(meta, json.dumps({"ref": ref, "commit": commit, "applied": applied}) + "\n")
                shutil.rmtree(tree, ignore_errors=True)
            log.line(f"patched tree: {ref} + {', '.join(applied or []) or 'no patch in range'}")
            _prune(home / "bin", keep={*binaries.values(), meta})
            inputs = [driver_input(s) for s in scenarios]
            log.stage_name = "run"
            results = _execute(Path(tmp) / "run", binaries, inputs, settings, log, matrix, image)
    return report(scenarios, results, ref=ref, commit=commit, patches=applied or [])


def cache_key(commit: str, patches: Sequence[tuple[str, bytes]], driver: bytes, toolchain: str) -> str:
    """What a side's test binary is made of: the upstream commit, the patches applied to it (names and
    contents, in order), the driver template and the toolchain that compiled it."""
    h = hashlib.sha256()
    parts = [f"commit {commit}", f"driver {hashlib.sha256(driver).hexdigest()}", f"toolchain {toolchain}",
             *(f"patch {name} {hashlib.sha256(data).hexdigest()}" for name, data in patches)]
    for part in parts:
        h.update(part.encode() + b"\n")
    return h.hexdigest()[:32]


def locked(path: Path, log: Log):
    """An exclusive lock on `path`: a second memtest on the same cache waits for the first, which owns
    the fixed compile folder and the binaries being written."""
    return owner.pid_lock(path, lambda pid: log.line(f"waiting for another memtest (pid {pid}, lock {path})"))


def _host_toolchain(log: Log) -> str:
    from pipeline.infra import runner

    out = runner.run(log, ["go", "env", "GOVERSION", "GOOS", "GOARCH", "CC", "CXX", "CGO_CFLAGS", "CGO_CXXFLAGS",
                           "CGO_LDFLAGS"], capture=True, quiet=True).stdout.decode()
    return "host " + " ".join(out.split())


def _prune(folder: Path, keep: set[Path]) -> None:
    """Keep the newest KEEP_BINARIES test binaries (and the ones this run uses)."""
    binaries = sorted(folder.glob("*.test"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in binaries[KEEP_BINARIES:]:
        if old not in keep:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
    for b in keep:
        if b.is_file():
            os.utime(b)


def _compile(tree: Path, binary: Path, settings: Settings, log: Log, matrix, image: str | None) -> None:
    """`go test -c` of the tree's llm package with the driver in it, into `binary`."""
    memory_go = tree / "llm" / "memory.go"
    if not memory_go.is_file():
        raise SourceError(f"{memory_go.relative_to(tree.parent)} is missing; memtest needs v0.12.0 to v0.12.10")
    (tree / "llm" / DRIVER_NAME).write_text(render_driver(memory_go.read_text()))
    (tree / IO_DIR).mkdir()
    argv = ["go", "test", "-c", "-vet=off", "-o", f"{IO_DIR}/memtest.test", "./llm"]
    if image is None:
        from pipeline.infra import runner

        # Both trees, and every later run, compile in the same folder: the cgo flags of ./llama name
        # ${SRCDIR}, so Go's build cache only serves llama.cpp's objects (minutes to compile) to a tree
        # at the same path. A folder in the pipeline cache, not the run's temporary one.
        same_place = settings.cache / "memtest-src"
        shutil.rmtree(same_place, ignore_errors=True)
        tree.rename(same_place)
        try:
            runner.run(log, argv, cwd=same_place)
        finally:
            same_place.rename(tree)
    else:
        # In the builder the tree is always /src and Go's build cache is the user's volume.
        with gobox.go_container(matrix, settings, log, tree, image=image) as box:
            box.exec(argv)
    binary.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tree / IO_DIR / "memtest.test", binary)


def _execute(folder: Path, binaries: Mapping[str, Path], inputs: list[dict], settings: Settings, log: Log, matrix,
             image: str | None) -> dict[str, dict]:
    """Run each side's test binary on the scenarios; results by side and scenario name."""
    folder.mkdir()
    (folder / "input.json").write_text(json.dumps(inputs))
    args = ["-test.run", "^TestPipelineMemtest$", "-test.count=1"]
    if image is None:
        from pipeline.infra import runner

        for side, binary in binaries.items():
            runner.run(log, [binary, *args], cwd=folder,
                       env={"PIPELINE_MEMTEST_INPUT": str(folder / "input.json"),
                            "PIPELINE_MEMTEST_OUTPUT": str(folder / f"results-{side}.json")})
    else:
        bin_dir = binaries["before"].parent
        mount = Mount(BIN_MOUNT, str(bin_dir), type="bind", read_only=True)
        with gobox.go_container(matrix, settings, log, folder, image=image, extra=[mount]) as box:
            for side, binary in binaries.items():
                box.exec([f"{BIN_MOUNT}/{binary.name}", *args],
                         env={"PIPELINE_MEMTEST_INPUT": f"{toolchain.SRC}/input.json",
                              "PIPELINE_MEMTEST_OUTPUT": f"{toolchain.SRC}/results-{side}.json"})
    return {side: {r["name"]: r for r in json.loads((folder / f"results-{side}.json").read_text())}
            for side in binaries}


# ------------------------------------------------------------------------------------------ report

def summarize(result: Mapping[str, Any]) -> dict:
    """One side of one scenario in the report's terms, from the driver's result."""
    def gpus(est: Mapping[str, Any]) -> list[dict]:
        graphs = est.get("graph_per_gpu") or [None] * len(est["gpus"])
        reserved = est.get("reserved_graph") or [None] * len(est["gpus"])
        return [{"gpu": gid, "layers": n, "memory": size, "graph": graph,
                 "reserved": None if r is None or r < 0 else r}
                for gid, n, size, graph, r in zip(est["gpus"], est["tensor_split"], est["gpu_sizes"], graphs,
                                                  reserved)]

    layout, sched = result["layout"], result["scheduler"]
    per_gpu = gpus(layout)
    return {
        "placement": result.get("placement", "estimateGPULayers"),
        "warnings": list(result.get("warnings") or []),
        "layers_model": result["layers_model"],
        "layers_on_gpu": layout["layers"],
        "gpus_used": sum(1 for n in layout["tensor_split"] if n > 0),
        "fits": result["fits"],
        "vram": layout["vram"],
        "total": layout["total"],
        "per_gpu": per_gpu,
        "graph_secondary": graph_secondary(per_gpu, result.get("placement", "estimateGPULayers")),
        "scheduler_gpus": sum(1 for n in sched["tensor_split"] if n > 0),
        "scheduler": {"full_fit": result["full_fit"], "layers_on_gpu": sched["layers"], "vram": sched["vram"],
                      "per_gpu": gpus(sched)},
        "model": {"weights": result["weights"], "kv": result["kv"], "graph_partial": result["graph_partial"],
                  "graph_full": result["graph_full"]},
    }


def graph_secondary(per_gpu: Sequence[Mapping[str, Any]], placement: str = "estimateGPULayers") -> int | None:
    """The graph reserved on the GPUs holding layers, less the largest one (None when not known). For
    createLayout, what createLayout itself reserved (its accounting), not the runner report it was given."""
    key = "reserved" if placement == "createLayout" else "graph"
    graphs = [g[key] for g in per_gpu if g["layers"] > 0]
    if any(g is None for g in graphs):
        return None
    return sum(graphs) - max(graphs, default=0)


def evaluate(checks: Sequence[Check], sides: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    out = []
    for c in checks:
        actual = sides[c.side][c.metric]
        if actual is None:  # not known for this side: the expectation cannot hold
            out.append({"side": c.side, "metric": c.metric, "op": c.op, "value": c.value, "actual": None,
                        "ok": False})
            continue
        ok = {"==": actual == c.value, "!=": actual != c.value, ">=": actual >= c.value,
              "<=": actual <= c.value, ">": actual > c.value, "<": actual < c.value}[c.op]
        out.append({"side": c.side, "metric": c.metric, "op": c.op, "value": c.value, "actual": actual, "ok": ok})
    return out


def report(scenarios: Sequence[Scenario], results: Mapping[str, Mapping[str, Any]], *, ref: str, commit: str,
           patches: Sequence[str]) -> dict:
    rows = []
    for s in scenarios:
        sides = {side: summarize(results[side][s.name]) for side in ("before", "after")}
        rows.append({"name": s.name, "file": str(s.path), "description": s.description,
                     "gpus": [_gpu_label(g) for g in s.gpus],
                     "options": dataclasses.asdict(s.options), **sides,
                     "checks": evaluate(s.checks, sides)})
    return {"ref": ref, "commit": commit, "patches": list(patches), "scenarios": rows}


def failed(rep: Mapping[str, Any]) -> list[str]:
    return [f"{s['name']}: {c['side']} {c['metric']} {c['op']} {_value(c['metric'], c['value'])} "
            f"(got {_value(c['metric'], c['actual'])})"
            for s in rep["scenarios"] for c in s["checks"] if not c["ok"]]


def _gpu_label(g: Gpu) -> str:
    return (f"{g.count}x {g.name or g.library} ({g.library} {g.compute}, {gib(g.free)} of {gib(g.total)} free"
            f"{', integrated' if g.integrated else ''})")


def _path_label(placement: str) -> str:
    if placement == "createLayout":
        return ("createLayout (llm/server.go, Ollama engine) from a synthesized runner memory report: per GPU "
                "the weights and cache of its layers, the whole graph on the GPU with the output layer, the "
                "per-layer graph on the others (graph: the report's; reserved: what createLayout subtracted for "
                "it, by its own accounting, to 0.1 GiB)")
    return "estimateGPULayers (llm/memory.go, llama engine)"


def gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.2f} GiB"


def _value(metric: str, v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    return gib(v) if metric in ("vram", "graph_secondary") else str(v)


def render(rep: Mapping[str, Any]) -> str:
    """The report as text: per scenario and side, the layout over every GPU, then the checks."""
    lines = [f"upstream {rep['ref']} ({rep['commit'][:12]}); after = + {', '.join(rep['patches']) or 'no patch'}"]
    for s in rep["scenarios"]:
        o = s["options"]
        lines += ["", f"{s['name']}: {s['description']}".rstrip(": "),
                  f"  placement path: {_path_label(s['after']['placement'])}",
                  f"  GPUs: {'; '.join(s['gpus'])}",
                  f"  num_ctx {o['num_ctx']}, num_batch {o['num_batch']}, num_parallel {o['num_parallel']}, "
                  f"num_gpu {o['num_gpu']}"]
        layout = s["after"]["placement"] == "createLayout"
        # createLayout: the graph of the runner report it was given, and what it reserved from it
        table = [("", "GPU", "layers", "memory", "graph") + (("reserved",) if layout else ())]
        for side in ("before", "after"):
            for i, g in enumerate(s[side]["per_gpu"]):
                table.append((side if i == 0 else "", g["gpu"], str(g["layers"]), gib(g["memory"]), gib(g["graph"]))
                             + ((gib(g.get("reserved")),) if layout else ()))
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        lines += ["  " + "  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in
                                   enumerate(zip(row, widths))).rstrip() for row in table]
        for side in ("before", "after"):
            r = s[side]
            sched = r["scheduler"]
            picked = [g["gpu"] for g in sched["per_gpu"] if g["layers"] > 0]
            lines.append(f"  {side:6}  layers {r['layers_on_gpu']}/{r['layers_model']} on GPU, "
                         f"{gib(r['vram'])} VRAM, fits: {'yes' if r['fits'] else 'no'}, GPUs used: "
                         f"{r['gpus_used']}, graph beyond the output GPU's: {gib(r.get('graph_secondary'))}; "
                         f"scheduler (fewest GPUs that fit): {len(picked)} "
                         f"({', '.join(picked) or 'none'}), {sched['layers_on_gpu']} layers, {gib(sched['vram'])}")
        for side in ("before", "after"):
            for w in s[side]["warnings"]:
                lines.append(f"  {side:6}  Go warning: {w}")
        for c in s["checks"]:
            lines.append(f"  expect  {c['side']} {c['metric']} {c['op']} {_value(c['metric'], c['value'])}: "
                         f"{'ok' if c['ok'] else 'FAILED'} (got {_value(c['metric'], c['actual'])})")
    return "\n".join(lines)
