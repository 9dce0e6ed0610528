"""Memory scenarios: the schema of a scenario TOML (GPUs, a model's shape, request options and the
expectations on the result), loaded into frozen records with the one typed loader; and the upstream
versions the workbench knows."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from pipeline.config import loader
from pipeline.config.paths import SCENARIOS
from pipeline.config.targets import tag_version
from pipeline.errors import ConfigError
from pipeline.records import record

SCENARIOS_DIR = SCENARIOS
# The upstream versions the workbench drives, by where llama-engine models are placed: llm/memory.go's
# estimateGPULayers up to v0.12.10 ("estimate" driver), llamaServer.Load's layout loop over createLayout
# in llm/server.go from v0.12.11 (it deleted llm/memory.go) until v0.30, from which placement is
# llama.cpp's own (`--fit` inside llama/server) and there is no Go placement code to drive.
ESTIMATE = SpecifierSet(">=0.12.0,<0.12.11")
LAYOUT = SpecifierSet(">=0.12.11,<0.30")
DRIVERS = {"estimate": ESTIMATE, "layout": LAYOUT}
# Architectures of the llama engine whose shapes the workbench synthesizes (estimateGPULayers up to
# v0.12.10, llamaServer.Load from v0.12.11).
ARCHITECTURES = ("llama", "qwen2")
# Ollama-engine architectures the workbench synthesizes: ollamaServer.Load places them with createLayout
# in llm/server.go from the memory the runner reports, which the driver synthesizes from the shapes.
CREATE_LAYOUT = ("gemma3",)
# These always run on the Ollama engine, which lays models out from the memory its runner reports.
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
# Every dimension has a cap, and so do the products the estimator forms from them (Go's uint64): blocks
# (the largest models have about 130), tensor descriptions, the elements of one tensor, the KV cache.
MAX_BLOCKS = 4096
MAX_TENSORS = 1024
MAX_TENSOR_DESCRIPTIONS = 2**18
MAX_ELEMENTS = 2**48
MAX_KV_BYTES = 2**56


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
        if self.minimum is not None and self.minimum > self.total:
            raise ValueError(f"key 'minimum' ({self.minimum} bytes) is more than 'total' ({self.total} "
                             "bytes)")
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
        elements = 1
        for d in self.shape:
            elements *= d
        if elements > MAX_ELEMENTS:
            raise ValueError(f"key 'shape' of tensor {self.name!r}: {elements} elements, more than "
                             f"{MAX_ELEMENTS} (2**48)")
        if not re.fullmatch(r"[A-Za-z0-9_.]{1,128}", self.name):
            raise ValueError(f"key 'name' {self.name!r}: a tensor name of letters, digits, _ and . "
                             "(such as attn_q.weight)")


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
                f"key 'architecture' {self.architecture!r} runs on the Ollama engine, which lays models out "
                "from the memory its runner reports; memtest synthesizes that report for "
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
        if not 0 <= self.head_dim <= MAX_DIMENSION:
            raise ValueError(f"key 'head_dim' must be 0 (embedding_length / head_count) to {MAX_DIMENSION}, "
                             f"got {self.head_dim}")
        if self.block_count > MAX_BLOCKS:
            raise ValueError(f"key 'block_count' must be at most {MAX_BLOCKS}, got {self.block_count}")
        for key in ("block_tensors", "tensors"):
            if len(getattr(self, key)) > MAX_TENSORS:
                raise ValueError(f"key {key!r} lists {len(getattr(self, key))} tensors, more than "
                                 f"{MAX_TENSORS}")
        if self.block_count * len(self.block_tensors) > MAX_TENSOR_DESCRIPTIONS:
            raise ValueError(f"block_count x block_tensors is {self.block_count * len(self.block_tensors)} "
                             f"tensor descriptions, more than {MAX_TENSOR_DESCRIPTIONS}")
        if self.head_count % self.head_count_kv:
            raise ValueError(f"key 'head_count' ({self.head_count}) must be a multiple of 'head_count_kv' "
                             f"({self.head_count_kv})")

    @property
    def placement(self) -> str:
        """The placement path v0.12.0 - v0.12.10 take for this architecture (the estimate driver's input;
        from v0.12.11 the layout driver asks the tree, as NewLlamaServer does, and reports the path)."""
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
        if not -1 <= self.num_gpu <= MAX_BLOCKS + 1:
            raise ValueError(f"key 'num_gpu' must be -1 (automatic) or a layer count up to {MAX_BLOCKS + 1}, "
                             f"got {self.num_gpu}")
        if self.num_ctx * self.num_parallel > MAX_DIMENSION:
            raise ValueError(f"num_ctx x num_parallel must be at most {MAX_DIMENSION} (the context the "
                             f"runner allocates), got {self.num_ctx * self.num_parallel}")


@record(positional=True)
class Check:
    side: str  # before | after
    metric: str
    op: str
    value: int | bool
    # The upstream versions the expectation is for (a PEP 440 specifier; empty: every version).
    versions: str = ""

    def holds_for(self, ref: str) -> bool:
        return not self.versions or SpecifierSet(self.versions).contains(tag_version(ref), prereleases=True)


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
    if sum(g.count for g in gpus) > MAX_GPUS:
        raise ConfigError(f"{where} [gpus] counts {sum(g.count for g in gpus)} GPUs together, more than "
                          f"{MAX_GPUS}")
    model = loader.build(Model, doc["model"], f"{where} [model]", converters=CONVERTERS)
    options = loader.build(Options, doc.get("options", {}), f"{where} [options]", converters=CONVERTERS)
    kv = (2 * options.num_ctx * options.num_parallel * model.block_count * model.head_count_kv
          * model.head_size * 4)
    if kv > MAX_KV_BYTES:
        raise ConfigError(f"{where} [model] and [options]: the KV cache would be {kv} bytes, more than the "
                          f"estimator's arithmetic holds ({MAX_KV_BYTES}); lower num_ctx, num_parallel or "
                          "the model's dimensions")
    env = doc.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ConfigError(f"{where} [env] must be a table of strings (OLLAMA_FLASH_ATTENTION = \"1\")")
    for key, value in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", key):
            raise ConfigError(f"{where} [env] key {key!r} is not an environment variable name")
        if "\0" in value or len(value) > 4096:
            raise ConfigError(f"{where} [env] {key}: a value without NUL bytes, at most 4096 characters")
    return Scenario(name=path.stem, path=path, description=description, gpus=gpus, model=model,
                    options=options, env=types.MappingProxyType(dict(env)),
                    checks=_checks(doc.get("expect", {}), f"{where} [expect]"))


def _checks(table: Any, where: str) -> tuple[Check, ...]:
    """[expect.before] / [expect.after] hold at every version; each [[expect.versions]] table holds its
    `before` / `after` expectations at the upstream versions its `versions` specifier admits (where
    upstream's own placement changed, such as createLayout trying one GPU first from v0.12.11)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table with [expect.before] and/or [expect.after]")
    loader.reject_unknown(table, ("before", "after", "versions"), where, "table")
    checks = _side_checks(table, where, "")
    scoped = table.get("versions", [])
    if not isinstance(scoped, list) or not all(isinstance(t, dict) for t in scoped):
        raise ConfigError(f"{where[:-1]}.versions] must be an array of tables ([[expect.versions]] with "
                          "versions = \">=0.12.11\" and before / after)")
    for i, t in enumerate(scoped):
        here = f"{where[:-1]}.versions] #{i + 1}"
        loader.reject_unknown(t, ("versions", "before", "after"), here)
        spec = t.get("versions")
        try:
            if not isinstance(spec, str) or not spec.strip():
                raise InvalidSpecifier(str(spec))
            SpecifierSet(spec)
        except InvalidSpecifier:
            raise ConfigError(f"{here} key 'versions' must be a version specifier such as \">=0.12.11\", "
                              f"got {spec!r}") from None
        if not ({"before", "after"} & t.keys()):
            raise ConfigError(f"{here} has no before or after expectations")
        checks += _side_checks(t, here, spec)
    return tuple(checks)


def _side_checks(table: Mapping[str, Any], where: str, versions: str) -> list[Check]:
    checks = []
    for side in ("before", "after"):
        if side not in table:
            continue
        items = table[side]
        here = f"{where[:-1]}.{side}]" if not versions else f"{where} {side}"
        if not isinstance(items, dict):
            raise ConfigError(f"{here} must be a table (gpus_used = 1, layers_on_gpu = \">= 49\")")
        loader.reject_unknown(items, METRICS, here)
        for metric, raw in items.items():
            op, value = _expectation(METRICS[metric], raw, f"{here} key {metric!r}")
            checks.append(Check(side, metric, op, value, versions))
    return checks


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
    raise ConfigError(f"{what} must be a size up to 1 PiB: bytes or a string such as \"11.2 GiB\" or "
                      "\"457 MiB\" "
                      f"(units {', '.join(u.replace('I', 'i') for u in _UNITS)}), got {value!r}")


parse_size.describes = "a size such as \"11.2 GiB\" or a number of bytes"
CONVERTERS = {Size: parse_size}


def compute_numbers(library: str, compute: str) -> tuple[int, int]:
    """(major, minor) as Ollama stores them: CUDA "3.7" is (3, 7); ROCm "gfx906" is (9, 6) and
    "gfx1103" (0x11, 0x03), the inverse of the gfx%x%02x Ollama logs."""
    if library == "ROCm":
        m = re.fullmatch(r"gfx([0-9a-f]{1,2})([0-9a-f]{2})", compute)
        if not m:
            raise ValueError("key 'compute' of a ROCm GPU must be a gfx name such as 'gfx906', got "
                             f"{compute!r}")
        return int(m[1], 16), int(m[2], 16)
    m = re.fullmatch(r"(\d+)\.(\d+)", compute)
    if not m:
        raise ValueError(f"key 'compute' of a CUDA GPU must be a compute capability such as '3.7', "
                         f"got {compute!r}")
    return int(m[1]), int(m[2])


def driver_kind(ref: str) -> str:
    """The driver an upstream ref takes ("estimate" or "layout"); other refs are refused in one line."""
    version = tag_version(ref)
    for kind, spec in DRIVERS.items():
        if spec.contains(version, prereleases=True):
            return kind
    if version >= Version("0.30"):
        raise ConfigError(f"memtest drives Ollama's Go placement code, v0.12.0 to v0.24.x ({ESTIMATE} and "
                          f"{LAYOUT}); from v0.30 {ref} places layers with llama.cpp's own fit inside "
                          "llama/server, which has no Go placement code to drive")
    raise ConfigError(f"memtest knows v0.12.0 to v0.24.x (llm/memory.go's estimateGPULayers {ESTIMATE}, "
                      f"llamaServer.Load and createLayout {LAYOUT}); {ref} is older")


def check_ref(ref: str) -> None:
    driver_kind(ref)


def check_for_ref(scenarios: Sequence[Scenario], ref: str) -> None:
    """What a scenario says that the ref's placement code cannot take: Ollama's reserve per GPU
    (`minimum`) is a constant of the library from v0.12.11 (MinimumMemory())."""
    if driver_kind(ref) != "layout":
        return
    for s in scenarios:
        if any(g.minimum is not None for g in s.gpus):
            raise ConfigError(f"{s.path}: [gpus] key 'minimum' cannot be set at {ref}: from v0.12.11 "
                              "Ollama's reserve per GPU is fixed by the library (457 MiB for CUDA and ROCm); "
                              "drop the key, or run at v0.12.0 to v0.12.10")
