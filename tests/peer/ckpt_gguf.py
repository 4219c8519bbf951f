"""A checkpoint written by checkpoint.py -> an F16 GGUF with llama.cpp's names and metadata.

Follows what the vendored `convert_hf_to_gguf.py` (conversion/qwen.py, conversion/deepseek.py,
conversion/base.py) writes for qwen3moe and deepseek2: experts stacked into one 3-D tensor per
projection, MLA's kv_b_proj split into k_b (transposed) and v_b, DeepSeek as MQA with one KV head,
1-D tensors and the router in F32. It reads the very arrays moe_export reads (through the
safetensors file), without torch, one tensor (or one stacked expert projection) at a time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from checkpoint import BOS_ID, EOS_ID, SPECIAL_TOKENS, vocabulary
from safetensors import safe_open


def _metadata(w, gguf, cfg: dict) -> None:
    deepseek = cfg["model_type"] == "deepseek_v3"
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_expert_used_count(cfg["num_experts_per_tok"])
    w.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    if deepseek:
        rope = cfg["qk_rope_head_dim"]
        w.add_head_count_kv(1)  # MLA runs as MQA over the latent
        w.add_expert_count(cfg["n_routed_experts"])
        w.add_expert_group_count(cfg["n_group"])
        w.add_expert_group_used_count(cfg["topk_group"])
        w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
        w.add_leading_dense_block_count(cfg["first_k_dense_replace"])
        w.add_vocab_size(cfg["vocab_size"])
        w.add_q_lora_rank(cfg["q_lora_rank"])
        w.add_kv_lora_rank(cfg["kv_lora_rank"])
        w.add_key_length(cfg["kv_lora_rank"] + rope)
        w.add_value_length(cfg["kv_lora_rank"])
        w.add_key_length_mla(cfg["qk_nope_head_dim"] + rope)
        w.add_value_length_mla(cfg["v_head_dim"])
        w.add_expert_shared_count(cfg["n_shared_experts"])
        w.add_expert_weights_scale(cfg["routed_scaling_factor"])
        if cfg["norm_topk_prob"]:
            w.add_expert_weights_norm(True)
        w.add_rope_dimension_count(rope)
    else:
        w.add_head_count_kv(cfg["num_key_value_heads"])
        w.add_expert_count(cfg["num_experts"])
        w.add_key_length(cfg["head_dim"])
        w.add_value_length(cfg["head_dim"])
    tokens, merges = vocabulary(cfg["vocab_size"])
    types = [gguf.TokenType.NORMAL] * len(tokens)
    for i in range(len(SPECIAL_TOKENS)):
        types[256 + i] = gguf.TokenType.CONTROL
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_add_bos_token(False)


def _plan(cfg: dict, names: list[str]) -> list[tuple[str, list[str], str]]:
    """(HF name the GGUF name is mapped from, source tensors, how to combine them)."""
    plan: list[tuple[str, list[str], str]] = []
    stacked: set[str] = set()
    for name in names:
        parts = name.split(".")
        if ".mlp.experts." in name:
            layer, proj = parts[2], parts[6]
            key = f"model.layers.{layer}.mlp.experts.{proj}.weight"
            if key not in stacked:
                stacked.add(key)
                prefix = f"model.layers.{layer}.mlp.experts."
                members = sorted((n for n in names if n.startswith(prefix) and n.split(".")[6] == proj),
                                 key=lambda n: int(n.split(".")[5]))
                plan.append((key, members, "stack"))
        elif name.endswith("kv_b_proj.weight"):
            plan.append((name.replace("kv_b_proj", "k_b_proj"), [name], "k_b"))
            plan.append((name.replace("kv_b_proj", "v_b_proj"), [name], "v_b"))
        elif name.endswith("e_score_correction_bias"):
            plan.append((name.replace("e_score_correction_bias", "e_score_correction.bias"), [name], "f32"))
        else:
            plan.append((name, [name], "as_is"))
    return plan


def _array(f, cfg: dict, sources: list[str], how: str) -> np.ndarray:
    if how == "stack":
        return np.stack([f.get_tensor(n) for n in sources])
    x = f.get_tensor(sources[0])
    if how in ("k_b", "v_b"):
        heads, nope, vd = cfg["num_attention_heads"], cfg["qk_nope_head_dim"], cfg["v_head_dim"]
        kv_b = x.reshape(heads, nope + vd, x.shape[-1])
        if how == "k_b":
            return np.ascontiguousarray(kv_b[:, :nope, :].transpose(0, 2, 1))
        return np.ascontiguousarray(kv_b[:, nope:, :])
    if x.ndim == 1 or how == "f32" or sources[0].endswith("mlp.gate.weight"):
        return x.astype(np.float32)
    return x


def write_gguf(ckpt: Path, out: Path, gguf) -> None:
    """`gguf` is llama.cpp's gguf-py module, from the same sdist as the binaries."""
    cfg = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    arch = gguf.MODEL_ARCH.DEEPSEEK2 if cfg["model_type"] == "deepseek_v3" else gguf.MODEL_ARCH.QWEN3MOE
    tmap = gguf.get_tensor_name_map(arch, cfg["num_hidden_layers"])
    tmp = out.with_suffix(".tmp")
    w = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
    w.add_name(ckpt.name)
    _metadata(w, gguf, cfg)
    with safe_open(str(ckpt / "model.safetensors"), framework="np") as f:
        plan = _plan(cfg, list(f.keys()))
        mapped = []
        for hf_name, sources, how in plan:
            gname = tmap.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gname is None:
                raise ValueError(f"no llama.cpp name for {hf_name}")
            mapped.append(gname)
            shape = [len(sources), *f.get_slice(sources[0]).get_shape()] if how == "stack" else None
            if shape is None:
                shape = list(_array(f, cfg, sources, how).shape)  # small or a single tensor: cheap
            dtype = np.float32 if how in ("f32",) or len(shape) == 1 or hf_name.endswith("mlp.gate.weight") \
                else np.float16
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            w.add_tensor_info(gname, shape, np.dtype(dtype), nbytes)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for hf_name, sources, how in plan:
            w.write_tensor_data(_array(f, cfg, sources, how))
    w.close()
    tmp.replace(out)


def weight_bytes_per_token(path: Path, cfg: dict, gguf) -> float:
    """Weight bytes llama.cpp reads per decoded token: every tensor once, routed experts at top-k /
    experts, one row of the embedding; the KV cache is not counted."""
    experts = cfg.get("n_routed_experts") or cfg["num_experts"]
    share = cfg["num_experts_per_tok"] / experts
    total = 0.0
    for t in gguf.GGUFReader(path).tensors:
        n = float(t.n_bytes)
        if t.name.startswith("token_embd."):
            n /= cfg["vocab_size"]
        elif "_exps." in t.name:
            n *= share
        total += n
    return total
