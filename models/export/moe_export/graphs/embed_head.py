"""Embedding lookup and final norm + LM head graphs."""

from __future__ import annotations

import numpy as np

from moe_export.graphs import ops
from moe_export.graphs.builder import FLOAT, INT64, GraphWriter


def build_embed(g: GraphWriter, w: dict[str, np.ndarray]) -> None:
    v, h = w["embed"].shape
    ids = g.input("input_ids", INT64, ["T"])
    g.output(g.op("Gather", g.weight("embed", w["embed"]), ids, axis=0), "hidden", FLOAT, ["T", h])


def build_head(g: GraphWriter, w: dict[str, np.ndarray], eps: float) -> None:
    v, h = w["lm_head"].shape
    x = g.input("hidden", FLOAT, ["T", h])
    g.output(ops.linear(g, ops.rms_norm(g, x, w["norm"], eps), w["lm_head"]), "logits", FLOAT, ["T", v])
