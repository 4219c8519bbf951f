"""Multi-head / grouped-query attention layer graph with RoPE, optional q/k norm, bias and clipping."""

from __future__ import annotations

import numpy as np

from moe_export.config import MhaSpec
from moe_export.graphs import ops
from moe_export.graphs.builder import FLOAT, FLOAT16, INT32, INT64, MS_DOMAIN, GraphWriter
from moe_export.quant import FP32, QuantConfig
from moe_export.rope import RopeSpec



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
          qc: QuantConfig = FP32, layout: str = HEAD_MAJOR, cache_dtype: str = "float32") -> None:
    half = cache_dtype == "float16"
    if half and layout != HEAD_MAJOR:
        raise ValueError("a float16 KV cache needs the head_major layout")
    nh, kvh, hd = a.num_heads, a.num_kv_heads, a.head_dim
    groups = nh // kvh
    h = w["input_norm"].shape[0]
    hidden = g.input("hidden", FLOAT, ["T", h])
    positions = g.input("positions", INT64, ["T"])
    past_shape = ["P", kvh, hd] if layout == TOKEN_MAJOR else [kvh, "C", hd]
    past_k = g.input("past_key", FLOAT16 if half else FLOAT, past_shape)
    past_v = g.input("past_value", FLOAT16 if half else FLOAT, past_shape)

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
        ctx = _attend_head_major(g, a, q, k, v, past_k, past_v, positions, half)
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
                       positions: str, half: bool = False) -> str:
    """Attention reading the head-major cache [kvh, C, hd] in place; returns ctx [T, nh, hd].

    One `com.microsoft.GroupQueryAttention` node (rotary already applied, so `do_rotary` stays 0):
    the cache is its BNSH past with batch 1 and capacity C, of which the first P rows are valid
    (P is the first position). The present outputs are left unused: the engine appends the new
    rows itself. moed runs this node with its own kernel (FORMAT.md "KV cache layouts").

    With a float16 cache (`half`) the node runs in float16 (GroupQueryAttention has one type for all
    its inputs): query, key and value are cast to it, so the new rows a token attends to are the
    values the engine caches (it rounds the f32 `new_` outputs the same way), and the context is
    cast back.
    """
    nh, kvh, hd = a.num_heads, a.num_kv_heads, a.head_dim
    t = ops.dim(g, q, 0)
    first = g.op("Slice", positions, g.const([0]), g.const([1]))  # [1]: P
    total = g.op("Add", first, t)  # [1]: P + T
    seqlens = g.op("Cast", g.op("Sub", total, g.const([1])), to=INT32)
    total = g.op("Cast", g.op("Squeeze", total, g.const([0])), to=INT32)
    batch = g.const([0])
    if half:
        q, k, v = (g.op("Cast", x, to=FLOAT16) for x in (q, k, v))
    ctx, _, _ = g.op("GroupQueryAttention",
                     g.op("Reshape", q, g.const([1, -1, nh * hd])),
                     g.op("Reshape", k, g.const([1, -1, kvh * hd])),
                     g.op("Reshape", v, g.const([1, -1, kvh * hd])),
                     g.op("Unsqueeze", past_k, batch), g.op("Unsqueeze", past_v, batch), seqlens, total,
                     outputs=3, domain=MS_DOMAIN, num_heads=nh, kv_num_heads=kvh, scale=float(a.scaling))
    if half:
        ctx = g.op("Cast", ctx, to=FLOAT)
    return g.op("Reshape", ctx, g.const([-1, nh, hd]))
