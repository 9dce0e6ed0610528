"""The Go driver of the memory workbench: a test file put into the llm package of each tree, and the
input it reads per scenario (the synthetic GGUF's metadata and tensors, the GPUs, the options)."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.config.paths import TEMPLATES
from pipeline.errors import SourceError
from pipeline.infra import templates
from pipeline.tools.memtest.scenario import QUANTIZATIONS, Model, Scenario, TensorSpec, compute_numbers

# The driver template of each kind (scenario.driver_kind): estimateGPULayers in llm/memory.go up to
# v0.12.10, llamaServer.Load / ollamaServer.Load in llm/server.go from v0.12.11.
DRIVER_TEMPLATES = {"estimate": "memtest_driver_test.go.j2", "layout": "memtest_layout_driver_test.go.j2"}
DRIVER_NAME = "zz_pipeline_memtest_test.go"
# What the layout driver calls in llm/server.go.
LAYOUT_API = ("func (s *llamaServer) Load(", "func (s *ollamaServer) Load(",
              "func (s *llmServer) createLayout(")


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
        ("ffn_norm.weight", "F32", (e,)), ("ffn_gate.weight", main, (e, ff)),
        ("ffn_up.weight", main, (e, ff)), ("ffn_down.weight", down, (ff, e)))]
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
    return {"name": s.name, "placement": m.placement,
            "kv": [{"key": k, "type": t, "value": v} for k, t, v in kv],
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


def flash_attention_on(server_go: str) -> str:
    """The Go value of "flash attention on" in this tree's LoadRequest: a bool up to v0.13.3, then
    ml.FlashAttentionType."""
    missing = [f for f in LAYOUT_API if f not in server_go]
    if missing:
        raise SourceError(f"llm/server.go has no {missing[0]}...) here; memtest's layout driver knows "
                          "v0.12.11 to v0.24.x")
    m = re.search(r"^\tFlashAttention\s+(bool|ml\.FlashAttentionType)\s*$", server_go, re.M)
    if not m:
        raise SourceError("llm/server.go: LoadRequest.FlashAttention is neither bool nor "
                          "ml.FlashAttentionType here; memtest's layout driver knows v0.12.11 to v0.24.x")
    return "true" if m[1] == "bool" else "ml.FlashAttentionEnabled"


def render_estimate(memory_go: str) -> str:
    package, gpu_type = gpu_api(memory_go)
    return templates.render(TEMPLATES, DRIVER_TEMPLATES["estimate"], gpu_package=package, gpu_type=gpu_type)


def render_layout(server_go: str) -> str:
    return templates.render(TEMPLATES, DRIVER_TEMPLATES["layout"],
                            flash_attention_on=flash_attention_on(server_go))


def render_driver(tree: Path, kind: str) -> str:
    """The driver of `kind` for the tree's llm package; a tree without the code it drives is refused."""
    name = {"estimate": "memory.go", "layout": "server.go"}[kind]
    source = tree / "llm" / name
    if not source.is_file():
        raise SourceError(f"{tree.name}/llm/{name} is missing; memtest's {kind} driver needs it "
                          f"({'v0.12.0 to v0.12.10' if kind == 'estimate' else 'v0.12.11 to v0.24.x'})")
    text = source.read_text()
    return render_estimate(text) if kind == "estimate" else render_layout(text)
