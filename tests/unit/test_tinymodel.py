"""tinymodel.py: a deterministic, tiny llama GGUF with a byte-fallback vocabulary."""

from __future__ import annotations

import hashlib

import numpy as np
from gguf import GGUFReader

from pipeline.smoke import tinymodel


def test_same_seed_gives_the_same_bytes(tmp_path):
    a = tinymodel.write(tmp_path / "a.gguf")
    b = tinymodel.write(tmp_path / "b.gguf")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    other = tinymodel.write(tmp_path / "c.gguf", seed=1)
    assert other.read_bytes() != a.read_bytes()
    assert not list(tmp_path.glob("*.partial"))


def test_model_is_a_few_hundred_kilobytes_of_llama(tmp_path):
    path = tinymodel.write(tmp_path / "tiny.gguf")
    assert 100_000 < path.stat().st_size < 1_000_000
    assert path.read_bytes()[:4] == b"GGUF"
    reader = GGUFReader(path)
    field = reader.fields["general.architecture"]
    assert bytes(field.parts[field.data[0]]).decode() == "llama"
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output_norm.weight", "output.weight", "blk.1.ffn_down.weight"} <= names


def test_vocabulary_is_sentencepiece_byte_fallback(tmp_path):
    reader = GGUFReader(tinymodel.write(tmp_path / "tiny.gguf"))
    model = reader.fields["tokenizer.ggml.model"]
    assert bytes(model.parts[model.data[0]]).decode() == "llama"
    tokens = reader.fields["tokenizer.ggml.tokens"]
    words = [bytes(tokens.parts[i]).decode() for i in tokens.data]
    types = [int(reader.fields["tokenizer.ggml.token_type"].parts[i][0])
             for i in reader.fields["tokenizer.ggml.token_type"].data]
    assert words[:3] == ["<unk>", "<s>", "</s>"]
    assert words[3:] == [f"<0x{b:02X}>" for b in range(256)]
    assert types[3:] == [6] * 256
    assert types[:3] == [2, 3, 3]


def test_special_tokens_never_win_a_greedy_pick():
    out = tinymodel.tensors()["output.weight"]
    assert not out[:3].any()
    assert out[3:].any(axis=1).all()
    assert out.dtype == np.float32
