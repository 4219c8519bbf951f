"""Multi-head / grouped-query attention layer graph with RoPE, optional q/k norm, bias and clipping."""

from __future__ import annotations

import numpy as np

from moe_export.config import MhaSpec
from moe_export.graphs import ops
from moe_export.graphs.builder import FLOAT, INT64, GraphWriter
from moe_export.quant import FP32, QuantConfig
from moe_export.rope import RopeSpec


def cache_layout(a: MhaSpec) -> list[dict]:
    return [{"name": "key", "shape": [a.num_kv_heads, a.head_dim]},
            {"name": "value", "shape": [a.num_kv_heads, a.head_dim]}]


def build(g: GraphWriter, a: MhaSpec, rope: RopeSpec, eps: float, w: dict[str, np.ndarray],
          qc: QuantConfig = FP32) -> None:
    nh, kvh, hd = a.num_heads, a.num_kv_heads, a.head_dim
    groups = nh // kvh
    h = w["input_norm"].shape[0]
    hidden = g.input("hidden", FLOAT, ["T", h])
    positions = g.input("positions", INT64, ["T"])
    past_k = g.input("past_key", FLOAT, ["P", kvh, hd])
    past_v = g.input("past_value", FLOAT, ["P", kvh, hd])

    x = ops.rms_norm(g, hidden, w["input_norm"], eps)
    q = ops.linear(g, x, w["q"], w.get("q_bias"), qc)
    k = ops.linear(g, x, w["k"], w.get("k_bias"), qc)
    v = ops.linear(g, x, w["v"], w.get("v_bias"), qc)
    if a.qk_norm == "full":  # OLMoE normalises the whole projection before splitting heads
        q = ops.rms_norm(g, q, w["q_norm"], eps)
        k = ops.rms_norm(g, k, w["k_norm"], eps)
    if a.clip_qkv is not None:
        lo, hi = g.const(-a.clip_qkv, np.float32), g.const(a.clip_qkv, np.float32)
        q, k, v = (g.op("Clip", t, lo, hi) for t in (q, k, v))
    q = g.op("Reshape", q, g.const([0, nh, hd]))
    k = g.op("Reshape", k, g.const([0, kvh, hd]))
    v = g.op("Reshape", v, g.const([0, kvh, hd]))
    if a.qk_norm == "head":  # Qwen3 normalises each head
        q = ops.rms_norm(g, q, w["q_norm"], eps)
        k = ops.rms_norm(g, k, w["k_norm"], eps)
    cos, sin = ops.rope_cos_sin(g, positions, rope)
    q = ops.apply_rope(g, q, cos, sin, rope)
    k = ops.apply_rope(g, k, cos, sin, rope)

    keys = g.op("Concat", past_k, k, axis=0)  # [S, kvh, hd]
    values = g.op("Concat", past_v, v, axis=0)
    # Query head j*groups + r reads KV head j (transformers' repeat_kv), hence [kvh, groups, T, hd].
    qg = g.op("Transpose", g.op("Reshape", q, g.const([0, kvh, groups, hd])), perm=[1, 2, 0, 3])
    kt = g.op("Unsqueeze", g.op("Transpose", keys, perm=[1, 2, 0]), g.const([1]))  # [kvh, 1, hd, S]
    vt = g.op("Unsqueeze", g.op("Transpose", values, perm=[1, 0, 2]), g.const([1]))  # [kvh, 1, S, hd]
    scores = g.op("Mul", g.op("MatMul", qg, kt), g.const(a.scaling, np.float32))  # [kvh, groups, T, S]
    probs = ops.masked_softmax(g, scores, ops.causal_allowed(g, past_k, ops.dim(g, hidden, 0)))
    ctx = g.op("Transpose", g.op("MatMul", probs, vt), perm=[2, 0, 1, 3])  # [T, kvh, groups, hd]
    ctx = g.op("Reshape", ctx, g.const([0, nh * hd]))
    out = g.op("Add", hidden, ops.linear(g, ctx, w["o"], w.get("o_bias"), qc))
    g.output(out, "hidden_out", FLOAT, ["T", h])
    g.output(ops.rms_norm(g, out, w["post_norm"], eps), "ffn_in", FLOAT, ["T", h])
    g.output(k, "new_key", FLOAT, ["T", kvh, hd])
    g.output(v, "new_value", FLOAT, ["T", kvh, hd])
