"""A random-weight Hugging Face checkpoint for one shape: config.json, model.safetensors, tokenizer.

Tensors carry the names real checkpoints use (per-expert `mlp.experts.E.gate_proj.weight`, MLA's
`kv_a_proj_with_mqa`, `e_score_correction_bias`, ...). Matrices are stored as F16 (half the disk of
F32; both engines widen or quantize them), vectors as F32. Values are deterministic per (seed,
name): linear weights ~ U(-1, 1) / sqrt(fan_in), norms near 1. The safetensors file is written one
tensor at a time, so memory stays at one tensor.

The tokenizer is byte-level BPE: ids 0..255 are the bytes, 256.. six special tokens, then two-byte
tokens (a byte >= 0x80 followed by any byte) with one merge each, up to the vocabulary size, so
the same vocabulary and merges can go into the GGUF and plain ASCII text never merges.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np

# The exporter's synthetic packages use the same byte-level BPE and special tokens.
from moe_export.synth import SPECIAL_TOKENS, byte_level_bpe, bytes_to_unicode

BOS_ID, EOS_ID = 256, 259


def tensor_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """HF tensor name -> shape, in checkpoint order."""
    h, v, n = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
    deepseek = cfg["model_type"] == "deepseek_v3"
    experts = cfg["n_routed_experts"] if deepseek else cfg["num_experts"]
    f = cfg["moe_intermediate_size"]
    for i in range(n):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = (h,)
        out[p + "post_attention_layernorm.weight"] = (h,)
        a = p + "self_attn."
        if deepseek:
            heads, r, nope = cfg["num_attention_heads"], cfg["kv_lora_rank"], cfg["qk_nope_head_dim"]
            rope, vd, q = cfg["qk_rope_head_dim"], cfg["v_head_dim"], cfg["q_lora_rank"]
            out[a + "q_a_proj.weight"] = (q, h)
            out[a + "q_a_layernorm.weight"] = (q,)
            out[a + "q_b_proj.weight"] = (heads * (nope + rope), q)
            out[a + "kv_a_proj_with_mqa.weight"] = (r + rope, h)
            out[a + "kv_a_layernorm.weight"] = (r,)
            out[a + "kv_b_proj.weight"] = (heads * (nope + vd), r)
            out[a + "o_proj.weight"] = (h, heads * vd)
        else:
            hd, heads, kv = cfg["head_dim"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
            out[a + "q_proj.weight"] = (heads * hd, h)
            out[a + "k_proj.weight"] = (kv * hd, h)
            out[a + "v_proj.weight"] = (kv * hd, h)
            out[a + "o_proj.weight"] = (h, heads * hd)
            out[a + "q_norm.weight"] = (hd,)
            out[a + "k_norm.weight"] = (hd,)
        m = p + "mlp."
        if deepseek and i < cfg["first_k_dense_replace"]:
            d = cfg["intermediate_size"]
            out.update({m + "gate_proj.weight": (d, h), m + "up_proj.weight": (d, h), m + "down_proj.weight": (h, d)})
            continue
        out[m + "gate.weight"] = (experts, h)
        if deepseek:
            out[m + "gate.e_score_correction_bias"] = (experts,)
        for e in range(experts):
            x = f"{m}experts.{e}."
            out.update({x + "gate_proj.weight": (f, h), x + "up_proj.weight": (f, h), x + "down_proj.weight": (h, f)})
        if deepseek:
            s = f * cfg["n_shared_experts"]
            x = m + "shared_experts."
            out.update({x + "gate_proj.weight": (s, h), x + "up_proj.weight": (s, h), x + "down_proj.weight": (h, s)})
    out["model.norm.weight"] = (h,)
    out["lm_head.weight"] = (v, h)
    return out


def random_tensor(seed: int, name: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if len(shape) == 1:
        if name.endswith("e_score_correction_bias"):
            return (0.01 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
        return (1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    x = rng.random(shape, dtype=np.float32)
    scale = np.float32(1.0 / np.sqrt(shape[-1]))
    x *= 2 * scale
    x -= scale
    return x.astype(np.float16)


def _write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], seed: int) -> None:
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        dtype, size = ("F32", 4) if len(shape) == 1 else ("F16", 2)
        nbytes = size * int(np.prod(shape))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape in shapes.items():
            random_tensor(seed, name, shape).tofile(f)
    tmp.replace(path)


def vocabulary(size: int) -> tuple[list[str], list[str]]:
    """(tokens by id, merges) of the byte-level BPE described in the module doc."""
    byte_chars = bytes_to_unicode()
    tokens = [byte_chars[b] for b in range(256)] + list(SPECIAL_TOKENS)
    if size < len(tokens) or size > len(tokens) + 128 * 256:
        raise ValueError(f"vocab_size {size} must be in {len(tokens)}..{len(tokens) + 128 * 256}")
    merges = []
    for i in range(size - len(tokens)):
        a, b = byte_chars[128 + i // 256], byte_chars[i % 256]
        tokens.append(a + b)
        merges.append(f"{a} {b}")
    return tokens, merges


def _tokenizer_json(size: int) -> dict:
    tokens, merges = vocabulary(size)
    return byte_level_bpe({t: i for i, t in enumerate(tokens)}, merges)


def write_checkpoint(out: Path, cfg: dict, seed: int) -> None:
    """Writes the checkpoint into `out` (created); model.safetensors last, so its presence means done."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    (out / "tokenizer.json").write_text(json.dumps(_tokenizer_json(cfg["vocab_size"]), ensure_ascii=False),
                                        encoding="utf-8")
    tcfg = {"bos_token": SPECIAL_TOKENS[0], "eos_token": SPECIAL_TOKENS[3], "add_bos_token": False,
            "model_max_length": cfg["max_position_embeddings"]}
    (out / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=1), encoding="utf-8")
    (out / "generation_config.json").write_text(json.dumps({"temperature": 0.0}), encoding="utf-8")
    _write_safetensors(out / "model.safetensors", tensor_shapes(cfg), seed)
