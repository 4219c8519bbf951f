"""The validated description of a model that the graphs and the manifest are built from."""

from __future__ import annotations

from dataclasses import dataclass, field

from moe_export.rope import RopeSpec


@dataclass(frozen=True)
class MhaSpec:
    """Multi-head / grouped-query attention."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    qkv_bias: bool
    o_bias: bool
    qk_norm: str | None  # None | "head" (per head, Qwen3) | "full" (whole projection, OLMoE)
    clip_qkv: float | None
    scaling: float
    kind: str = "mha"


@dataclass(frozen=True)
class MlaSpec:
    """DeepSeek multi-head latent attention."""

    num_heads: int
    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    attention_bias: bool  # on q_a_proj, kv_a_proj_with_mqa and o_proj
    scaling: float
    kind: str = "mla"


@dataclass(frozen=True)
class RoutingSpec:
    num_experts: int
    top_k: int
    scoring: str  # softmax | sigmoid
    group_limit: dict | None  # {"n_group", "topk_group", "group_score": top2_sum | max, "masked": neg_inf | zero}
    norm_topk_prob: bool
    norm_eps: float
    routed_scaling_factor: float
    correction_bias: bool  # DeepSeek-V3 e_score_correction_bias


@dataclass(frozen=True)
class FfnSpec:
    intermediate_size: int
    bias: bool = False
    sigmoid_gate: bool = False  # Qwen2-MoE shared expert: y *= sigmoid(x @ gate^T)


@dataclass(frozen=True)
class ModelSpec:
    architecture: str
    architectures: tuple[str, ...]
    hidden_size: int
    vocab_size: int
    num_layers: int
    context_length: int
    rms_norm_eps: float
    tie_word_embeddings: bool
    attention: MhaSpec | MlaSpec
    rope: RopeSpec
    routing: RoutingSpec
    layer_kinds: tuple[str, ...]  # "dense" | "moe" per layer
    dense_ffn: FfnSpec | None
    expert_ffn: FfnSpec
    shared_ffn: FfnSpec | None
    raw: dict = field(repr=False, compare=False, default_factory=dict)
