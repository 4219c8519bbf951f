"""Skewed synthetic routing (`moe_export.synth --router-zipf`): Zipf targets are well-formed, the package
carries a per-layer correction bias, and running the package's real graphs on a prompt (FORMAT.md's routing
rule, as the engine applies it) sends most selections to the experts the target makes hot, where the
unskewed package spreads them evenly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import refrunner
from refrunner import Package, score

from moe_export import skew
from moe_export.errors import ExportError
from moe_export.synth import main

SMALL = ["--layers", "2", "--hidden", "128", "--ffn", "32", "--experts", "16", "--top-k", "2", "--heads", "4",
         "--kv-heads", "2", "--head-dim", "32", "--vocab", "300", "--quant", "fp32", "--quiet"]


def test_zipf_targets_sum_to_top_k_and_never_exceed_one():
    rng = np.random.default_rng(0)
    for e, k, s in [(128, 8, 1.0), (16, 2, 1.2), (8, 8, 2.0), (64, 6, 0.0)]:
        t = skew.zipf_targets(e, k, s, rng)
        assert t.shape == (e,) and abs(t.sum() - k) < 1e-9 and t.max() <= 1.0 + 1e-12
    flat = skew.zipf_targets(64, 6, 0.0, rng)
    assert np.allclose(flat, 6 / 64)
    steep = np.sort(skew.zipf_targets(128, 8, 1.0, rng))[::-1]
    assert steep[0] == 1.0 and steep[-1] < steep[1] / 50
    for bad in [-0.5, 5.0, float("nan")]:
        with pytest.raises(ExportError, match="--router-zipf"):
            skew.zipf_targets(16, 2, bad, rng)


def _selections(pkg_dir, monkeypatch) -> list[np.ndarray]:
    """Expert counts per MoE layer while the package's graphs run a 160-token prompt."""
    pkg = Package(pkg_dir)
    counts = [np.zeros(16) for _ in pkg.manifest["layers"]]
    calls = iter(range(10**9))
    real = refrunner.route

    def counting(logits, routing, bias):
        idx, w = real(logits, routing, bias)
        layer = next(calls) % len(counts)
        counts[layer] += np.bincount(idx.ravel(), minlength=16)
        return idx, w

    monkeypatch.setattr(refrunner, "route", counting)
    rng = np.random.default_rng(5)
    score(pkg, [256, *rng.integers(0, 256, 159).tolist()])
    return counts


def test_a_skewed_package_routes_most_tokens_to_its_hot_experts(tmp_path, monkeypatch):
    out = tmp_path / "zipf"
    assert main([str(out), *SMALL, "--router-zipf", "1.0"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    z = m["source"]["synthetic"]["router_zipf"]
    assert z["exponent"] == 1.0 and z["hot_half_share_calibrated"] > 0.8, z
    assert all(len(layer["correction_bias"]) == 16 for layer in m["layers"])

    flat_dir = tmp_path / "flat"
    assert main([str(flat_dir), *SMALL]) == 0
    assert all(layer.get("correction_bias") is None for layer in json.loads((flat_dir / "manifest.json").read_text())["layers"])

    skewed, flat = _selections(out, monkeypatch), _selections(flat_dir, monkeypatch)
    shares = []
    for layer, (s, f) in enumerate(zip(skewed, flat)):
        # The hot half as synth drew it (the same random order), applied to what the graphs chose.
        target = skew.zipf_targets(16, 2, 1.0, np.random.default_rng([0, 7919, layer]))
        hot_skewed, hot_flat = skew.hot_share(s, target), skew.hot_share(f, target)
        shares.append(hot_skewed)
        assert hot_skewed > hot_flat + 0.1, (layer, hot_skewed, hot_flat)
    # Real hidden states share a direction the simulated inputs lack, so less skew is reached than
    # calibrated (0.80 here): measured 0.71 and 0.58 for the two layers.
    assert np.mean(shares) > 0.6, shares
