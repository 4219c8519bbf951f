"""Per-architecture config.json parsers with transformers 5's defaults and semantics.

Options that transformers would honour but the exporter cannot reproduce exactly are refused with an
error naming them.
"""

from __future__ import annotations

from moe_export import rope as rope_mod
from moe_export.errors import ExportError
from moe_export.spec import FfnSpec, MhaSpec, MlaSpec, RoutingSpec


class Cfg:
    """config.json with typed, named lookups."""

    def __init__(self, data: dict):
        self.data = data

    def get(self, keys, default):
        for key in (keys,) if isinstance(keys, str) else keys:
            if key in self.data and self.data[key] is not None:
                return self.data[key]
        return default

    def _name(self, keys) -> str:
        return keys if isinstance(keys, str) else keys[0]

    def int(self, keys, default=None, minimum=1) -> int:
        value = self.get(keys, default)
        if value is None:
            raise ExportError(f"config.json: missing {self._name(keys)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ExportError(f"config.json: {self._name(keys)} must be an integer >= {minimum}, got {value!r}")
        return value

    def float(self, keys, default=None) -> float:
        value = self.get(keys, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ExportError(f"config.json: {self._name(keys)} must be a number, got {value!r}")
        return float(value)

    def bool(self, keys, default) -> bool:
        value = self.get(keys, default)
        if not isinstance(value, bool):
            raise ExportError(f"config.json: {self._name(keys)} must be true or false, got {value!r}")
        return value


def _common(c: Cfg, defaults: dict) -> dict:
    act = c.get("hidden_act", "silu")
    if act != "silu":
        raise ExportError(f"config.json: hidden_act '{act}' is not supported (only silu)")
    qcfg = c.get("quantization_config", None)
    if qcfg is not None:
        method = qcfg.get("quant_method", "?") if isinstance(qcfg, dict) else qcfg
        raise ExportError(f"config.json: quantized checkpoints are not supported (quantization_config '{method}')")
    heads = c.int("num_attention_heads", defaults["num_attention_heads"])
    return {
        "hidden_size": c.int("hidden_size", defaults["hidden_size"]),
        "vocab_size": c.int("vocab_size", defaults["vocab_size"]),
        "num_layers": c.int("num_hidden_layers", defaults["num_hidden_layers"]),
        "context_length": c.int("max_position_embeddings", defaults["max_position_embeddings"]),
        "rms_norm_eps": c.float("rms_norm_eps", defaults["rms_norm_eps"]),
        "tie_word_embeddings": c.bool("tie_word_embeddings", False),
        "num_heads": heads,
        "num_kv_heads": c.int("num_key_value_heads", defaults.get("num_key_value_heads") or heads),
    }


def _check_topk(num_experts: int, top_k: int) -> None:
    if top_k > num_experts:
        raise ExportError(f"config.json: num_experts_per_tok {top_k} exceeds the expert count {num_experts}")


def _group_limit(num_experts: int, top_k: int, n_group: int, topk_group: int, score: str, masked: str) -> dict:
    if num_experts % n_group:
        raise ExportError(f"config.json: n_group {n_group} does not divide the expert count {num_experts}")
    if topk_group > n_group:
        raise ExportError(f"config.json: topk_group {topk_group} exceeds n_group {n_group}")
    if score == "top2_sum" and num_experts // n_group < 2:
        raise ExportError(f"config.json: n_group {n_group} leaves fewer than 2 experts per group")
    if topk_group * (num_experts // n_group) < top_k:
        # transformers would then pick experts from masked groups; nobody ships such a config.
        raise ExportError(
            f"config.json: topk_group {topk_group} x {num_experts // n_group} experts per group "
            f"is fewer than num_experts_per_tok {top_k}"
        )
    return {"n_group": n_group, "topk_group": topk_group, "group_score": score, "masked": masked}


def _mla(c: Cfg, common: dict, d: dict, interleaved: bool) -> tuple[MlaSpec, rope_mod.RopeSpec]:
    if common["num_kv_heads"] != common["num_heads"]:
        # MLA reads num_key_value_heads only for repeat_kv, which would then mis-shape the heads.
        raise ExportError(
            f"config.json: num_key_value_heads {common['num_kv_heads']} != num_attention_heads "
            f"{common['num_heads']} is not supported for multi-head latent attention"
        )
    # An explicit null means "no q compression" (V2-Lite), unlike the other keys where null means default.
    q_lora = c.data["q_lora_rank"] if "q_lora_rank" in c.data else d["q_lora_rank"]
    if q_lora is not None:
        q_lora = c.int("q_lora_rank", d["q_lora_rank"])
    nope = c.int("qk_nope_head_dim", d["qk_nope_head_dim"])
    rope_dim = c.int("qk_rope_head_dim", d["qk_rope_head_dim"])
    rope = rope_mod.build(c.data, rope_dim, interleaved)
    spec = MlaSpec(
        num_heads=common["num_heads"],
        q_lora_rank=q_lora,
        kv_lora_rank=c.int("kv_lora_rank", d["kv_lora_rank"]),
        qk_nope_head_dim=nope,
        qk_rope_head_dim=rope_dim,
        v_head_dim=c.int("v_head_dim", d["v_head_dim"]),
        attention_bias=c.bool("attention_bias", False),
        scaling=rope_mod.mla_softmax_scale(rope.parameters, nope + rope_dim),
    )
    return spec, rope


_V3 = dict(vocab_size=129280, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048,
           num_hidden_layers=61, num_attention_heads=128, num_key_value_heads=None, n_shared_experts=1,
           n_routed_experts=256, routed_scaling_factor=2.5, kv_lora_rank=512, q_lora_rank=1536,
           qk_rope_head_dim=64, v_head_dim=128, qk_nope_head_dim=128, n_group=8, topk_group=4,
           num_experts_per_tok=8, first_k_dense_replace=3, norm_topk_prob=True,
           max_position_embeddings=4096, rms_norm_eps=1e-6, rope_interleave=True)

_V2 = dict(vocab_size=102400, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
           num_attention_heads=32, num_key_value_heads=None, max_position_embeddings=2048, rms_norm_eps=1e-6,
           first_k_dense_replace=0, kv_lora_rank=512, q_lora_rank=1536, n_routed_experts=64,
           n_shared_experts=2, qk_nope_head_dim=128, qk_rope_head_dim=64, routed_scaling_factor=1.0,
           topk_method="greedy", v_head_dim=128, num_experts_per_tok=None, moe_intermediate_size=1407)


def _deepseek_v3(c: Cfg) -> dict:
    d = _V3
    common = _common(c, d)
    attention, rope = _mla(c, common, d, interleaved=c.bool("rope_interleave", True))
    n_exp = c.int(("n_routed_experts", "num_local_experts"), d["n_routed_experts"])
    top_k = c.int("num_experts_per_tok", d["num_experts_per_tok"])
    _check_topk(n_exp, top_k)
    routing = RoutingSpec(
        num_experts=n_exp, top_k=top_k, scoring="sigmoid",
        group_limit=_group_limit(n_exp, top_k, c.int("n_group", d["n_group"]),
                                 c.int("topk_group", d["topk_group"]), "top2_sum", "neg_inf"),
        norm_topk_prob=c.bool("norm_topk_prob", True), norm_eps=1e-20,
        routed_scaling_factor=c.float("routed_scaling_factor", d["routed_scaling_factor"]),
        correction_bias=True,
    )
    first_dense = c.int("first_k_dense_replace", d["first_k_dense_replace"], minimum=0)
    moe_i = c.int("moe_intermediate_size", d["moe_intermediate_size"])
    return dict(
        common=common, attention=attention, rope=rope, routing=routing,
        layer_kinds=tuple("moe" if i >= first_dense else "dense" for i in range(common["num_layers"])),
        dense_ffn=FfnSpec(c.int("intermediate_size", d["intermediate_size"])),
        expert_ffn=FfnSpec(moe_i),
        shared_ffn=FfnSpec(moe_i * c.int("n_shared_experts", d["n_shared_experts"])),
    )


def _deepseek_v2(c: Cfg) -> dict:
    d = _V2
    common = _common(c, d)
    # DeepSeek-V2 rotates interleaved pairs (complex multiplication) whatever rope_interleave says.
    attention, rope = _mla(c, common, d, interleaved=True)
    n_exp = c.int(("n_routed_experts", "num_experts"), d["n_routed_experts"])
    top_k = c.int("num_experts_per_tok", None)
    _check_topk(n_exp, top_k)
    method = c.get("topk_method", "greedy")
    if method == "greedy":
        group_limit = None
    elif method == "group_limited_greedy":
        group_limit = _group_limit(n_exp, top_k, c.int("n_group", None), c.int("topk_group", None), "max", "zero")
    else:
        raise ExportError(f"config.json: topk_method '{method}' is not supported for deepseek_v2")
    # transformers' DeepseekV2 router never normalises the top-k weights (norm_topk_prob is ignored).
    routing = RoutingSpec(
        num_experts=n_exp, top_k=top_k, scoring="softmax", group_limit=group_limit,
        norm_topk_prob=False, norm_eps=0.0,
        routed_scaling_factor=c.float("routed_scaling_factor", d["routed_scaling_factor"]),
        correction_bias=False,
    )
    first_dense = c.int("first_k_dense_replace", d["first_k_dense_replace"], minimum=0)
    mlp_bias = c.bool("mlp_bias", False)
    moe_i = c.int("moe_intermediate_size", d["moe_intermediate_size"])
    return dict(
        common=common, attention=attention, rope=rope, routing=routing,
        layer_kinds=tuple("moe" if i >= first_dense else "dense" for i in range(common["num_layers"])),
        dense_ffn=FfnSpec(c.int("intermediate_size", d["intermediate_size"]), bias=mlp_bias),
        expert_ffn=FfnSpec(moe_i),
        shared_ffn=FfnSpec(moe_i * c.int("n_shared_experts", d["n_shared_experts"]), bias=mlp_bias),
    )


def _mha(c: Cfg, common: dict, head_dim: int, qkv_bias: bool, o_bias: bool, qk_norm, clip) -> tuple:
    heads, kv = common["num_heads"], common["num_kv_heads"]
    if heads % kv:
        raise ExportError(f"config.json: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}")
    rope = rope_mod.build(c.data, head_dim, interleaved=False)
    return MhaSpec(heads, kv, head_dim, qkv_bias, o_bias, qk_norm, clip, head_dim ** -0.5), rope


def _softmax_routing(n_exp: int, top_k: int, norm: bool) -> RoutingSpec:
    _check_topk(n_exp, top_k)
    return RoutingSpec(num_experts=n_exp, top_k=top_k, scoring="softmax", group_limit=None,
                       norm_topk_prob=norm, norm_eps=0.0, routed_scaling_factor=1.0, correction_bias=False)


def _refuse_sliding(window, context: int, where: str) -> None:
    if window is not None and window != 0 and window < context:
        raise ExportError(f"config.json: sliding_window {window} ({where}) is not supported")


def _mixtral(c: Cfg) -> dict:
    d = dict(vocab_size=32000, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
             num_key_value_heads=8, max_position_embeddings=4096 * 32, rms_norm_eps=1e-5)
    common = _common(c, d)
    _refuse_sliding(c.get("sliding_window", None), common["context_length"], "mixtral")
    head_dim = c.get("head_dim", None) or common["hidden_size"] // common["num_heads"]
    attention, rope = _mha(c, common, head_dim, False, False, None, None)
    routing = _softmax_routing(c.int(("num_local_experts", "num_experts"), 8), c.int("num_experts_per_tok", 2), True)
    return dict(common=common, attention=attention, rope=rope, routing=routing,
                layer_kinds=("moe",) * common["num_layers"], dense_ffn=None,
                expert_ffn=FfnSpec(c.int("intermediate_size", 14336)), shared_ffn=None)


def _qwen_kinds(c: Cfg, num_layers: int, n_exp: int) -> tuple[str, ...]:
    only = c.get("mlp_only_layers", [])
    if not isinstance(only, list) or not all(isinstance(i, int) for i in only):
        raise ExportError(f"config.json: mlp_only_layers must be a list of layer indices, got {only!r}")
    step = c.int("decoder_sparse_step", 1)
    return tuple(
        "moe" if (i not in only and n_exp > 0 and (i + 1) % step == 0) else "dense" for i in range(num_layers)
    )


def _qwen3_moe(c: Cfg) -> dict:
    d = dict(vocab_size=151936, hidden_size=2048, num_hidden_layers=24, num_attention_heads=32,
             num_key_value_heads=4, max_position_embeddings=32768, rms_norm_eps=1e-6)
    common = _common(c, d)
    if c.bool("use_sliding_window", False):
        _refuse_sliding(c.get("sliding_window", 4096), common["context_length"], "use_sliding_window")
    head_dim = c.int("head_dim", common["hidden_size"] // common["num_heads"])
    bias = c.bool("attention_bias", False)
    attention, rope = _mha(c, common, head_dim, bias, bias, "head", None)
    n_exp = c.int(("num_local_experts", "num_experts"), 128, minimum=0)
    routing = _softmax_routing(n_exp, c.int("num_experts_per_tok", 8), c.bool("norm_topk_prob", False))
    return dict(common=common, attention=attention, rope=rope, routing=routing,
                layer_kinds=_qwen_kinds(c, common["num_layers"], n_exp),
                dense_ffn=FfnSpec(c.int("intermediate_size", 6144)),
                expert_ffn=FfnSpec(c.int("moe_intermediate_size", 768)), shared_ffn=None)


def _qwen2_moe(c: Cfg) -> dict:
    d = dict(vocab_size=151936, hidden_size=2048, num_hidden_layers=24, num_attention_heads=16,
             num_key_value_heads=16, max_position_embeddings=32768, rms_norm_eps=1e-6)
    common = _common(c, d)
    if c.bool("use_sliding_window", False):
        layer_types = c.get("layer_types", None)
        max_window = c.int("max_window_layers", 28, minimum=0)
        sliding = any(t == "sliding_attention" for t in layer_types) if layer_types else any(
            (i + 1) % 2 and i < max_window for i in range(common["num_layers"]))
        if sliding:
            _refuse_sliding(c.get("sliding_window", 4096), common["context_length"], "use_sliding_window")
    head_dim = c.int("head_dim", common["hidden_size"] // common["num_heads"])
    attention, rope = _mha(c, common, head_dim, c.bool("qkv_bias", True), False, None, None)
    n_exp = c.int("num_experts", 60, minimum=0)
    routing = _softmax_routing(n_exp, c.int("num_experts_per_tok", 4), c.bool("norm_topk_prob", False))
    return dict(common=common, attention=attention, rope=rope, routing=routing,
                layer_kinds=_qwen_kinds(c, common["num_layers"], n_exp),
                dense_ffn=FfnSpec(c.int("intermediate_size", 5632)),
                expert_ffn=FfnSpec(c.int("moe_intermediate_size", 1408)),
                shared_ffn=FfnSpec(c.int("shared_expert_intermediate_size", 5632), sigmoid_gate=True))


def _olmoe(c: Cfg) -> dict:
    d = dict(vocab_size=50304, hidden_size=2048, num_hidden_layers=16, num_attention_heads=16,
             num_key_value_heads=None, max_position_embeddings=4096, rms_norm_eps=1e-5)
    common = _common(c, d)
    natural = common["hidden_size"] // common["num_heads"]
    head_dim = c.int("head_dim", natural)
    if head_dim != natural or natural * common["num_heads"] != common["hidden_size"]:
        # OLMoE's q_norm/k_norm are sized from hidden_size // num_attention_heads.
        raise ExportError(f"config.json: olmoe head_dim {head_dim} must equal hidden_size / num_attention_heads")
    clip = c.get("clip_qkv", None)
    if clip is not None:
        clip = c.float("clip_qkv")
    bias = c.bool("attention_bias", False)
    attention, rope = _mha(c, common, head_dim, bias, bias, "full", clip)
    routing = _softmax_routing(c.int(("num_experts", "num_local_experts"), 64), c.int("num_experts_per_tok", 8),
                               c.bool("norm_topk_prob", False))
    return dict(common=common, attention=attention, rope=rope, routing=routing,
                layer_kinds=("moe",) * common["num_layers"], dense_ffn=None,
                expert_ffn=FfnSpec(c.int("intermediate_size", 2048)), shared_ffn=None)


PARSERS = {
    "deepseek_v3": _deepseek_v3, "deepseek_v2": _deepseek_v2, "mixtral": _mixtral,
    "qwen3_moe": _qwen3_moe, "qwen2_moe": _qwen2_moe, "olmoe": _olmoe,
}
