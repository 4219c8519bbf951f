"""FFN graphs: routed expert, shared expert(s), dense MLP (SwiGLU), and the router's logits."""

from __future__ import annotations

import numpy as np

from moe_export.graphs import ops
from moe_export.graphs.builder import FLOAT, GraphWriter
from moe_export.quant import QuantConfig


def build_swiglu(g: GraphWriter, w: dict[str, np.ndarray], qc: QuantConfig) -> None:
    """y = down(silu(gate(x)) * up(x)) [* sigmoid(x @ shared_gate^T)], gate and up in one matmul."""
    if "gate_up" in w:
        gate_up = w["gate_up"]
    else:
        gate_up = np.concatenate([w["gate"], w["up"]], axis=0)
    inter = gate_up.shape[0] // 2
    h = gate_up.shape[1]
    bias = None
    if "gate_bias" in w:
        bias = np.concatenate([w["gate_bias"], w["up_bias"]])
    x = g.input("x", FLOAT, ["T", h])
    gu = ops.linear(g, x, gate_up, bias, qc)
    del gate_up
    gate, up = g.op("Split", gu, g.const([inter, inter]), outputs=2, axis=1)
    y = ops.linear(g, g.op("Mul", ops.silu(g, gate), up), w["down"], w.get("down_bias"), qc)
    if "shared_gate" in w:
        y = g.op("Mul", y, g.op("Sigmoid", ops.linear(g, x, w["shared_gate"])))
    g.output(y, "y", FLOAT, ["T", h])


def build_router(g: GraphWriter, w: dict[str, np.ndarray]) -> None:
    h = w["gate"].shape[1]
    add_router(g, g.input("ffn_in", FLOAT, ["T", h]), w["gate"], "logits")


def add_router(g: GraphWriter, ffn_in: str, gate: np.ndarray, name: str) -> None:
    """Output `name` [T, E]: the router logits of `ffn_in` [T, H] (gate [E, H])."""
    g.output(ops.linear(g, ffn_in, gate), name, FLOAT, ["T", gate.shape[0]])
