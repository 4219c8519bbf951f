"""Package -> safetensors checkpoint, for drift references when the original checkpoint is not at hand.

  python3 tests/unpack.py PKG CONFIG_JSON OUT_DIR

The committed default model (models/moe-mini) ships without its training checkpoint. Its graphs hold
every weight, fp32 for the dense graphs and int8 MatMulNBits for the FFNs, so the checkpoint those
weights describe (the int8 FFN weights dequantized) can be rebuilt and exported again at any precision:
its fp32 export is the exact fp32 model of the package, the reference that drift is measured against.

Graphs whose weights are stored fp32 are inverted generically: the same plan is built once from probe
tensors whose every element is a distinct integer (role, index), and each probe value found in the
probe graph's initializers says where that element of that role sits in the package's graph, which
has the same initializers in the same order. MatMulNBits FFN graphs are dequantized node by node.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from safetensors.numpy import save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from moe_export import manifest as mf  # noqa: E402
from moe_export import names  # noqa: E402
from moe_export.config import spec_from_dict  # noqa: E402
from moe_export.graphs.builder import GraphWriter  # noqa: E402
from moe_export.plans import make_plans  # noqa: E402
from moe_export.quant import FP32, dequantize  # noqa: E402
from moe_export.reader import TensorRef  # noqa: E402

_STRIDE = 1 << 20  # probe value = (role + 1) * _STRIDE + flat index; exact in float32 below 2**24


class _Probe:
    def has(self, name: str) -> bool:
        return True


def _initializers(path: Path) -> list[np.ndarray]:
    """The graph's weights in order; small inline constants (`c_*`: shapes, scales, axes) are left out,
    as they differ between exporter versions that hold the same weights (e.g. format 1 and 2 MLA graphs)."""
    model = onnx.load(str(path), load_external_data=True)
    return [numpy_helper.to_array(t) for t in model.graph.initializer if not t.name.startswith("c_")]


def _invert_fp32(plan, graph: Path, tmp: Path) -> dict[str, np.ndarray]:
    roles = list(plan.refs)
    probes = {}
    for i, role in enumerate(roles):
        n = int(np.prod(plan.refs[role].shape))
        if n >= _STRIDE or (i + 1) * _STRIDE + n >= 1 << 24:
            raise ValueError(f"{plan.name}: tensor {role} too large to probe")
        probes[role] = ((i + 1) * _STRIDE + np.arange(n, dtype=np.float64)).astype(np.float32).reshape(
            plan.refs[role].shape)
    g = GraphWriter(tmp, plan.name)
    plan.build(g, probes)
    g.finish()
    probe_inits = _initializers(tmp / f"{plan.name}.onnx")
    real_inits = _initializers(graph)
    if [a.shape for a in probe_inits] != [a.shape for a in real_inits]:
        raise ValueError(f"{graph}: initializers differ from what this exporter builds at fp32")
    out = {role: np.full(plan.refs[role].shape, np.nan, np.float32) for role in roles}
    for p, r in zip(probe_inits, real_inits):
        if p.dtype != np.float32:
            continue
        pf, rf = p.reshape(-1), r.reshape(-1).astype(np.float32)
        hit = (pf >= _STRIDE) & (pf == np.round(pf))
        role_idx = (pf[hit] // _STRIDE).astype(np.int64) - 1
        flat = (pf[hit] % _STRIDE).astype(np.int64)
        vals = rf[hit]
        for i, role in enumerate(roles):
            sel = role_idx == i
            out[role].reshape(-1)[flat[sel]] = vals[sel]
    for role, arr in out.items():
        if np.isnan(arr).any():
            raise ValueError(f"{graph}: {role} not fully recovered")
    return out


def _invert_nbits(plan, graph: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(graph), load_external_data=True)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    mats = []
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            a = {x.name: x.i for x in node.attribute}
            zp = inits[node.input[3]] if len(node.input) > 3 and node.input[3] else None
            mats.append(dequantize(inits[node.input[1]], inits[node.input[2]], zp, a["bits"], a["K"]))
    if len(mats) != 2 or set(plan.refs) - {"gate", "up", "down"}:
        raise ValueError(f"{graph}: expected a bias-free SwiGLU with two MatMulNBits")
    inter = mats[0].shape[0] // 2
    return {"gate": mats[0][:inter], "up": mats[0][inter:], "down": mats[1]}


def unpack(pkg: Path, config: dict, out: Path) -> None:
    manifest = json.loads((pkg / "manifest.json").read_text())
    spec = spec_from_dict(config)
    tensors: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for plan in make_plans(spec, _Probe(), FP32, fuse_router=False):
            graph = pkg / plan.path
            nodes = onnx.load(str(graph), load_external_data=False).graph.node
            if any(nd.op_type == "MatMulNBits" for nd in nodes):
                weights = _invert_nbits(plan, graph)
            else:
                weights = _invert_fp32(plan, graph, Path(tmp))
            for role, ref in plan.refs.items():
                if ref.index is not None:
                    raise ValueError(f"{plan.name}: fused expert tensors are not supported")
                tensors[ref.name] = np.ascontiguousarray(weights[role], np.float32)
    for layer in manifest["layers"]:
        if layer.get("correction_bias") is not None:
            ref: TensorRef = names.correction_bias_ref(spec, layer["index"])
            tensors[ref.name] = np.asarray(layer["correction_bias"], np.float32)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=1))
    for name in mf.TOKENIZER_FILES:
        if (pkg / name).is_file():
            shutil.copyfile(pkg / name, out / name)


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    pkg, config, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    unpack(pkg, json.loads(config.read_text()), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
