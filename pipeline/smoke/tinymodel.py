"""A tiny random-weight llama model in GGUF, for proving that a package loads and runs a model.

Ollama imports it with `ollama create NAME -f Modelfile` (`FROM ./tiny.gguf`) and generates with it on
any backend: the architecture is plain llama (the llama.cpp runner of v0.12.x), F32 weights, and a
SentencePiece byte-fallback vocabulary (unk, bos, eos and the 256 `<0xXX>` byte tokens), so every
prompt tokenizes. What it generates is noise; that it generates is the point.

Deterministic: the weights come from SHAKE-256 of a seed and the tensor name (not from numpy's
generators, whose streams may change between numpy releases), and the GGUF writer adds no time stamps,
so the same seed gives the same bytes on every run and every machine.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pipeline.records import record

ARCH = "llama"
SEED = 20251010


@record(positional=True)
class Shape:
    """Hyper-parameters of the tiny model: 2 blocks of width 64, about 470 KB as F32."""

    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 4
    n_ff: int = 128
    n_layer: int = 2
    n_ctx: int = 512

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


DEFAULT_SHAPE = Shape()


# Token types of the GGUF vocabulary (llama.cpp's llama_token_type): 2 unknown, 3 control, 6 byte.
UNKNOWN, CONTROL, BYTE = 2, 3, 6
SPECIAL = [("<unk>", UNKNOWN), ("<s>", CONTROL), ("</s>", CONTROL)]
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and types: the three specials, then one byte-fallback token per byte value."""
    tokens = [t for t, _ in SPECIAL] + [f"<0x{b:02X}>" for b in range(256)]
    types = [k for _, k in SPECIAL] + [BYTE] * 256
    scores = [0.0] * len(tokens)
    return tokens, scores, types


def _weights(seed: int, name: str, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Uniform in [-scale, scale), from SHAKE-256(seed, name): stable across numpy versions."""
    count = int(np.prod(shape))
    raw = hashlib.shake_256(f"{seed}:{name}".encode()).digest(4 * count)
    unit = np.frombuffer(raw, dtype="<u4").astype(np.float64) / 2.0**32
    return ((unit * 2.0 - 1.0) * scale).astype(np.float32).reshape(shape)


def tensors(shape: Shape = DEFAULT_SHAPE, seed: int = SEED) -> dict[str, np.ndarray]:
    """Every tensor of the model, by GGUF name; numpy shapes are (rows, columns), as the converters write."""
    n_vocab = len(vocabulary()[0])
    kv = shape.n_head_kv * shape.head_dim
    out: dict[str, np.ndarray] = {}

    def w(name: str, *dims: int) -> None:
        out[name] = _weights(seed, name, dims, 1.0 / np.sqrt(dims[-1]))

    w("token_embd.weight", n_vocab, shape.n_embd)
    for i in range(shape.n_layer):
        out[f"blk.{i}.attn_norm.weight"] = np.ones(shape.n_embd, dtype=np.float32)
        w(f"blk.{i}.attn_q.weight", shape.n_embd, shape.n_embd)
        w(f"blk.{i}.attn_k.weight", kv, shape.n_embd)
        w(f"blk.{i}.attn_v.weight", kv, shape.n_embd)
        w(f"blk.{i}.attn_output.weight", shape.n_embd, shape.n_embd)
        out[f"blk.{i}.ffn_norm.weight"] = np.ones(shape.n_embd, dtype=np.float32)
        w(f"blk.{i}.ffn_gate.weight", shape.n_ff, shape.n_embd)
        w(f"blk.{i}.ffn_up.weight", shape.n_ff, shape.n_embd)
        w(f"blk.{i}.ffn_down.weight", shape.n_embd, shape.n_ff)
    out["output_norm.weight"] = np.ones(shape.n_embd, dtype=np.float32)
    w("output.weight", n_vocab, shape.n_embd)
    # The specials' logits are 0 while the 256 byte tokens' are random around 0: a greedy (temperature 0)
    # generation never picks end-of-sequence, so it always runs to num_predict.
    out["output.weight"][: len(SPECIAL)] = 0.0
    return out


def write(path: Path, *, shape: Shape = DEFAULT_SHAPE, seed: int = SEED) -> Path:
    """Write the model to path (replacing it) and return path."""
    import gguf

    tokens, scores, types = vocabulary()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(partial, ARCH)
    writer.add_name("ollama-pipeline tiny random llama")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(shape.n_ctx)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(UNK_ID)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    for name, array in tensors(shape, seed).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial.replace(path)
    return path

