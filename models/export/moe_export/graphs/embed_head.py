"""Embedding lookup and final norm + LM head graphs."""

from __future__ import annotations

import numpy as np

from moe_export.graphs import ops
from moe_export.graphs.builder import FLOAT, INT64, GraphWriter
from moe_export.quant import FP32, QuantConfig


def build_embed(g: GraphWriter, w: dict[str, np.ndarray], qc: QuantConfig = FP32) -> None:
    v, h = w["embed"].shape
    ids = g.input("input_ids", INT64, ["T"])
    g.output(ops.gather_rows(g, w["embed"], ids, qc), "hidden", FLOAT, ["T", h])


def build_head(g: GraphWriter, w: dict[str, np.ndarray], eps: float, qc: QuantConfig = FP32) -> None:
    v, h = w["lm_head"].shape
    x = g.input("hidden", FLOAT, ["T", h])
    g.output(ops.linear(g, ops.rms_norm(g, x, w["norm"], eps), w["lm_head"], None, qc), "logits", FLOAT, ["T", v])
