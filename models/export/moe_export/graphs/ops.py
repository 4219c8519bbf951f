"""Building blocks shared by the graphs: RMSNorm, linear layers (fp32/fp16/MatMulNBits), RoPE, masks."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from moe_export import quant
from moe_export.graphs.builder import MS_DOMAIN, GraphWriter
from moe_export.rope import RopeSpec

_FP32 = quant.QuantConfig("fp32")
_NEG = float(np.finfo(np.float32).min)  # what transformers adds for masked positions


def rms_norm(g: GraphWriter, x: str, weight: np.ndarray, eps: float) -> str:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis, in the pattern ORT fuses."""
    sq = g.op("Pow", x, g.const(2.0, np.float32))
    var = g.op("ReduceMean", sq, axes=[-1], keepdims=1)
    denom = g.op("Sqrt", g.op("Add", var, g.const(eps, np.float32)))
    return g.op("Mul", g.op("Div", x, denom), g.weight("norm", weight.astype(np.float32)))


def linear(g: GraphWriter, x: str, weight: np.ndarray, bias: np.ndarray | None = None,
           qc: quant.QuantConfig = _FP32) -> str:
    """y = x @ weight^T (+ bias) for 2-D x [T, K] and weight [N, K], stored as `qc` says."""
    n, k = weight.shape
    if qc.precision in ("fp32", "fp16"):
        if qc.precision == "fp32":
            w = g.weight("w", weight.astype(np.float32))
        else:
            w = g.op("Cast", g.weight("w16", weight.astype(np.float16)), to=TensorProto.FLOAT)
        inputs = [x, w] + ([g.weight("b", bias.astype(np.float32))] if bias is not None else [])
        return g.op("Gemm", *inputs, transB=1)
    b, scales, zeros = quant.quantize(weight, qc.bits, qc.block_size, qc.symmetric)
    inputs = [x, g.weight("q", b), g.weight("scales", scales)] + ([g.weight("zp", zeros)] if zeros is not None else [])
    y = g.op("MatMulNBits", *inputs, domain=MS_DOMAIN, K=k, N=n, bits=qc.bits, block_size=qc.block_size,
             accuracy_level=qc.accuracy_level)
    if bias is not None:
        y = g.op("Add", y, g.weight("b", bias.astype(np.float32)))
    return y


def gather_rows(g: GraphWriter, table: np.ndarray, ids: str, qc: quant.QuantConfig = _FP32) -> str:
    """table[ids] for a table [R, C], stored as `qc` says; int8/int4 rows dequantize on gather
    (GatherBlockQuantized, blocks along C), so only the gathered rows' codes are read."""
    r, c = table.shape
    if qc.bits is None or c % qc.block_size:
        if qc.precision == "fp16":
            return g.op("Cast", g.op("Gather", g.weight("rows16", table.astype(np.float16)), ids, axis=0),
                        to=TensorProto.FLOAT)
        return g.op("Gather", g.weight("rows", table.astype(np.float32)), ids, axis=0)
    b, scales, zeros = quant.quantize(table, qc.bits, qc.block_size, qc.symmetric)
    inputs = [g.weight("rows_q", b.reshape(r, c * qc.bits // 8)), ids, g.weight("rows_scales", scales)]
    if zeros is not None:
        inputs.append(g.weight("rows_zp", zeros))
    return g.op("GatherBlockQuantized", *inputs, domain=MS_DOMAIN, bits=qc.bits, block_size=qc.block_size,
                gather_axis=0, quantize_axis=1)


def stored_matrix(g: GraphWriter, hint: str, array: np.ndarray, qc: quant.QuantConfig, anchor: str) -> str:
    """A constant [A, B, C] weight used by MatMul, stored as `qc` says: int8/int4 are dequantized in the
    graph on every call (blocks along C). `anchor` is any graph input: the gather's indices depend on its
    shape so ONNX Runtime cannot fold the dequantization into an fp32 initializer at load."""
    if qc.bits is None or array.shape[-1] % qc.block_size:
        return g.weight(hint, array.astype(np.float32))
    a = array.shape[0]
    rows = np.ascontiguousarray(array.reshape(a, -1))
    ids = g.op("Add", g.op("Mul", dim(g, anchor, 0), g.const(0)), g.const(np.arange(a)))
    return g.op("Reshape", gather_rows(g, rows, ids, qc), g.const(list(array.shape)))


def silu(g: GraphWriter, x: str) -> str:
    return g.op("Mul", x, g.op("Sigmoid", x))


def slice_last(g: GraphWriter, x: str, start: int, end: int, step: int = 1, axis: int = -1) -> str:
    return g.op("Slice", x, g.const([start]), g.const([end]), g.const([axis]), g.const([step]))


def dim(g: GraphWriter, x: str, axis: int) -> str:
    """Scalar int64 size of `x` along `axis`."""
    return g.op("Gather", g.op("Shape", x), g.const(axis), axis=0)


def rope_cos_sin(g: GraphWriter, positions: str, rope: RopeSpec) -> tuple[str, str]:
    """cos and sin [T, 1, dim/2] for int64 positions [T], scaled by rope.attention_scaling."""
    pos = g.op("Unsqueeze", g.op("Cast", positions, to=TensorProto.FLOAT), g.const([1]))
    freqs = g.op("Mul", pos, g.weight("inv_freq", rope.inv_freq.astype(np.float32)))
    cos, sin = g.op("Cos", freqs), g.op("Sin", freqs)
    if rope.attention_scaling != 1.0:
        s = g.const(rope.attention_scaling, np.float32)
        cos, sin = g.op("Mul", cos, s), g.op("Mul", sin, s)
    axis = g.const([1])
    return g.op("Unsqueeze", cos, axis), g.op("Unsqueeze", sin, axis)


def apply_rope(g: GraphWriter, x: str, cos: str, sin: str, rope: RopeSpec) -> str:
    """Rotate x [T, heads, dim]; the result is laid out as [rotated first elems, rotated second elems].

    With halves (rotate_half) that is transformers' own layout. With interleaved pairs it is the
    layout DeepSeek-V3's apply_rotary_pos_emb_interleave returns; DeepSeek-V2 returns the pairs
    interleaved instead, which permutes q and k identically and so leaves q.k unchanged.
    """
    d = rope.dim
    if rope.interleaved:
        x1, x2 = slice_last(g, x, 0, d, 2), slice_last(g, x, 1, d, 2)
    else:
        x1, x2 = slice_last(g, x, 0, d // 2), slice_last(g, x, d // 2, d)
    first = g.op("Sub", g.op("Mul", x1, cos), g.op("Mul", x2, sin))
    second = g.op("Add", g.op("Mul", x2, cos), g.op("Mul", x1, sin))
    return g.op("Concat", first, second, axis=-1)


def causal_allowed(g: GraphWriter, past: str, t: str) -> str:
    """bool [T, P+T]: query i (position P+i) may see cache row j iff j <= P+i."""
    p = dim(g, past, 0)
    one = g.const(1)
    rows = g.op("Unsqueeze", g.op("Range", p, g.op("Add", p, t), one), g.const([1]))
    cols = g.op("Range", g.const(0), g.op("Add", p, t), one)
    return g.op("LessOrEqual", cols, rows)


def masked_softmax(g: GraphWriter, scores: str, allowed: str) -> str:
    masked = g.op("Where", allowed, scores, g.const(_NEG, np.float32))
    return g.op("Softmax", masked, axis=-1)
