"""Checkpoint layouts: sharded with an index, transformers 5's fused expert tensors, bf16 and fp16."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
from conftest import golden
from refrunner import Package, score
from safetensors.numpy import load_file, save_file
from test_errors import copy_fixture, reshard

from moe_export.export import export
from moe_export.quant import QuantConfig
from moe_export.reader import Checkpoint, TensorRef


def max_golden_diff(pkg_dir, arch) -> float:
    pkg = Package(pkg_dir)
    return max(np.abs(np.array(score(pkg, c["ids"])[1:]) - np.array(c["logprobs"][1:])).max()
               for c in golden(arch)["cases"])


def test_sharded_checkpoint(tmp_path):
    src = copy_fixture("qwen2_moe", tmp_path / "src")
    reshard(src, 3)
    export(src, tmp_path / "out", QuantConfig(), progress=False)
    assert max_golden_diff(tmp_path / "out", "qwen2_moe") < 1e-4


@pytest.mark.parametrize("arch,block", [("deepseek_v3", "mlp"), ("mixtral", "block_sparse_moe")])
def test_fused_expert_tensors(tmp_path, arch, block):
    """mlp.experts.gate_up_proj [E, 2I, H] / down_proj [E, H, I], as transformers 5 holds them."""
    src = copy_fixture(arch, tmp_path / "src")
    tensors = load_file(str(src / "model.safetensors"))
    names = ("w1", "w3", "w2") if arch == "mixtral" else ("gate_proj", "up_proj", "down_proj")
    cfg = json.loads((src / "config.json").read_text())
    n_exp = cfg.get("n_routed_experts") or cfg.get("num_local_experts")
    for layer in range(cfg["num_hidden_layers"]):
        prefix = f"model.layers.{layer}.{block}.experts."
        if prefix + "0." + names[0] + ".weight" not in tensors:
            continue
        per = [[tensors.pop(f"{prefix}{e}.{n}.weight") for n in names] for e in range(n_exp)]
        tensors[f"model.layers.{layer}.mlp.experts.gate_up_proj"] = np.stack([np.concatenate(p[:2]) for p in per])
        tensors[f"model.layers.{layer}.mlp.experts.down_proj"] = np.stack([p[2] for p in per])
    save_file(tensors, str(src / "model.safetensors"))
    export(src, tmp_path / "out", QuantConfig(), progress=False)
    assert max_golden_diff(tmp_path / "out", arch) < 1e-4


def test_half_precision_tensors_are_widened(tmp_path):
    values = np.array([[1.0, -2.5, 3.140625], [0.0, 1e-3, -7.0]], np.float32)
    save_file({"a": values.astype(ml_dtypes.bfloat16), "b": values.astype(np.float16)},
              str(tmp_path / "model.safetensors"))
    ckpt = Checkpoint(tmp_path)
    a = ckpt.load(TensorRef("a", (2, 3)))
    b = ckpt.load(TensorRef("b", (2, 3)))
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_array_equal(a, values.astype(ml_dtypes.bfloat16).astype(np.float32))
    np.testing.assert_array_equal(b, values.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(ckpt.load(TensorRef("a", (3,), index=1)), a[1])
