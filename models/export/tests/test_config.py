"""config.json parsing: transformers' semantics per architecture, and refusals of what cannot be exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FIXTURES

from moe_export import rope
from moe_export.config import spec_from_dict
from moe_export.errors import ExportError


def cfg(arch: str, **changes) -> dict:
    data = json.loads((FIXTURES / arch / "config.json").read_text())
    data.update(changes)
    return data


def test_yarn_matches_transformers():
    # Reference numbers printed by transformers 5.24.0's ROPE_INIT_FUNCTIONS["yarn"] and
    # DeepseekV3Attention.scaling for the deepseek_v3 fixture's config.
    r = rope.build(cfg("deepseek_v3"), 8, True)
    np.testing.assert_array_equal(r.inv_freq, np.array([1.0, 0.0625, 0.0024999999441206455, 0.0002500000118743628],
                                                        np.float32))
    assert r.attention_scaling == pytest.approx(1.0249579607969668, rel=1e-12)
    assert rope.mla_softmax_scale(r.parameters, 24) == pytest.approx(0.25191097422871067, rel=1e-12)


def test_llama3_matches_transformers():
    c = dict(max_position_embeddings=256, rope_parameters=dict(
        rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
        original_max_position_embeddings=32))
    r = rope.build(c, 16, False)
    want = [1.0, 0.0958399772644043, 0.012500000186264515, 0.0039528473280370235, 0.0012499999720603228,
            0.00039528473280370235, 0.0001250000059371814, 3.9528473280370235e-05]
    np.testing.assert_allclose(r.inv_freq, want, rtol=1e-6)


def test_legacy_rope_keys_are_standardised():
    c = dict(max_position_embeddings=4096, rope_theta=50000.0,
             rope_scaling={"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                           "mscale": 1.0, "mscale_all_dim": 1.0, "beta_fast": 32, "beta_slow": 1})
    params = rope.standardize(c)
    assert params["rope_type"] == "yarn" and params["rope_theta"] == 50000.0
    # DeepSeek-V3/R1's real settings: the cos/sin factor cancels, the softmax scale does not.
    r = rope.build(c, 64, True)
    assert r.attention_scaling == 1.0
    m = 0.1 * np.log(40) + 1.0
    assert rope.mla_softmax_scale(params, 192) == pytest.approx(192 ** -0.5 * m * m)


def test_partial_rotary_is_refused_for_scaled_rope():
    c = dict(max_position_embeddings=256, partial_rotary_factor=0.5,
             rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=2.0))
    with pytest.raises(ExportError, match="partial_rotary_factor 0.5"):
        rope.build(c, 16, False)


def test_layer_kinds():
    assert spec_from_dict(cfg("qwen3_moe", decoder_sparse_step=2, mlp_only_layers=[])).layer_kinds == (
        "dense", "moe", "dense")
    assert spec_from_dict(cfg("qwen3_moe", mlp_only_layers=[1])).layer_kinds == ("moe", "dense", "moe")
    assert spec_from_dict(cfg("deepseek_v3", first_k_dense_replace=2)).layer_kinds == ("dense", "dense", "moe")
    with pytest.raises(ExportError, match="no Mixture-of-Experts layer"):
        spec_from_dict(cfg("deepseek_v3", first_k_dense_replace=3))


def test_expert_count_aliases():
    # transformers' attribute_map lets either key carry the expert count
    assert spec_from_dict(cfg("qwen3_moe")).routing.num_experts == 8  # num_local_experts
    c = cfg("qwen3_moe", num_experts=6)
    del c["num_local_experts"]
    assert spec_from_dict(c).routing.num_experts == 6


def test_deepseek_v2_routing_semantics():
    s = spec_from_dict(cfg("deepseek_v2", topk_method="group_limited_greedy", n_group=4, topk_group=2,
                           norm_topk_prob=True))
    assert s.routing.group_limit == {"n_group": 4, "topk_group": 2, "group_score": "max", "masked": "zero"}
    assert s.routing.norm_topk_prob is False  # transformers' DeepseekV2 router never normalises
    assert s.rope.interleaved  # V2 always rotates interleaved pairs
    with pytest.raises(ExportError, match="topk_method 'noaux_tc'"):
        spec_from_dict(cfg("deepseek_v2", topk_method="noaux_tc"))


def test_deepseek_v3_values():
    s = spec_from_dict(cfg("deepseek_v3"))
    assert s.routing.correction_bias and s.routing.norm_eps == 1e-20
    assert s.shared_ffn.intermediate_size == 32 and s.dense_ffn.intermediate_size == 64
    assert s.attention.q_lora_rank == 24
    assert spec_from_dict(cfg("deepseek_v3", q_lora_rank=None)).attention.q_lora_rank is None
    assert not spec_from_dict(cfg("deepseek_v3", rope_interleave=False)).rope.interleaved


@pytest.mark.parametrize("arch,changes,message", [
    ("deepseek_v3", dict(n_group=3), "n_group 3 does not divide the expert count 8"),
    ("deepseek_v3", dict(topk_group=3), "topk_group 3 exceeds n_group 2"),
    ("deepseek_v3", dict(n_group=8, topk_group=1), "fewer than 2 experts per group"),
    ("deepseek_v3", dict(num_experts_per_tok=9), "num_experts_per_tok 9 exceeds the expert count 8"),
    ("deepseek_v3", dict(num_key_value_heads=2), "num_key_value_heads 2 != num_attention_heads 4"),
    ("olmoe", dict(head_dim=32), "olmoe head_dim 32 must equal hidden_size / num_attention_heads"),
    ("mixtral", dict(num_key_value_heads=3), "not a multiple of num_key_value_heads 3"),
    ("mixtral", dict(hidden_size="64"), "hidden_size must be an integer"),
    ("qwen2_moe", dict(use_sliding_window=True, sliding_window=16, max_window_layers=28, layer_types=None),
     "sliding_window 16"),
    ("qwen3_moe", dict(rope_parameters={"full_attention": {"rope_type": "default"}}), "per-layer-type rope"),
])
def test_refusals(arch, changes, message):
    with pytest.raises(ExportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        spec_from_dict(cfg(arch, **changes))
