"""Multi-head / grouped-query attention layer graph with RoPE, optional q/k norm, bias and clipping."""

from __future__ import annotations

import numpy as np

from moe_export.config import MhaSpec
from moe_export.graphs import ops
from moe_export.graphs.builder import FLOAT, INT64, GraphWriter
from moe_export.quant import FP32, QuantConfig
from moe_export.rope import RopeSpec

_NEG = float(np.finfo(np.float32).min)  # what transformers adds for masked positions


# Cache layouts of the `past_` inputs (FORMAT.md "KV cache layouts"). token_major: [P, kvh, hd], the
# past concatenated with the new rows in the graph (a copy of the whole cache per call). head_major:
# the engine's buffer [kvh, C, hd] with capacity C >= P, rows P.. masked, so each KV head is one
# contiguous matrix that the score and context products read in place.
TOKEN_MAJOR = "token_major"
HEAD_MAJOR = "head_major"


def cache_layout(a: MhaSpec) -> list[dict]:
    return [{"name": "key", "shape": [a.num_kv_heads, a.head_dim]},
            {"name": "value", "shape": [a.num_kv_heads, a.head_dim]}]


def build(g: GraphWriter, a: MhaSpec, rope: RopeSpec, eps: float, w: dict[str, np.ndarray],
          qc: QuantConfig = FP32, layout: str = HEAD_MAJOR) -> None:
    nh, kvh, hd = a.num_heads, a.num_kv_heads, a.head_dim
    groups = nh // kvh
    h = w["input_norm"].shape[0]
    hidden = g.input("hidden", FLOAT, ["T", h])
    positions = g.input("positions", INT64, ["T"])
    past_shape = ["P", kvh, hd] if layout == TOKEN_MAJOR else [kvh, "C", hd]
    past_k = g.input("past_key", FLOAT, past_shape)
    past_v = g.input("past_value", FLOAT, past_shape)

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

    if layout == TOKEN_MAJOR:
        ctx = _attend_concat(g, a, q, k, v, past_k, past_v, hidden)
    else:
        ctx = _attend_head_major(g, a, q, k, v, past_k, past_v, positions)
    ctx = g.op("Reshape", ctx, g.const([0, nh * hd]))
    out = g.op("Add", hidden, ops.linear(g, ctx, w["o"], w.get("o_bias"), qc))
    g.output(out, "hidden_out", FLOAT, ["T", h])
    g.output(ops.rms_norm(g, out, w["post_norm"], eps), "ffn_in", FLOAT, ["T", h])
    g.output(k, "new_key", FLOAT, ["T", kvh, hd])
    g.output(v, "new_value", FLOAT, ["T", kvh, hd])


def _attend_concat(g: GraphWriter, a: MhaSpec, q: str, k: str, v: str, past_k: str, past_v: str,
                   hidden: str) -> str:
    """Attention over Concat(past, new) for the token-major cache; returns ctx [T, kvh, groups, hd]."""
    nh, kvh, hd = a.num_heads, a.num_kv_heads, a.head_dim
    groups = nh // kvh
    keys = g.op("Concat", past_k, k, axis=0)  # [S, kvh, hd]
    values = g.op("Concat", past_v, v, axis=0)
    # Query head j*groups + r reads KV head j (transformers' repeat_kv), hence [kvh, groups, T, hd].
    qg = g.op("Transpose", g.op("Reshape", q, g.const([0, kvh, groups, hd])), perm=[1, 2, 0, 3])
    kt = g.op("Unsqueeze", g.op("Transpose", keys, perm=[1, 2, 0]), g.const([1]))  # [kvh, 1, hd, S]
    vt = g.op("Unsqueeze", g.op("Transpose", values, perm=[1, 0, 2]), g.const([1]))  # [kvh, 1, S, hd]
    scores = g.op("Mul", g.op("MatMul", qg, kt), g.const(a.scaling, np.float32))  # [kvh, groups, T, S]
    probs = ops.masked_softmax(g, scores, ops.causal_allowed(g, past_k, ops.dim(g, hidden, 0)))
    return g.op("Transpose", g.op("MatMul", probs, vt), perm=[2, 0, 1, 3])  # [T, kvh, groups, hd]


def _attend_head_major(g: GraphWriter, a: MhaSpec, q: str, k: str, v: str, past_k: str, past_v: str,
                       positions: str) -> str:
    """Attention reading the head-major cache [kvh, C, hd] in place; returns ctx [T, kvh, groups, hd].

    Scores against the cache and against the new rows are separate products; only the scores are
    concatenated for the softmax, and the context is the sum of the two probability products. The
    first position is P, so cache rows P.. (spare capacity) are masked out.
    """
    nh, kvh, hd = a.num_heads, a.num_kv_heads, a.head_dim
    groups = nh // kvh
    scale = g.const(a.scaling, np.float32)
    neg = g.const(_NEG, np.float32)
    # Query head j*groups + r reads KV head j (transformers' repeat_kv), hence [kvh, groups, T, hd];
    # against the cache all groups*T rows of a KV head are one product that reads the head once.
    qg = g.op("Transpose", g.op("Reshape", q, g.const([0, kvh, groups, hd])), perm=[1, 2, 0, 3])
    q_rows = g.op("Reshape", qg, g.const([kvh, -1, hd]))  # [kvh, G*T, hd]
    s_past = g.op("Mul", g.op("MatMul", q_rows, g.op("Transpose", past_k, perm=[0, 2, 1])), scale)  # [kvh, G*T, C]
    cap = ops.dim(g, past_k, 1)
    first = g.op("Slice", positions, g.const([0]), g.const([1]))  # [1]: P
    valid = g.op("Less", g.op("Range", g.const(0), cap, g.const(1)), first)  # [C]
    s_past = g.op("Where", valid, s_past, neg)

    kt = g.op("Unsqueeze", g.op("Transpose", k, perm=[1, 2, 0]), g.const([1]))  # [kvh, 1, hd, T]
    s_new = g.op("Mul", g.op("MatMul", qg, kt), scale)  # [kvh, G, T, T]
    t = ops.dim(g, q, 0)
    ar = g.op("Range", g.const(0), t, g.const(1))
    causal = g.op("LessOrEqual", ar, g.op("Unsqueeze", ar, g.const([1])))  # new row j <= query i
    rows_shape = g.op("Concat", g.const([kvh, -1]), g.op("Unsqueeze", t, g.const([0])), axis=0)
    s_new = g.op("Reshape", g.op("Where", causal, s_new, neg), rows_shape)  # [kvh, G*T, T]

    probs = g.op("Softmax", g.op("Concat", s_past, s_new, axis=-1), axis=-1)
    split = g.op("Unsqueeze", cap, g.const([0]))
    p_past = g.op("Slice", probs, g.const([0]), split, g.const([2]))
    p_new = g.op("Slice", probs, split, g.const([np.iinfo(np.int64).max]), g.const([2]))
    ctx = g.op("Add", g.op("MatMul", p_past, past_v),
               g.op("MatMul", p_new, g.op("Transpose", v, perm=[1, 0, 2])))  # [kvh, G*T, hd]
    return g.op("Transpose", g.op("Reshape", ctx, g.const([kvh, groups, -1, hd])), perm=[2, 0, 1, 3])
