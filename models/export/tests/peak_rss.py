"""Peak RSS of a streaming conversion against the size of a many-layer checkpoint.

  python3 tests/peak_rss.py [--layers 32] [--experts 16] [--hidden 512] [--quant int4] [--keep DIR]

Writes a DeepSeek-V3-shaped bf16 checkpoint with Hugging Face names (MLA, dense first layer, routed and
shared experts, correction bias) in shards with an index, then converts it with `python3 -m moe_export`
in a child process and reads that child's peak RSS from wait4(). The fixed cost of the exporter's
imports is measured the same way, in a child that only imports them.

Linux carries a parent's memory high-water mark into a child across fork + exec, so this process stays
small: it imports only the standard library and writes the checkpoint in a child of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parents[1] / "fixtures"
IMPORTS = "import moe_export.export, moe_export.cli, onnx, onnx.checker, numpy, safetensors, tqdm, ml_dtypes"


def config(a: argparse.Namespace) -> dict:
    return {
        "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
        "vocab_size": a.vocab, "hidden_size": a.hidden, "intermediate_size": 4 * a.hidden,
        "moe_intermediate_size": a.moe_ffn, "num_hidden_layers": a.layers, "num_attention_heads": 8,
        "num_key_value_heads": 8, "n_shared_experts": 1, "n_routed_experts": a.experts, "num_experts_per_tok": 4,
        "n_group": 4, "topk_group": 2, "first_k_dense_replace": 1, "norm_topk_prob": True,
        "routed_scaling_factor": 2.5, "kv_lora_rank": 128, "q_lora_rank": 192, "qk_rope_head_dim": 32,
        "qk_nope_head_dim": 64, "v_head_dim": 64, "hidden_act": "silu", "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6, "rope_interleave": True, "tie_word_embeddings": False, "bos_token_id": 0,
        "eos_token_id": 1, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    }


def tensor_shapes(c: dict):
    """(name, shape) in checkpoint order, layer by layer."""
    h, heads = c["hidden_size"], c["num_attention_heads"]
    qk = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    yield "model.embed_tokens.weight", (c["vocab_size"], h)
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        yield p + "input_layernorm.weight", (h,)
        yield p + "post_attention_layernorm.weight", (h,)
        s = p + "self_attn."
        yield s + "q_a_proj.weight", (c["q_lora_rank"], h)
        yield s + "q_a_layernorm.weight", (c["q_lora_rank"],)
        yield s + "q_b_proj.weight", (heads * qk, c["q_lora_rank"])
        yield s + "kv_a_proj_with_mqa.weight", (c["kv_lora_rank"] + c["qk_rope_head_dim"], h)
        yield s + "kv_a_layernorm.weight", (c["kv_lora_rank"],)
        yield s + "kv_b_proj.weight", (heads * (c["qk_nope_head_dim"] + c["v_head_dim"]), c["kv_lora_rank"])
        yield s + "o_proj.weight", (h, heads * c["v_head_dim"])
        if layer < c["first_k_dense_replace"]:
            i = c["intermediate_size"]
            yield from ((p + f"mlp.{n}.weight", shape) for n, shape in
                        (("gate_proj", (i, h)), ("up_proj", (i, h)), ("down_proj", (h, i))))
            continue
        i = c["moe_intermediate_size"]
        yield p + "mlp.gate.weight", (c["n_routed_experts"], h)
        yield p + "mlp.gate.e_score_correction_bias", (c["n_routed_experts"],)
        for e in [f"experts.{e}" for e in range(c["n_routed_experts"])] + ["shared_experts"]:
            w = i * (c["n_shared_experts"] if e == "shared_experts" else 1)
            yield from ((p + f"mlp.{e}.{n}.weight", shape) for n, shape in
                        (("gate_proj", (w, h)), ("up_proj", (w, h)), ("down_proj", (h, w))))
    yield "model.norm.weight", (h,)
    yield "lm_head.weight", (c["vocab_size"], h)


def write_checkpoint(a: argparse.Namespace, root: Path) -> int:
    """Write config, bf16 shards of about --shard-mb and the index; returns the bytes of the shards."""
    import ml_dtypes
    import numpy as np
    from safetensors.numpy import save_file

    c = config(a)
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(c, indent=1))
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copyfile(FIXTURES / "deepseek_v3" / name, root / name)
    rng = np.random.default_rng(0)
    shards, current, size = [], {}, 0  # shards: tensor names per shard
    for name, shape in tensor_shapes(c):
        if len(shape) == 1:
            t = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
        else:
            t = rng.standard_normal(shape, dtype=np.float32) / np.float32(np.sqrt(shape[1]))
        current[name] = t.astype(ml_dtypes.bfloat16)
        size += current[name].nbytes
        if size >= a.shard_mb * 1e6:
            shards.append(list(current))
            save_file(current, str(root / f"part-{len(shards)}.tmp"))
            current, size = {}, 0
    if current:
        shards.append(list(current))
        save_file(current, str(root / f"part-{len(shards)}.tmp"))
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        (root / f"part-{i + 1}.tmp").rename(root / fname)
        weight_map.update({n: fname for n in shard})  # shard: list of names
        total += (root / fname).stat().st_size
    (root / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    return total


def run_child(cmd: list[str]) -> tuple[int, float, int]:
    """(exit status, seconds, peak RSS in bytes) of one child process."""
    env = dict(os.environ, PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    return proc.returncode, time.monotonic() - start, usage.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux


def measure(a: argparse.Namespace, workdir: Path) -> dict:
    ckpt, out = workdir / "checkpoint", workdir / "package"
    run_child([sys.executable, __file__, *sys_args(a), "--write-checkpoint", str(ckpt)])
    ckpt_bytes = sum(p.stat().st_size for p in ckpt.glob("*.safetensors"))
    _, _, baseline = run_child([sys.executable, "-c", IMPORTS])
    _, seconds, peak = run_child([sys.executable, "-m", "moe_export", str(ckpt), str(out), "--quiet",
                                  "--quant", a.quant])
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "layers": a.layers, "experts": a.experts, "checkpoint_bytes": ckpt_bytes,
        "shards": len(list(ckpt.glob("*.safetensors"))),
        "package_bytes": sum(f["bytes"] for f in manifest["files"].values()),
        "graphs": sum(1 for k in manifest["files"] if k.endswith(".onnx")),
        "baseline_rss": baseline, "peak_rss": peak, "seconds": seconds, "quant": a.quant,
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--moe-ffn", type=int, default=256)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--shard-mb", type=float, default=50)
    p.add_argument("--quant", default="int4")
    p.add_argument("--keep", type=Path, help="write into this folder and keep it")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.add_argument("--write-checkpoint", type=Path, help=argparse.SUPPRESS)
    return p


def sys_args(a: argparse.Namespace) -> list[str]:
    return ["--layers", str(a.layers), "--experts", str(a.experts), "--hidden", str(a.hidden),
            "--moe-ffn", str(a.moe_ffn), "--vocab", str(a.vocab), "--shard-mb", str(a.shard_mb)]


def report(r: dict) -> str:
    mb = 1e6
    return (f"checkpoint: {r['layers']} layers, {r['experts']} experts/layer, bf16, {r['shards']} shards, "
            f"{r['checkpoint_bytes'] / mb:.1f} MB\n"
            f"package ({r['quant']}): {r['graphs']} graphs, {r['package_bytes'] / mb:.1f} MB, {r['seconds']:.1f} s\n"
            f"peak RSS of the conversion: {r['peak_rss'] / mb:.1f} MB "
            f"(imports alone: {r['baseline_rss'] / mb:.1f} MB; above that: {(r['peak_rss'] - r['baseline_rss']) / mb:.1f} MB "
            f"= {(r['peak_rss'] - r['baseline_rss']) / r['checkpoint_bytes'] * 100:.1f}% of the checkpoint)")


def main() -> None:
    a = parser().parse_args()
    if a.write_checkpoint:
        write_checkpoint(a, a.write_checkpoint)
        return
    show = (lambda r: json.dumps(r)) if a.json else report
    if a.keep:
        shutil.rmtree(a.keep, ignore_errors=True)
        print(show(measure(a, a.keep)))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            print(show(measure(a, Path(tmp))))


if __name__ == "__main__":
    main()
