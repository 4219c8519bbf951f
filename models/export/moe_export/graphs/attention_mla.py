"""DeepSeek multi-head latent attention layer graph, working on the compressed cache.

The cache holds the latent after kv_a_layernorm (format 1 packages cached it before the norm and
normalised the whole cache on every call) and the rotated shared rope key. Instead of
expanding per-head keys and values for every cached row, kv_b_proj is absorbed into the query and
output sides (q_nope W_k . c and (p . c) W_v^T), which is the same product reassociated; this keeps
per-token work proportional to the latent size rather than heads x head dims.
"""

from __future__ import annotations

import numpy as np

from moe_export.config import MlaSpec
from moe_export.graphs import ops
from moe_export.graphs.builder import FLOAT, INT64, GraphWriter
from moe_export.quant import FP32, QuantConfig
from moe_export.rope import RopeSpec

_NEG = float(np.finfo(np.float32).min)  # what transformers adds for masked positions
_LORA_EPS = 1e-6  # q_a_layernorm / kv_a_layernorm are built without rms_norm_eps in transformers


def cache_layout(a: MlaSpec) -> list[dict]:
    return [{"name": "latent", "shape": [a.kv_lora_rank]}, {"name": "k_rope", "shape": [a.qk_rope_head_dim]}]


def build(g: GraphWriter, a: MlaSpec, rope: RopeSpec, eps: float, w: dict[str, np.ndarray],
          qc: QuantConfig = FP32) -> None:
    nh, nope, rd, vd, r = a.num_heads, a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim, a.kv_lora_rank
    h = w["input_norm"].shape[0]
    hidden = g.input("hidden", FLOAT, ["T", h])
    positions = g.input("positions", INT64, ["T"])
    past_latent = g.input("past_latent", FLOAT, ["P", r])
    past_rope = g.input("past_k_rope", FLOAT, ["P", rd])

    x = ops.rms_norm(g, hidden, w["input_norm"], eps)
    if a.q_lora_rank is None:
        q = ops.linear(g, x, w["q"], None, qc)
    else:
        qa = ops.rms_norm(g, ops.linear(g, x, w["q_a"], w.get("q_a_bias"), qc), w["q_a_norm"], _LORA_EPS)
        q = ops.linear(g, qa, w["q_b"], None, qc)
    q = g.op("Reshape", q, g.const([0, nh, nope + rd]))
    q_nope = ops.slice_last(g, q, 0, nope)
    q_pe = ops.slice_last(g, q, nope, nope + rd)

    ckv = ops.linear(g, x, w["kv_a"], w.get("kv_a_bias"), qc)  # [T, r + rd]
    latent = ops.slice_last(g, ckv, 0, r)
    k_pe = g.op("Unsqueeze", ops.slice_last(g, ckv, r, r + rd), g.const([1]))  # [T, 1, rd]
    cos, sin = ops.rope_cos_sin(g, positions, rope)
    q_pe = ops.apply_rope(g, q_pe, cos, sin, rope)
    k_pe = g.op("Squeeze", ops.apply_rope(g, k_pe, cos, sin, rope), g.const([1]))

    c_new = ops.rms_norm(g, latent, w["kv_a_norm"], _LORA_EPS)  # [T, r], cached normalised
    kv_b = w["kv_b"].reshape(nh, nope + vd, r)
    w_k = ops.stored_matrix(g, "w_k", kv_b[:, :nope, :], qc, hidden)  # [nh, nope, r]
    w_vt = ops.stored_matrix(g, "w_vt", kv_b[:, nope:, :].transpose(0, 2, 1), qc, hidden)  # [nh, r, vd]

    # Scores against the cache and against the new rows are separate products that read the cache
    # in place; only the scores are concatenated. Heads and tokens are flattened into the rows of
    # one 2-D GEMM, so each cache matrix is read once (not once per head).
    t = ops.dim(g, hidden, 0)
    q_lat = g.op("MatMul", g.op("Transpose", q_nope, perm=[1, 0, 2]), w_k)  # [nh, T, r]
    q_lat = g.op("Reshape", q_lat, g.const([-1, r]))  # [nh*T, r]
    q_pe = g.op("Reshape", g.op("Transpose", q_pe, perm=[1, 0, 2]), g.const([-1, rd]))  # [nh*T, rd]

    def scores(lat: str, rot: str) -> str:
        s = g.op("Add", g.op("MatMul", q_lat, g.op("Transpose", lat, perm=[1, 0])),
                 g.op("MatMul", q_pe, g.op("Transpose", rot, perm=[1, 0])))  # [nh*T, S]
        return g.op("Mul", s, g.const(a.scaling, np.float32))

    ar = g.op("Range", g.const(0), t, g.const(1))
    causal = g.op("LessOrEqual", ar, g.op("Unsqueeze", ar, g.const([1])))  # new row j <= query i
    heads_shape = g.op("Concat", g.const([nh, -1]), g.op("Unsqueeze", t, g.const([0])), axis=0)
    s_new = g.op("Reshape", scores(c_new, k_pe), heads_shape)  # [nh, T, T]
    rows_shape = g.op("Concat", g.const([-1]), g.op("Unsqueeze", t, g.const([0])), axis=0)
    s_new = g.op("Reshape", g.op("Where", causal, s_new, g.const(_NEG, np.float32)), rows_shape)  # [nh*T, T]
    probs = g.op("Softmax", g.op("Concat", scores(past_latent, past_rope), s_new, axis=-1), axis=-1)  # [nh*T, S]
    split = g.op("Unsqueeze", ops.dim(g, past_latent, 0), g.const([0]))
    p_past = g.op("Slice", probs, g.const([0]), split, g.const([1]))
    p_new = g.op("Slice", probs, split, g.const([np.iinfo(np.int64).max]), g.const([1]))
    ctx_lat = g.op("Add", g.op("MatMul", p_past, past_latent), g.op("MatMul", p_new, c_new))  # [nh*T, r]
    ctx_lat = g.op("Reshape", ctx_lat, g.const([nh, -1, r]))  # [nh, T, r]
    ctx = g.op("MatMul", ctx_lat, w_vt)  # [nh, T, vd]
    ctx = g.op("Reshape", g.op("Transpose", ctx, perm=[1, 0, 2]), g.const([0, nh * vd]))
    out = g.op("Add", hidden, ops.linear(g, ctx, w["o"], w.get("o_bias"), qc))
    g.output(out, "hidden_out", FLOAT, ["T", h])
    g.output(ops.rms_norm(g, out, w["post_norm"], eps), "ffn_in", FLOAT, ["T", h])
    g.output(c_new, "new_latent", FLOAT, ["T", r])
    g.output(k_pe, "new_k_rope", FLOAT, ["T", rd])
