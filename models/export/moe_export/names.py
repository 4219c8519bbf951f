"""Hugging Face tensor names per architecture: which checkpoint tensors (and shapes) each graph reads."""

from __future__ import annotations

from typing import Protocol

from moe_export.config import MhaSpec, ModelSpec
from moe_export.reader import TensorRef


class HasTensors(Protocol):
    def has(self, name: str) -> bool: ...


def _moe_prefix(spec: ModelSpec, layer: int) -> str:
    block = "block_sparse_moe" if spec.architecture == "mixtral" else "mlp"
    return f"model.layers.{layer}.{block}."


def embed_refs(spec: ModelSpec) -> dict[str, TensorRef]:
    return {"embed": TensorRef("model.embed_tokens.weight", (spec.vocab_size, spec.hidden_size))}


def head_refs(spec: ModelSpec) -> dict[str, TensorRef]:
    # Tied embeddings: transformers uses embed_tokens as the LM head whether or not lm_head is stored.
    head = "model.embed_tokens.weight" if spec.tie_word_embeddings else "lm_head.weight"
    return {
        "norm": TensorRef("model.norm.weight", (spec.hidden_size,)),
        "lm_head": TensorRef(head, (spec.vocab_size, spec.hidden_size)),
    }


def attn_refs(spec: ModelSpec, layer: int) -> dict[str, TensorRef]:
    p = f"model.layers.{layer}."
    h = spec.hidden_size
    refs = {
        "input_norm": TensorRef(p + "input_layernorm.weight", (h,)),
        "post_norm": TensorRef(p + "post_attention_layernorm.weight", (h,)),
    }
    a = spec.attention
    s = p + "self_attn."
    if isinstance(a, MhaSpec):
        q, kv = a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim
        refs.update(q=TensorRef(s + "q_proj.weight", (q, h)), k=TensorRef(s + "k_proj.weight", (kv, h)),
                    v=TensorRef(s + "v_proj.weight", (kv, h)), o=TensorRef(s + "o_proj.weight", (h, q)))
        if a.qkv_bias:
            refs.update(q_bias=TensorRef(s + "q_proj.bias", (q,)), k_bias=TensorRef(s + "k_proj.bias", (kv,)),
                        v_bias=TensorRef(s + "v_proj.bias", (kv,)))
        if a.o_bias:
            refs["o_bias"] = TensorRef(s + "o_proj.bias", (h,))
        if a.qk_norm == "head":
            refs.update(q_norm=TensorRef(s + "q_norm.weight", (a.head_dim,)),
                        k_norm=TensorRef(s + "k_norm.weight", (a.head_dim,)))
        elif a.qk_norm == "full":
            refs.update(q_norm=TensorRef(s + "q_norm.weight", (q,)), k_norm=TensorRef(s + "k_norm.weight", (kv,)))
        return refs
    qk = a.qk_nope_head_dim + a.qk_rope_head_dim
    if a.q_lora_rank is None:
        refs["q"] = TensorRef(s + "q_proj.weight", (a.num_heads * qk, h))
    else:
        refs.update(q_a=TensorRef(s + "q_a_proj.weight", (a.q_lora_rank, h)),
                    q_a_norm=TensorRef(s + "q_a_layernorm.weight", (a.q_lora_rank,)),
                    q_b=TensorRef(s + "q_b_proj.weight", (a.num_heads * qk, a.q_lora_rank)))
        if a.attention_bias:
            refs["q_a_bias"] = TensorRef(s + "q_a_proj.bias", (a.q_lora_rank,))
    refs.update(
        kv_a=TensorRef(s + "kv_a_proj_with_mqa.weight", (a.kv_lora_rank + a.qk_rope_head_dim, h)),
        kv_a_norm=TensorRef(s + "kv_a_layernorm.weight", (a.kv_lora_rank,)),
        kv_b=TensorRef(s + "kv_b_proj.weight", (a.num_heads * (a.qk_nope_head_dim + a.v_head_dim), a.kv_lora_rank)),
        o=TensorRef(s + "o_proj.weight", (h, a.num_heads * a.v_head_dim)),
    )
    if a.attention_bias:
        refs.update(kv_a_bias=TensorRef(s + "kv_a_proj_with_mqa.bias", (a.kv_lora_rank + a.qk_rope_head_dim,)),
                    o_bias=TensorRef(s + "o_proj.bias", (h,)))
    return refs


def router_refs(spec: ModelSpec, layer: int) -> dict[str, TensorRef]:
    return {"gate": TensorRef(_moe_prefix(spec, layer) + "gate.weight", (spec.routing.num_experts, spec.hidden_size))}


def correction_bias_ref(spec: ModelSpec, layer: int) -> TensorRef:
    return TensorRef(f"model.layers.{layer}.mlp.gate.e_score_correction_bias", (spec.routing.num_experts,))


def _swiglu_refs(prefix: str, hidden: int, inter: int, bias: bool, names=("gate_proj", "up_proj", "down_proj")):
    g, u, d = names
    refs = {"gate": TensorRef(f"{prefix}{g}.weight", (inter, hidden)),
            "up": TensorRef(f"{prefix}{u}.weight", (inter, hidden)),
            "down": TensorRef(f"{prefix}{d}.weight", (hidden, inter))}
    if bias:
        refs.update(gate_bias=TensorRef(f"{prefix}{g}.bias", (inter,)),
                    up_bias=TensorRef(f"{prefix}{u}.bias", (inter,)),
                    down_bias=TensorRef(f"{prefix}{d}.bias", (hidden,)))
    return refs


def expert_refs(spec: ModelSpec, layer: int, expert: int, src: HasTensors) -> dict[str, TensorRef]:
    """Per-expert tensors as checkpoints store them, or one slice of transformers 5's fused layout."""
    h, i = spec.hidden_size, spec.expert_ffn.intermediate_size
    prefix = _moe_prefix(spec, layer) + f"experts.{expert}."
    if spec.architecture == "mixtral":
        per_expert = _swiglu_refs(prefix, h, i, False, names=("w1", "w3", "w2"))
    else:
        per_expert = _swiglu_refs(prefix, h, i, False)
    if src.has(per_expert["gate"].name):
        return per_expert
    for fused in (f"model.layers.{layer}.mlp.experts.", _moe_prefix(spec, layer) + "experts."):
        if src.has(fused + "gate_up_proj"):
            return {"gate_up": TensorRef(fused + "gate_up_proj", (2 * i, h), expert),
                    "down": TensorRef(fused + "down_proj", (h, i), expert)}
    return per_expert  # so that the missing per-expert name is what gets reported


def shared_refs(spec: ModelSpec, layer: int) -> dict[str, TensorRef]:
    sh = spec.shared_ffn
    if spec.architecture == "qwen2_moe":
        refs = _swiglu_refs(f"model.layers.{layer}.mlp.shared_expert.", spec.hidden_size, sh.intermediate_size, False)
        refs["shared_gate"] = TensorRef(f"model.layers.{layer}.mlp.shared_expert_gate.weight", (1, spec.hidden_size))
        return refs
    return _swiglu_refs(f"model.layers.{layer}.mlp.shared_experts.", spec.hidden_size, sh.intermediate_size, sh.bias)


def mlp_refs(spec: ModelSpec, layer: int) -> dict[str, TensorRef]:
    d = spec.dense_ffn
    return _swiglu_refs(f"model.layers.{layer}.mlp.", spec.hidden_size, d.intermediate_size, d.bias)
