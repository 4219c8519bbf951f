"""A float16 KV cache (FORMAT.md "KV cache types"): the graph, the manifest and the reference runner."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import FIXTURES, golden
from refrunner import Package, score

from moe_export.cli import main
from moe_export.export import export
from moe_export.quant import QuantConfig, package_quant


def _export(tmp_path, arch: str, cache: str):
    out = tmp_path / f"{arch}-{cache}"
    export(FIXTURES / arch, out, package_quant(QuantConfig(), cache=cache), progress=False)
    return out


def test_a_half_cache_is_a_format_3_key_and_float16_past_inputs(tmp_path):
    out = _export(tmp_path, "qwen3_moe", "float16")
    m = json.loads((out / "manifest.json").read_text())
    assert m["format_version"] == 3
    assert m["attention"]["cache_dtype"] == "float16"
    g = onnx.load(str(out / m["layers"][0]["attn"]), load_external_data=False).graph
    types = {i.name: i.type.tensor_type.elem_type for i in g.input}
    assert types["past_key"] == types["past_value"] == onnx.TensorProto.FLOAT16
    outs = {o.name: o.type.tensor_type.elem_type for o in g.output}
    assert outs["new_key"] == outs["new_value"] == onnx.TensorProto.FLOAT


def test_a_float_cache_stays_format_2(tmp_path):
    m = json.loads((_export(tmp_path, "qwen3_moe", "float32") / "manifest.json").read_text())
    assert m["format_version"] == 2
    assert "cache_dtype" not in m["attention"]


def test_mla_keeps_its_float_cache(tmp_path):
    m = json.loads((_export(tmp_path, "deepseek_v3", "float16") / "manifest.json").read_text())
    assert m["format_version"] == 2
    assert "cache_dtype" not in m["attention"]


def test_a_half_cache_stays_within_f16_rounding_of_transformers(tmp_path):
    pkg = Package(_export(tmp_path, "qwen3_moe", "float16"))
    worst = 0.0
    for case in golden("qwen3_moe")["cases"]:
        ids = case["ids"]
        whole = np.array(score(pkg, ids)[1:])
        worst = max(worst, float(np.abs(whole - np.array(case["logprobs"][1:])).max()))
        # Prefill then one token per call: the cache holds exactly the rounded rows the prefill
        # attended to, so the two agree to float32 rounding, not f16's.
        stepwise = np.array(score(pkg, ids, [2] + [1] * (len(ids) - 2))[1:])
        assert np.abs(whole - stepwise).max() < 1e-5
    assert 0.0 < worst < 1e-2, worst


def test_an_unknown_cache_type_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(FIXTURES / "qwen3_moe"), str(tmp_path / "out"), "--kv-cache", "int8"])
    assert e.value.code == 2
    assert "--kv-cache" in capsys.readouterr().err
