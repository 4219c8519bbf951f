"""The peer benchmark's model generators: one checkpoint that both moe_export and llama.cpp's
layout accept, with the same arrays on both sides.

Run (gguf-py from the pinned sdist, see run.sh):
  PYTHONPATH=models/export:$MOED_PEER_CACHE/src/llama_cpp_python-<ver>/vendor/llama.cpp/gguf-py \
    .venv/bin/python -m pytest -q tests/peer/test_peer.py
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from checkpoint import vocabulary, write_checkpoint
from safetensors import safe_open
from shapes import QUICK_SHAPES, SHAPES

gguf = pytest.importorskip("gguf")
from ckpt_gguf import write_gguf  # after the skip: it needs gguf


@pytest.fixture(scope="module", params=QUICK_SHAPES)
def made(request, tmp_path_factory):
    shape = SHAPES[request.param]
    root = tmp_path_factory.mktemp(shape.name)
    write_checkpoint(root / "ckpt", shape.config, seed=1)
    write_gguf(root / "ckpt", root / "f16.gguf", gguf)
    return shape, root


def test_vocabulary_has_the_configured_size_and_leaves_ascii_as_bytes(made):
    shape, root = made
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(root / "ckpt" / "tokenizer.json"))
    assert tok.get_vocab_size() == shape.config["vocab_size"]
    text = "The quick brown fox, 123!"
    assert tok.encode(text).ids == list(text.encode())
    tokens, merges = vocabulary(shape.config["vocab_size"])
    assert len(set(tokens)) == len(tokens) == len(merges) + 256 + 6


def test_moe_export_accepts_the_checkpoint(made, tmp_path):
    _, root = made
    done = subprocess.run([sys.executable, "-m", "moe_export", str(root / "ckpt"), str(tmp_path / "pkg"),
                           "--quant", "int4", "--quiet"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert manifest["dims"]["vocab_size"] == SHAPES[made[0].name].config["vocab_size"]


def test_gguf_has_llama_cpp_names_and_the_same_arrays(made):
    shape, root = made
    arch = gguf.MODEL_ARCH.DEEPSEEK2 if shape.arch == "deepseek_v3" else gguf.MODEL_ARCH.QWEN3MOE
    allowed = {gguf.TENSOR_NAMES[t].format(bid=b) for t in gguf.MODEL_TENSORS[arch]
               for b in range(shape.config["num_hidden_layers"])}
    reader = gguf.GGUFReader(root / "f16.gguf")
    tensors = {t.name: t for t in reader.tensors}
    for name in tensors:
        assert name.rsplit(".", 1)[0] in allowed, name
    assert reader.fields[f"{gguf.MODEL_ARCH_NAMES[arch]}.block_count"].contents() == \
        shape.config["num_hidden_layers"]
    assert len(reader.fields["tokenizer.ggml.tokens"].contents()) == shape.config["vocab_size"]
    cfg = shape.config
    layer = cfg["num_hidden_layers"] - 1
    with safe_open(str(root / "ckpt" / "model.safetensors"), framework="np") as f:
        # Experts stacked in expert order.
        stacked = np.asarray(tensors[f"blk.{layer}.ffn_up_exps.weight"].data)
        assert np.array_equal(stacked[2], f.get_tensor(f"model.layers.{layer}.mlp.experts.2.up_proj.weight"))
        if shape.arch == "deepseek_v3":
            # k_b (transposed) and v_b put back together are kv_b_proj.
            heads, nope, vd = cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["v_head_dim"]
            k_b = np.asarray(tensors[f"blk.{layer}.attn_k_b.weight"].data)
            v_b = np.asarray(tensors[f"blk.{layer}.attn_v_b.weight"].data)
            kv_b = np.concatenate([k_b.transpose(0, 2, 1), v_b], axis=1).reshape(heads * (nope + vd), -1)
            assert np.array_equal(kv_b, f.get_tensor(f"model.layers.{layer}.self_attn.kv_b_proj.weight"))
            bias = np.asarray(tensors[f"blk.{layer}.exp_probs_b.bias"].data)
            assert np.array_equal(bias, f.get_tensor(f"model.layers.{layer}.mlp.gate.e_score_correction_bias"))
        else:
            q = np.asarray(tensors[f"blk.{layer}.attn_q.weight"].data)
            assert np.array_equal(q, f.get_tensor(f"model.layers.{layer}.self_attn.q_proj.weight"))
