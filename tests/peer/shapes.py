"""The model shapes the peer benchmark compares, as Hugging Face config.json dictionaries.

Each shape is one random-weight checkpoint that feeds both engines: `moe_export` reads it as it
would a real checkpoint, and `ckpt_gguf` writes llama.cpp's layout of the same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    name: str
    about: str
    config: dict

    @property
    def arch(self) -> str:
        return self.config["model_type"]


def _qwen3(layers: int, hidden: int, experts: int, top_k: int, ffn: int, heads: int, kv_heads: int,
           head_dim: int, vocab: int) -> dict:
    return {
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
        "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
        "moe_intermediate_size": ffn, "intermediate_size": 4 * ffn,
        "num_experts": experts, "num_experts_per_tok": top_k, "norm_topk_prob": True,
        "decoder_sparse_step": 1, "mlp_only_layers": [], "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
        "hidden_act": "silu", "attention_bias": False, "tie_word_embeddings": False,
        "bos_token_id": 256, "eos_token_id": 259, "dtype": "float16",
    }


def _deepseek_v3(layers: int, hidden: int, experts: int, top_k: int, ffn: int, dense_ffn: int, heads: int,
                 q_lora: int, kv_lora: int, nope: int, rope: int, v_dim: int, groups: int, topk_groups: int,
                 vocab: int) -> dict:
    return {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": heads,
        "q_lora_rank": q_lora, "kv_lora_rank": kv_lora, "qk_nope_head_dim": nope, "qk_rope_head_dim": rope,
        "v_head_dim": v_dim, "intermediate_size": dense_ffn, "moe_intermediate_size": ffn,
        "n_routed_experts": experts, "n_shared_experts": 1, "num_experts_per_tok": top_k,
        "n_group": groups, "topk_group": topk_groups, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
        "norm_topk_prob": True, "routed_scaling_factor": 2.5, "first_k_dense_replace": 1,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "rope_interleave": True,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "hidden_act": "silu", "attention_bias": False, "tie_word_embeddings": False,
        "bos_token_id": 256, "eos_token_id": 259, "dtype": "float16",
    }


SHAPES = {
    s.name: s
    for s in (
        Shape("qwen3", "Qwen3-30B-A3B cut to 4 layers: hidden 2048, 128 experts top-8, expert FFN 768, "
              "32 heads / 4 KV heads x 128, vocab 32000",
              _qwen3(layers=4, hidden=2048, experts=128, top_k=8, ffn=768, heads=32, kv_heads=4, head_dim=128,
                     vocab=32000)),
        Shape("deepseek", "DeepSeek-V3-like, 4 layers (1 dense first): hidden 2048, MLA (16 heads, q_lora 768, "
              "kv_lora 512, nope 128 + rope 64, v 128), 128 experts top-8 in 8 groups (4 used) + 1 shared, "
              "expert FFN 768, dense FFN 6144, vocab 32000",
              _deepseek_v3(layers=4, hidden=2048, experts=128, top_k=8, ffn=768, dense_ffn=6144, heads=16,
                           q_lora=768, kv_lora=512, nope=128, rope=64, v_dim=128, groups=8, topk_groups=4,
                           vocab=32000)),
        Shape("small-experts", "many small experts: 48 layers x 128 experts top-8, hidden 256, expert FFN 128, "
              "4 heads / 2 KV heads x 64, vocab 32000",
              _qwen3(layers=48, hidden=256, experts=128, top_k=8, ffn=128, heads=4, kv_heads=2, head_dim=64,
                     vocab=32000)),
        # Smoke shapes for --quick: seconds to make, both architectures' code paths.
        Shape("tiny-qwen3", "smoke test: qwen3_moe, 2 layers, hidden 256, 16 experts top-4, FFN 128, vocab 1024",
              _qwen3(layers=2, hidden=256, experts=16, top_k=4, ffn=128, heads=4, kv_heads=2, head_dim=64,
                     vocab=1024)),
        Shape("tiny-deepseek", "smoke test: deepseek_v3 (MLA, groups, shared expert, 1 dense layer), 3 layers, "
              "hidden 256, 16 experts top-4, vocab 1024",
              _deepseek_v3(layers=3, hidden=256, experts=16, top_k=4, ffn=128, dense_ffn=512, heads=4,
                           q_lora=96, kv_lora=64, nope=32, rope=32, v_dim=32, groups=4, topk_groups=2,
                           vocab=1024)),
    )
}

DEFAULT_SHAPES = ("qwen3", "deepseek", "small-experts")
QUICK_SHAPES = ("tiny-qwen3", "tiny-deepseek")
