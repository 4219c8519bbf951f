"""The list of graphs a package holds, each with the tensors it reads and the function that builds it.

Shared by the checkpoint exporter and the synthetic generator, so both lay packages out identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np

from moe_export import names
from moe_export.config import MhaSpec, ModelSpec
from moe_export.graphs import attention_mha, attention_mla, embed_head, ffn
from moe_export.graphs.builder import GraphWriter
from moe_export.quant import GRAPH_KINDS, PackageQuant, QuantConfig, package_quant
from moe_export.reader import TensorRef


@dataclass
class GraphPlan:
    name: str  # file stem under graphs/, e.g. "layer.1.expert.0"
    refs: dict[str, TensorRef]
    build: Callable[[GraphWriter, dict[str, np.ndarray]], None]

    @property
    def path(self) -> str:
        return f"graphs/{self.name}.onnx"


def cache_layout(spec: ModelSpec) -> list[dict]:
    if isinstance(spec.attention, MhaSpec):
        return attention_mha.cache_layout(spec.attention)
    return attention_mla.cache_layout(spec.attention)


def _attn_builder(spec: ModelSpec, qc: QuantConfig, cache: str = "float32"):
    if isinstance(spec.attention, MhaSpec):
        return lambda g, w: attention_mha.build(g, spec.attention, spec.rope, spec.rms_norm_eps, w, qc,
                                                cache_dtype=cache)
    return lambda g, w: attention_mla.build(g, spec.attention, spec.rope, spec.rms_norm_eps, w, qc)


def as_package_quant(q: QuantConfig | PackageQuant) -> PackageQuant:
    """A single QuantConfig is the package's quantization with the default per-graph policy."""
    return q if isinstance(q, PackageQuant) else package_quant(q)


def _attn_router_builder(spec: ModelSpec, qc: QuantConfig, cache: str = "float32"):
    """Attention with the router appended: one graph run fewer per MoE layer and token."""
    attn = _attn_builder(spec, qc, cache)

    def build(g: GraphWriter, w: dict[str, np.ndarray]) -> None:
        attn(g, {k: v for k, v in w.items() if not k.startswith(_ROUTER_PREFIX)})
        ffn.add_router(g, "ffn_in", w[_ROUTER_PREFIX + "gate"], "router_logits")

    return build


_ROUTER_PREFIX = "router_"


def make_plans(spec: ModelSpec, src: names.HasTensors, q: QuantConfig | PackageQuant,
               fuse_router: bool = True) -> list[GraphPlan]:
    """Graphs in the order they are written: embed, then per layer attn, router/experts/shared or mlp, head.

    With `fuse_router`, a MoE layer's attention graph also computes the router logits (no router graph).
    """
    pq = as_package_quant(q)
    expert_build = partial(_swiglu, qc=pq.kind("expert"))
    dense_build = partial(_swiglu, qc=pq.kind("mlp"))
    shared_build = partial(_swiglu, qc=pq.kind("shared"))
    plans = [GraphPlan("embed", names.embed_refs(spec), partial(_embed, qc=pq.kind("embed")))]
    attn = _attn_builder(spec, pq.kind("attn"), pq.cache)
    attn_router = _attn_router_builder(spec, pq.kind("attn"), pq.cache)
    for layer, kind in enumerate(spec.layer_kinds):
        if kind == "moe" and fuse_router:
            refs = names.attn_refs(spec, layer)
            refs.update({_ROUTER_PREFIX + k: v for k, v in names.router_refs(spec, layer).items()})
            plans.append(GraphPlan(f"layer.{layer}.attn", refs, attn_router))
        else:
            plans.append(GraphPlan(f"layer.{layer}.attn", names.attn_refs(spec, layer), attn))
        if kind == "dense":
            plans.append(GraphPlan(f"layer.{layer}.mlp", names.mlp_refs(spec, layer), dense_build))
            continue
        if not fuse_router:
            plans.append(GraphPlan(f"layer.{layer}.router", names.router_refs(spec, layer), ffn.build_router))
        for e in range(spec.routing.num_experts):
            plans.append(GraphPlan(f"layer.{layer}.expert.{e}", names.expert_refs(spec, layer, e, src), expert_build))
        if spec.shared_ffn is not None:
            plans.append(GraphPlan(f"layer.{layer}.shared", names.shared_refs(spec, layer), shared_build))
    plans.append(GraphPlan("head", names.head_refs(spec), partial(_head, eps=spec.rms_norm_eps, qc=pq.kind("head"))))
    return plans


def graph_kinds(spec: ModelSpec) -> list[str]:
    """The graph kinds this model's package holds, in manifest.precision.graphs order."""
    has = {"embed", "attn", "head"}
    if "moe" in spec.layer_kinds:
        has |= {"router", "expert"} | ({"shared"} if spec.shared_ffn is not None else set())
    if "dense" in spec.layer_kinds:
        has.add("mlp")
    return [k for k in GRAPH_KINDS if k in has]


def _swiglu(g: GraphWriter, w: dict[str, np.ndarray], qc: QuantConfig) -> None:
    ffn.build_swiglu(g, w, qc)


def _embed(g: GraphWriter, w: dict[str, np.ndarray], qc: QuantConfig) -> None:
    embed_head.build_embed(g, w, qc)


def _head(g: GraphWriter, w: dict[str, np.ndarray], eps: float, qc: QuantConfig) -> None:
    embed_head.build_head(g, w, eps, qc)


def layer_entries(spec: ModelSpec, correction_bias: dict[int, list[float]],
                  fuse_router: bool = True) -> list[dict]:
    """manifest.layers, matching make_plans' file names (and its `fuse_router`)."""
    layers = []
    for layer, kind in enumerate(spec.layer_kinds):
        entry = {"index": layer, "kind": kind, "attn": f"graphs/layer.{layer}.attn.onnx"}
        if kind == "dense":
            entry["mlp"] = f"graphs/layer.{layer}.mlp.onnx"
        else:
            if fuse_router:
                entry["fused"] = ["router"]
            else:
                entry["router"] = f"graphs/layer.{layer}.router.onnx"
            entry["experts"] = [f"graphs/layer.{layer}.expert.{e}.onnx" for e in range(spec.routing.num_experts)]
            entry["shared"] = f"graphs/layer.{layer}.shared.onnx" if spec.shared_ffn is not None else None
            entry["correction_bias"] = correction_bias.get(layer)
        layers.append(entry)
    return layers
