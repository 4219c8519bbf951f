"""int8/int4 through com.microsoft.MatMulNBits and fp16: layout checked against ONNX Runtime, drift bounded."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import ARCHS, golden
from drift import drift
from refrunner import Package

from moe_export import quant
from moe_export.graphs import ops
from moe_export.graphs.builder import FLOAT, INT64, GraphWriter


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("k,n,block", [(64, 48, 32), (100, 24, 32), (256, 96, 128), (40, 8, 16)])
def test_matmulnbits_layout_matches_onnxruntime(tmp_path, bits, k, n, block):
    rng = np.random.default_rng(bits * 1000 + k)
    w = rng.normal(size=(n, k)).astype(np.float32)
    x = rng.normal(size=(5, k)).astype(np.float32)
    g = GraphWriter(tmp_path, "mm")
    g.output(ops.linear(g, g.input("x", FLOAT, ["T", k]), w, None, quant.QuantConfig(f"int{bits}", block, 0)),
             "y", FLOAT, ["T", n])
    g.finish()
    y = ort.InferenceSession(str(tmp_path / "mm.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    b, scales, zeros = quant.quantize(w, bits, block)
    blocks = -(-k // block)
    assert b.shape == (n, blocks, block * bits // 8) and scales.shape == (n, blocks)
    assert zeros.shape == (n, -(-blocks * bits // 8))
    wq = quant.dequantize(b, scales, zeros, bits, k)
    # ORT (accuracy_level 0: fp32 compute) multiplies by exactly the weights we meant to store ...
    np.testing.assert_allclose(y, x @ wq.T, atol=1e-4, rtol=1e-5)
    # ... and those are the originals up to half a quantization step per block.
    step = np.repeat(scales, block, axis=1)[:, :k]
    assert np.all(np.abs(wq - w) <= step / 2 + 1e-6)


def test_quantize_keeps_zero_blocks_exact():
    w = np.zeros((4, 64), np.float32)
    w[1, 40] = 3.0
    for bits in (4, 8):
        wq = quant.dequantize(*quant.quantize(w, bits, 32), bits, 64)
        assert wq[0].tolist() == [0.0] * 64 and wq[1, 40] == pytest.approx(3.0, rel=1e-6)


def ops_in(path) -> list[onnx.NodeProto]:
    return list(onnx.load(str(path), load_external_data=False).graph.node)


def nbits_attrs(path) -> list[dict]:
    return [{a.name: a.i for a in nd.attribute} for nd in ops_in(path) if nd.op_type == "MatMulNBits"]


@pytest.mark.parametrize("precision,bits,dense_bits", [("int8", 8, 8), ("int4", 4, 8)])
def test_quantized_packages_quantize_every_weight_but_norms_router_and_rope(exports, precision, bits, dense_bits):
    pkg = exports.get("deepseek_v3", precision)
    m = json.loads((pkg / "manifest.json").read_text())
    q = {"block_size": 32, "accuracy_level": 4, "symmetric": False}
    dense = f"int{dense_bits}"
    assert m["precision"] == {
        "activations": "fp32", "dense": dense, "experts": precision, "block_size": 32, "accuracy_level": 4,
        "graphs": {"embed": {"weights": dense, **q}, "attn": {"weights": dense, **q},
                   "router": {"weights": "fp32", "block_size": None, "accuracy_level": None, "symmetric": None},
                   "expert": {"weights": precision, **q}, "shared": {"weights": dense, **q},
                   "mlp": {"weights": dense, **q}, "head": {"weights": dense, **q}}}
    for layer in m["layers"]:
        for rel in layer.get("experts", []):
            attrs = nbits_attrs(pkg / rel)
            assert len(attrs) == 2 and {(a["bits"], a["block_size"], a["accuracy_level"]) for a in attrs} == {
                (bits, 32, 4)}, rel
        for rel in [p for p in (layer.get("shared"), layer.get("mlp")) if p]:
            assert {a["bits"] for a in nbits_attrs(pkg / rel)} == {dense_bits}, rel
        # MLA: q_a, q_b, kv_a and o through MatMulNBits; kv_b (absorbed as [heads, nope, rank] and
        # [heads, rank, v_dim]) dequantized on gather when its last dimension is whole blocks.
        attn = ops_in(pkg / layer["attn"])
        assert [a["bits"] for a in nbits_attrs(pkg / layer["attn"])] == [dense_bits] * 4
        a = m["attention"]
        whole = sum(d % 32 == 0 for d in (a["kv_lora_rank"], a["v_head_dim"]))
        assert sum(nd.op_type == "GatherBlockQuantized" for nd in attn) == whole
        # The only fp32 matmul left in an attention graph is the router's, when it is fused in.
        fused_router = "router" in layer.get("fused", [])
        assert sum(nd.op_type == "Gemm" for nd in attn) == int(fused_router), layer["attn"]
        if layer.get("router"):
            assert [nd.op_type for nd in ops_in(pkg / layer["router"]) if nd.op_type in ("Gemm", "MatMulNBits")] == [
                "Gemm"]
    assert [a["bits"] for a in nbits_attrs(pkg / m["head"])] == [dense_bits]
    assert [nd.op_type for nd in ops_in(pkg / m["embed"])] == ["GatherBlockQuantized", "Identity"]


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("rows,cols,block", [(50, 64, 32), (7, 96, 32), (5, 256, 128), (9, 48, 16)])
def test_gather_rows_match_the_dequantized_table(tmp_path, bits, symmetric, rows, cols, block):
    rng = np.random.default_rng(bits + 10 * cols + rows)
    table = rng.normal(size=(rows, cols)).astype(np.float32)
    qc = quant.QuantConfig(f"int{bits}", block, 4, symmetric)
    g = GraphWriter(tmp_path, "emb")
    g.output(ops.gather_rows(g, table, g.input("ids", INT64, ["T"]), qc), "y", FLOAT, ["T", cols])
    g.finish()
    assert [nd.op_type for nd in ops_in(tmp_path / "emb.onnx")] == ["GatherBlockQuantized", "Identity"]
    ids = np.array([0, rows - 1, rows // 2, 0], np.int64)
    y = ort.InferenceSession(str(tmp_path / "emb.onnx"), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    b, scales, zeros = quant.quantize(table, bits, block, symmetric)
    ref = quant.dequantize(b, scales, zeros, bits, cols)
    np.testing.assert_allclose(y, ref[ids], atol=1e-6, rtol=1e-6)
    step = np.abs(np.repeat(scales, block, axis=1))
    # Symmetric blocks put the extreme on code 0, so the opposite extreme may clip by a whole step.
    assert np.all(np.abs(ref - table) <= step * (1.0 if symmetric else 0.5) + 1e-6)


@pytest.mark.parametrize("bits", [4, 8])
def test_symmetric_matmulnbits_has_no_zero_points_and_matches_numpy(tmp_path, bits):
    rng = np.random.default_rng(bits)
    w = rng.normal(size=(24, 100)).astype(np.float32)
    x = rng.normal(size=(3, 100)).astype(np.float32)
    qc = quant.QuantConfig(f"int{bits}", 32, 0, symmetric=True)
    g = GraphWriter(tmp_path, "mm")
    g.output(ops.linear(g, g.input("x", FLOAT, ["T", 100]), w, None, qc), "y", FLOAT, ["T", 24])
    g.finish()
    (node,) = [nd for nd in ops_in(tmp_path / "mm.onnx") if nd.op_type == "MatMulNBits"]
    assert len(node.input) == 3
    y = ort.InferenceSession(str(tmp_path / "mm.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    b, scales, zeros = quant.quantize(w, bits, 32, symmetric=True)
    assert zeros is None
    np.testing.assert_allclose(y, x @ quant.dequantize(b, scales, None, bits, 100).T, atol=1e-4, rtol=1e-5)


def test_stored_matrix_dequantizes_at_run_time(tmp_path):
    rng = np.random.default_rng(3)
    w = rng.normal(size=(4, 8, 64)).astype(np.float32)
    qc = quant.QuantConfig("int4", 32, 4)
    g = GraphWriter(tmp_path, "sm")
    x = g.input("x", FLOAT, ["T", 8])
    g.output(g.op("MatMul", x, ops.stored_matrix(g, "w", w, qc, x)), "y", FLOAT, [4, "T", 64])
    g.finish()
    xs = rng.normal(size=(2, 8)).astype(np.float32)
    y = ort.InferenceSession(str(tmp_path / "sm.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": xs})[0]
    b, scales, zeros = quant.quantize(w.reshape(4, -1), 4, 32)
    ref = quant.dequantize(b, scales, zeros, 4, 8 * 64).reshape(4, 8, 64)
    np.testing.assert_allclose(y, xs @ ref, atol=1e-4, rtol=1e-5)


def test_package_quant_policy_and_overrides():
    pq = quant.package_quant(quant.QuantConfig("int4"))
    assert [pq.kind(k).precision for k in quant.GRAPH_KINDS] == ["int8", "int8", "fp32", "int4", "int8", "int8",
                                                                 "int8"]
    pq = quant.package_quant(quant.QuantConfig("int4"), dense="int4", head="int4", embed="fp32")
    assert [pq.kind(k).precision for k in quant.GRAPH_KINDS] == ["fp32", "int4", "fp32", "int4", "int4", "int4",
                                                                 "int4"]
    pq = quant.package_quant(quant.QuantConfig("int8"))
    assert {pq.kind(k).precision for k in quant.GRAPH_KINDS if k != "router"} == {"int8"}


@pytest.mark.parametrize("arch", ARCHS)
def test_quantized_drift_is_bounded(arch, exports):
    cases = golden(arch)["cases"]
    fp32 = Package(exports.get(arch))
    got = {}
    for precision in ("fp16", "int8", "int4"):
        d, _ = drift(fp32, Package(exports.get(arch, precision)), cases)
        got[precision] = d
        print(f"{arch:12s} {precision}: mean {d.mean():.4f} max {d.max():.4f} over {d.size} tokens")
    # Measured on the fixtures: fp16 <= 0.001 mean, int8 <= 0.06 mean, int4 <= 0.5 mean (random tiny
    # models are harsh on 4 bits). A packing or layout error gives several nats everywhere.
    assert got["fp16"].mean() < 0.005 and got["fp16"].max() < 0.02
    assert got["int8"].mean() < 0.15 and got["int8"].max() < 2.0
    assert got["int4"].mean() < 1.0 and got["int4"].max() < 4.0
    assert got["int8"].mean() < got["int4"].mean()


def test_block_size_option(tmp_path, exports):
    from conftest import FIXTURES

    from moe_export.export import export
    from moe_export.quant import QuantConfig

    for block in (16, 64):
        out = tmp_path / f"b{block}"
        m = export(FIXTURES / "mixtral", out, QuantConfig("int4", block, 4), progress=False)
        assert m["precision"]["block_size"] == block
        nodes = [nd for nd in ops_in(out / m["layers"][0]["experts"][0]) if nd.op_type == "MatMulNBits"]
        assert {a.name: a.i for a in nodes[0].attribute}["block_size"] == block
        d, _ = drift(Package(exports.get("mixtral")), Package(out), golden("mixtral")["cases"])
        assert 0.0 < d.mean() < 1.0


def test_cli_flags_override_one_graph_group(tmp_path):
    from conftest import FIXTURES

    from moe_export.cli import main

    out = tmp_path / "pkg"
    assert main([str(FIXTURES / "mixtral"), str(out), "--quant", "int4", "--head-quant", "int4",
                 "--embed-quant", "fp32", "--symmetric", "--quiet"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert {k: v["weights"] for k, v in m["precision"]["graphs"].items()} == {
        "embed": "fp32", "attn": "int8", "router": "fp32", "expert": "int4", "head": "int4"}
    assert m["precision"]["graphs"]["attn"]["symmetric"] is True
    assert all(len(nd.input) == 3 for nd in ops_in(out / m["head"]) if nd.op_type == "MatMulNBits")


def test_default_model_int4_drift_is_within_target(tmp_path):
    """The default model's int4 package against its own fp32 reference, rebuilt from the package."""
    from conftest import FIXTURES
    from drift import text_cases
    from unpack import unpack

    from moe_export.export import export
    from moe_export.quant import QuantConfig

    models = FIXTURES.parent
    ckpt = tmp_path / "ckpt"
    unpack(models / "moe-mini", json.loads((models / "default" / "moe-mini-config.json").read_text()), ckpt)
    # Unfused, as moe-mini is, so that its router graphs can be compared file by file.
    export(ckpt, tmp_path / "fp32", QuantConfig("fp32"), progress=False, fuse_router=False)
    # The rebuilt reference holds the package's own fp32 weights: its fp32 graphs' data are the same bytes.
    dense = [p.name for p in (models / "moe-mini" / "graphs").glob("*.data")
             if not any(k in p.name for k in ("expert", "shared", "mlp"))]
    assert len(dense) == 11  # embed, head, 5 attention, 4 routers
    for name in dense:
        got = (tmp_path / "fp32" / "graphs" / name).read_bytes()
        assert got == (models / "moe-mini" / "graphs" / name).read_bytes(), name
    export(ckpt, tmp_path / "int4", QuantConfig("int4", 32, 4), progress=False)
    d, _ = drift(Package(tmp_path / "fp32"), Package(tmp_path / "int4"),
                 text_cases(ckpt, models / "default" / "drift_texts.txt"))
    print(f"moe-mini int4: mean {d.mean():.4f} max {d.max():.4f} over {d.size} tokens")
    assert d.size > 200
    # Measured 0.063 mean / 0.68 max (models/export/README.md); issue 13's target is 0.10 mean.
    assert d.mean() <= 0.10 and d.max() < 2.0


def _run_graph(path, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("arch", ["deepseek_v3", "qwen3_moe", "qwen2_moe"])
@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_attention_and_head_match_their_dequantized_weights(tmp_path, arch, bits):
    """Each quantized projection computes with exactly the numpy-dequantized weights (fp32 compute)."""
    from conftest import FIXTURES

    from moe_export.config import MhaSpec, load_spec
    from moe_export.plans import cache_layout, make_plans
    from moe_export.reader import Checkpoint

    spec, ckpt = load_spec(FIXTURES / arch), Checkpoint(FIXTURES / arch)
    qc = quant.QuantConfig(f"int{bits}", 32, 0)
    pq = quant.PackageQuant(experts=qc, dense=qc, head=qc, embed=qc)
    plans = {p.name: p for p in make_plans(spec, ckpt, pq)}
    ref_plans = {p.name: p for p in make_plans(spec, ckpt, quant.FP32)}
    rng = np.random.default_rng(bits)
    t, past = 3, 4
    h = spec.hidden_size
    for name in ("layer.1.attn", "head"):
        weights = {role: ckpt.load(ref) for role, ref in plans[name].refs.items()}
        dequantized = {}
        for role, w in weights.items():
            # The router (fused into attention) stays fp32, as do norms and MLA's absorbed kv_b.
            linear = w.ndim == 2 and not role.endswith("norm") and role != "kv_b" and not role.startswith("router_")
            dequantized[role] = quant.dequantize(*quant.quantize(w, bits, 32), bits, w.shape[1]) if linear else w
        for d, plan, ws in ((tmp_path / "q", plans[name], weights), (tmp_path / "ref", ref_plans[name], dequantized)):
            d.mkdir(exist_ok=True)
            g = GraphWriter(d, name)
            plan.build(g, ws)
            g.finish()
        assert any(nd.op_type == "MatMulNBits" for nd in ops_in(tmp_path / "q" / f"{name}.onnx"))
        feeds = {"hidden": rng.normal(size=(t, h)).astype(np.float32)}
        if name != "head":
            feeds["positions"] = np.arange(past, past + t, dtype=np.int64)
            head_major = isinstance(spec.attention, MhaSpec)  # the layout MHA graphs are exported with
            for c in cache_layout(spec):
                shape = (c["shape"][0], past, *c["shape"][1:]) if head_major else (past, *c["shape"])
                feeds[f"past_{c['name']}"] = rng.normal(size=shape).astype(np.float32)
        got = _run_graph(tmp_path / "q" / f"{name}.onnx", feeds)
        want = _run_graph(tmp_path / "ref" / f"{name}.onnx", feeds)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, atol=2e-4, rtol=1e-4)
