"""Package structure against models/FORMAT.md: checker, files and hashes, graph interfaces, manifest."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import onnx
import pytest
from conftest import ARCHS, FIXTURES

FLOAT, INT64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64


def graphs_of(manifest: dict) -> dict[str, str]:
    """graph path -> kind"""
    kinds = {manifest["embed"]: "embed", manifest["head"]: "head"}
    for layer in manifest["layers"]:
        kinds[layer["attn"]] = "attn+router" if "router" in layer.get("fused", []) else "attn"
        for key in ("router", "shared", "mlp"):
            if layer.get(key):
                kinds[layer[key]] = key
        for e in layer.get("experts", []):
            kinds[e] = "expert"
    return kinds


def io(path: Path) -> tuple[list, list]:
    model = onnx.load(str(path), load_external_data=False)

    def sig(values):
        return [(v.name, v.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
                for v in values]

    return sig(model.graph.input), sig(model.graph.output)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_graph_passes_the_checker(arch, exports):
    pkg = exports.get(arch)
    manifest = json.loads((pkg / "manifest.json").read_text())
    for rel in graphs_of(manifest):
        onnx.checker.check_model(str(pkg / rel), full_check=True)


@pytest.mark.parametrize("arch", ARCHS)
def test_files_table_is_complete_and_correct(arch, exports):
    pkg = exports.get(arch)
    manifest = json.loads((pkg / "manifest.json").read_text())
    on_disk = {p.relative_to(pkg).as_posix() for p in pkg.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    for rel, entry in manifest["files"].items():
        data = (pkg / rel).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, rel
    for rel in graphs_of(manifest):
        assert rel in manifest["files"]
        model = onnx.load(str(pkg / rel), load_external_data=False)
        external = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
        # each graph's weights live in its own <graph>.onnx.data, nowhere else
        assert external <= {Path(rel).name + ".data"}, rel
        assert (rel + ".data" in manifest["files"]) == bool(external), rel


@pytest.mark.parametrize("arch", ARCHS)
def test_graph_interfaces_follow_format(arch, exports):
    pkg = exports.get(arch)
    m = json.loads((pkg / "manifest.json").read_text())
    h, v, e = m["dims"]["hidden_size"], m["dims"]["vocab_size"], m["routing"]["num_experts"]
    cache = m["attention"]["cache"]
    # FORMAT.md "KV cache layouts": head-major buffers put the heads first and the capacity C second.
    if m["attention"]["cache_layout"] == "head_major":
        past = [(f"past_{c['name']}", FLOAT, [c["shape"][0], "C", *c["shape"][1:]]) for c in cache]
    else:
        past = [(f"past_{c['name']}", FLOAT, ["P", *c["shape"]]) for c in cache]
    want_attn_in = [("hidden", FLOAT, ["T", h]), ("positions", INT64, ["T"])] + past
    want_attn_out = [("hidden_out", FLOAT, ["T", h]), ("ffn_in", FLOAT, ["T", h])] + [
        (f"new_{c['name']}", FLOAT, ["T", *c["shape"]]) for c in cache]
    expected = {
        "embed": ([("input_ids", INT64, ["T"])], [("hidden", FLOAT, ["T", h])]),
        "head": ([("hidden", FLOAT, ["T", h])], [("logits", FLOAT, ["T", v])]),
        "router": ([("ffn_in", FLOAT, ["T", h])], [("logits", FLOAT, ["T", e])]),
        "attn": (want_attn_in, want_attn_out),
        "attn+router": (want_attn_in, want_attn_out + [("router_logits", FLOAT, ["T", e])]),
    }
    for ffn in ("expert", "shared", "mlp"):
        expected[ffn] = ([("x", FLOAT, ["T", h])], [("y", FLOAT, ["T", h])])
    for rel, kind in graphs_of(m).items():
        inputs, outputs = io(pkg / rel)
        want_in, want_out = expected[kind]
        assert inputs == want_in, rel
        assert outputs == want_out, rel  # FORMAT.md's order (engines should still bind by name)


EXPECTED_ROUTING = {
    "deepseek_v3": {"scoring": "sigmoid", "group_limit": {"n_group": 2, "topk_group": 1, "group_score": "top2_sum",
                                                                "masked": "neg_inf"},
                    "norm_topk_prob": True, "norm_eps": 1e-20, "routed_scaling_factor": 2.5},
    "deepseek_v2": {"scoring": "softmax", "group_limit": None, "norm_topk_prob": False, "norm_eps": 0.0,
                    "routed_scaling_factor": 1.0},
    "mixtral": {"scoring": "softmax", "group_limit": None, "norm_topk_prob": True, "norm_eps": 0.0,
                "routed_scaling_factor": 1.0},
    "qwen3_moe": {"scoring": "softmax", "group_limit": None, "norm_topk_prob": True, "norm_eps": 0.0,
                  "routed_scaling_factor": 1.0},
    "qwen2_moe": {"scoring": "softmax", "group_limit": None, "norm_topk_prob": False, "norm_eps": 0.0,
                  "routed_scaling_factor": 1.0},
    "olmoe": {"scoring": "softmax", "group_limit": None, "norm_topk_prob": False, "norm_eps": 0.0,
              "routed_scaling_factor": 1.0},
}
EXPECTED_KINDS = {"deepseek_v3": ["dense", "moe", "moe"], "deepseek_v2": ["dense", "moe", "moe"],
                  "qwen3_moe": ["dense", "moe", "moe"], "mixtral": ["moe", "moe"], "qwen2_moe": ["moe", "moe"],
                  "olmoe": ["moe", "moe"]}


@pytest.mark.parametrize("arch", ARCHS)
def test_manifest_describes_the_model(arch, exports):
    m = json.loads((exports.get(arch) / "manifest.json").read_text())
    cfg = json.loads((FIXTURES / arch / "config.json").read_text())
    assert (m["format"], m["format_version"], m["architecture"]) == ("moed-package", 2, arch)
    assert m["source"] == {"architectures": cfg["architectures"], "model_type": arch}
    assert m["dims"] == {"hidden_size": 64, "vocab_size": 512, "num_layers": cfg["num_hidden_layers"],
                         "context_length": 256}
    fp32 = {"weights": "fp32", "block_size": None, "accuracy_level": None, "symmetric": None}
    kinds = ["embed", "attn", "router", "expert"] + (["shared"] if arch in ("deepseek_v3", "deepseek_v2", "qwen2_moe")
                                                     else []) + (["mlp"] if "dense" in EXPECTED_KINDS[arch] else [])
    assert m["precision"] == {"activations": "fp32", "dense": "fp32", "experts": "fp32", "block_size": None,
                              "accuracy_level": None, "graphs": {k: fp32 for k in kinds + ["head"]}}
    if arch in EXPECTED_ROUTING:
        assert {k: m["routing"][k] for k in EXPECTED_ROUTING[arch]} == EXPECTED_ROUTING[arch]
        assert [layer["kind"] for layer in m["layers"]] == EXPECTED_KINDS[arch]
    assert m["attention"]["kind"] == ("mla" if arch.startswith("deepseek") else "mha")
    for layer in m["layers"]:
        if layer["kind"] == "moe":
            assert layer["fused"] == ["router"] and "router" not in layer  # the exporter's default
            assert len(layer["experts"]) == m["routing"]["num_experts"]
            assert (layer["shared"] is not None) == (arch in ("deepseek_v3", "deepseek_v2", "qwen2_moe"))
            bias = layer["correction_bias"]
            assert (bias is not None) == (arch == "deepseek_v3")
            if bias is not None:
                assert len(bias) == m["routing"]["num_experts"] and any(b != 0 for b in bias)


@pytest.mark.parametrize("arch", ARCHS)
def test_tokenizer_metadata(arch, exports):
    m = json.loads((exports.get(arch) / "manifest.json").read_text())
    tcfg = json.loads((FIXTURES / arch / "tokenizer_config.json").read_text())
    assert m["tokenizer"] == {"file": "tokenizer.json", "add_bos_token": True, "bos_added_by_tokenizer": True}
    assert m["special_tokens"]["bos"] == {"id": 0, "text": "<|begin_of_text|>"}
    assert m["special_tokens"]["eos"] == {"id": 1, "text": "<|end_of_text|>"}
    assert m["special_tokens"]["pad"] == {"id": 2, "text": "<|pad|>"}
    assert m["stop_token_ids"] == [1]
    assert m["chat_template"] == tcfg["chat_template"]
    assert m["thinking"] == {"start": "<think>", "end": "</think>"}
    assert m["generation"] == {"temperature": 0.6, "top_p": 0.95}
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (exports.get(arch) / name).read_bytes() == (FIXTURES / arch / name).read_bytes()


@pytest.mark.parametrize("arch", ["qwen3_moe", "deepseek_v3"])
def test_fused_router_gives_the_router_graphs_logits(arch, exports, tmp_path):
    """The attention graph with the router fused in computes what attention then the router graph do."""
    import numpy as np
    import onnxruntime as ort
    from moe_export.export import export
    from moe_export.quant import QuantConfig

    fused = exports.get(arch)
    unfused = tmp_path / "unfused"
    m = export(FIXTURES / arch, unfused, QuantConfig("fp32", 32, 4), progress=False, fuse_router=False)
    layer = next(entry for entry in m["layers"] if entry["kind"] == "moe")
    assert "fused" not in layer and layer["router"]
    cache = m["attention"]["cache"]
    rng = np.random.default_rng(0)
    t, past = 3, 2
    feeds = {"hidden": rng.standard_normal((t, m["dims"]["hidden_size"]), dtype=np.float32),
             "positions": np.arange(past, past + t, dtype=np.int64)}
    for c in cache:
        feeds[f"past_{c['name']}"] = rng.standard_normal((past, *c["shape"]), dtype=np.float32)

    def session(path):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    attn = dict(zip([o.name for o in session(unfused / layer["attn"]).get_outputs()],
                    session(unfused / layer["attn"]).run(None, feeds)))
    (logits,) = session(unfused / layer["router"]).run(None, {"ffn_in": attn["ffn_in"]})
    both = session(fused / layer["attn"])
    got = dict(zip([o.name for o in both.get_outputs()], both.run(None, feeds)))
    assert set(got) == set(attn) | {"router_logits"}
    for name, value in attn.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    np.testing.assert_allclose(got["router_logits"], logits, rtol=0, atol=1e-6)
