"""Synthetic benchmark packages: random weights at realistic shapes, no checkpoint needed.

`python3 -m moe_export.synth OUT_DIR [--layers 4] [--hidden 2048] [--ffn 768] [--experts 64]
[--top-k 8] [--quant int4] [--vocab 4096] [--router-zipf S] ...` writes a Qwen3-MoE-like package (grouped-query
attention with q/k norm, softmax top-k routing) and a byte-level tokenizer.json. Tensors are generated
when their graph is written and dropped after it, so memory stays at about one graph's weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from pathlib import Path

import numpy as np

from moe_export import manifest as mf
from moe_export.cli import fusion_args, package_quant_from_args, quant_args
from moe_export.config import spec_from_dict
from moe_export.errors import ExportError
from moe_export.export import prepare_out_dir, write_graphs
from moe_export.plans import cache_layout, graph_kinds, layer_entries, make_plans
from moe_export.reader import TensorRef
from moe_export import names, skew

SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class RandomSource:
    """Deterministic random tensors by name: linear weights ~ U(-1, 1) / sqrt(fan_in), norms near 1."""

    def __init__(self, seed: int):
        self.seed = seed

    def has(self, name: str) -> bool:  # every per-expert name "exists"
        return True

    def load(self, ref: TensorRef) -> np.ndarray:
        rng = np.random.default_rng([self.seed, zlib.crc32(ref.name.encode())])
        if len(ref.shape) == 1:
            return (1.0 + 0.1 * rng.standard_normal(ref.shape, dtype=np.float32)).astype(np.float32)
        x = rng.random(ref.shape, dtype=np.float32)
        x *= np.float32(2.0 / np.sqrt(ref.shape[-1]))
        x -= np.float32(1.0 / np.sqrt(ref.shape[-1]))
        return x


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map that byte-level BPE vocabularies use."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return chars


def tokenizer_json() -> dict:
    """Byte-level BPE without merges: ids 0..255 are the bytes, special tokens follow."""
    return byte_level_bpe({ch: b for b, ch in bytes_to_unicode().items()}, [])


def byte_level_bpe(vocab: dict[str, int], merges: list[str]) -> dict:
    """tokenizer.json of a byte-level BPE with `vocab` and `merges`, SPECIAL_TOKENS at ids 256.."""
    added = [{"id": 256 + i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, t in enumerate(SPECIAL_TOKENS)]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


def synth_config(a: argparse.Namespace) -> dict:
    return {
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
        "vocab_size": a.vocab, "hidden_size": a.hidden, "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads, "head_dim": a.head_dim,
        "moe_intermediate_size": a.ffn, "intermediate_size": a.dense_ffn or 4 * a.ffn,
        "num_experts": a.experts, "num_experts_per_tok": a.top_k, "norm_topk_prob": True,
        "decoder_sparse_step": 1, "mlp_only_layers": [], "max_position_embeddings": a.context,
        "rms_norm_eps": 1e-6, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
        "hidden_act": "silu", "tie_word_embeddings": False, "bos_token_id": 256, "eos_token_id": 259,
    }


def router_skew(spec, source: RandomSource, a: argparse.Namespace) -> tuple[dict[int, list[float]], dict]:
    """Per MoE layer, the correction bias that makes its routing Zipf-skewed (moe_export.skew), and the
    share of selections calibration sent to each layer's hottest half of the experts (target and reached).
    No bias without `--router-zipf`."""
    if a.router_zipf is None:
        return {}, {}
    e, k = spec.routing.num_experts, spec.routing.top_k
    bias, target_share, reached_share = {}, [], []
    for layer, kind in enumerate(spec.layer_kinds):
        if kind != "moe":
            continue
        rng = np.random.default_rng([a.seed, 7919, layer])
        target = skew.zipf_targets(e, k, a.router_zipf, rng)
        router = source.load(names.router_refs(spec, layer)["gate"])
        b = skew.calibrate(router, k, target, rng)
        check = skew.simulated_scores(router, np.random.default_rng([a.seed, 104729, layer]))
        reached = skew.selection_frequency(check, b.astype(np.float64), k)
        bias[layer] = [float(v) for v in b]
        target_share.append(skew.hot_share(target, target))
        reached_share.append(skew.hot_share(reached, target))
    return bias, {"hot_half_share_target": round(float(np.mean(target_share)), 4),
                  "hot_half_share_calibrated": round(float(np.mean(reached_share)), 4)}


def synthesize(a: argparse.Namespace) -> dict:
    if a.vocab < 256 + len(SPECIAL_TOKENS):
        raise ExportError(f"--vocab must be at least {256 + len(SPECIAL_TOKENS)} (bytes + special tokens)")
    cfg = synth_config(a)
    spec = spec_from_dict(cfg)
    pq = package_quant_from_args(a)
    source = RandomSource(a.seed)
    out = Path(a.out)
    prepare_out_dir(out, a.force)
    write_graphs(make_plans(spec, source, pq, not a.unfused_router), source.load, out / "graphs", not a.quiet)
    (out / "tokenizer.json").write_text(json.dumps(tokenizer_json(), ensure_ascii=False), encoding="utf-8")
    tcfg = {"bos_token": SPECIAL_TOKENS[0], "eos_token": "<|im_end|>", "add_bos_token": False,
            "chat_template": CHAT_TEMPLATE, "model_max_length": a.context}
    (out / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=1), encoding="utf-8")
    (out / "generation_config.json").write_text(json.dumps({"temperature": 0.7, "top_p": 0.9}), encoding="utf-8")
    manifest = mf.model_section(spec, a.name, pq, cache_layout(spec), graph_kinds(spec))
    manifest["source"]["synthetic"] = {"seed": a.seed}
    bias, achieved = router_skew(spec, source, a)
    if a.router_zipf is not None:
        manifest["source"]["synthetic"]["router_zipf"] = {"exponent": a.router_zipf, **achieved}
    manifest["layers"] = layer_entries(spec, bias, not a.unfused_router)
    manifest["embed"] = "graphs/embed.onnx"
    manifest["head"] = "graphs/head.onnx"
    manifest.update(mf.tokenizer_section(out, cfg))
    manifest["files"] = mf.file_table(out)
    mf.write(out, manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="moe_export.synth", description="Write a random-weight benchmark package.")
    p.add_argument("out", metavar="OUT_DIR")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--ffn", type=int, default=768, help="expert intermediate size")
    p.add_argument("--dense-ffn", type=int, default=0, help="dense intermediate size (unused: all layers MoE)")
    p.add_argument("--experts", type=int, default=64)
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--context", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="synthetic-qwen3-moe")
    p.add_argument("--router-zipf", type=float, default=None, metavar="S",
                   help="skew routing so experts are chosen with Zipf exponent S (1.0 is typical of real MoE "
                        "routers; 0 is uniform): a per-layer correction_bias calibrated on the router weights")
    p.add_argument("--force", action="store_true")
    p.add_argument("--quiet", action="store_true")
    quant_args(p, "int4")
    fusion_args(p)
    a = p.parse_args(argv)
    try:
        manifest = synthesize(a)
    except ExportError as err:
        print(f"moe_export.synth: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. disk full or permissions while writing the package
        print(f"moe_export.synth: error: {err}", file=sys.stderr)
        return 2
    total = sum(f["bytes"] for f in manifest["files"].values())
    print(f"wrote {a.out} ({len(manifest['files'])} files, {total / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
