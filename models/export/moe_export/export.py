"""Checkpoint -> package: validate everything up front, then write one graph at a time."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from moe_export import manifest as mf
from moe_export import names
from moe_export.config import ModelSpec, load_spec
from moe_export.errors import ExportError
from moe_export.graphs.builder import GraphWriter
from moe_export.plans import GraphPlan, as_package_quant, cache_layout, graph_kinds, layer_entries, make_plans
from moe_export.quant import PackageQuant, QuantConfig
from moe_export.reader import Checkpoint


def prepare_out_dir(out: Path, force: bool) -> None:
    """An empty (or new) OUT_DIR; with force, a previous export's files are replaced."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"output path {out} exists and is not a directory")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise ExportError(f"output directory {out} is not empty (use --force to overwrite)")
        shutil.rmtree(out / "graphs", ignore_errors=True)
        (out / "manifest.json").unlink(missing_ok=True)
    (out / "graphs").mkdir(parents=True, exist_ok=True)


def write_graphs(plans: list[GraphPlan], load, graphs_dir: Path, progress: bool | Callable) -> None:
    """Build each plan with tensors from `load(ref)`; only one graph's weights are alive at a time.

    `progress`: a tqdm bar when True; a callable is told (graphs started, total, name) instead.
    """
    bar = tqdm(plans, desc="exporting", unit="graph", disable=progress is not True, dynamic_ncols=True)
    for i, plan in enumerate(bar):
        bar.set_postfix_str(plan.name, refresh=False)
        if callable(progress):
            progress(i + 1, len(plans), plan.name)
        weights = {role: load(ref) for role, ref in plan.refs.items()}
        g = GraphWriter(graphs_dir, plan.name)
        plan.build(g, weights)
        del weights
        g.finish()


def _correction_biases(spec: ModelSpec, ckpt: Checkpoint) -> dict[int, list[float]]:
    if not spec.routing.correction_bias:
        return {}
    out = {}
    for layer, kind in enumerate(spec.layer_kinds):
        if kind == "moe":
            out[layer] = [float(x) for x in ckpt.load(names.correction_bias_ref(spec, layer)).astype(np.float32)]
    return out


def export(src: Path, out: Path, qc: QuantConfig | PackageQuant, name: str | None = None, force: bool = False,
           progress: bool | Callable = True, fuse_router: bool = True) -> dict:
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise ExportError(f"source directory {src} does not exist")
    spec = load_spec(src)
    tokenizer = mf.tokenizer_section(src, spec.raw)
    ckpt = Checkpoint(src)
    pq = as_package_quant(qc)
    plans = make_plans(spec, ckpt, pq, fuse_router)
    for plan in plans:  # fail on any missing tensor or wrong shape before writing anything
        for ref in plan.refs.values():
            ckpt.check(ref)
    if spec.routing.correction_bias:
        for layer, kind in enumerate(spec.layer_kinds):
            if kind == "moe":
                ckpt.check(names.correction_bias_ref(spec, layer))

    prepare_out_dir(out, force)
    write_graphs(plans, ckpt.load, out / "graphs", progress)
    for fname in mf.TOKENIZER_FILES:
        if (src / fname).is_file():
            shutil.copyfile(src / fname, out / fname)
    manifest = mf.model_section(spec, name or src.resolve().name, pq, cache_layout(spec), graph_kinds(spec))
    manifest["layers"] = layer_entries(spec, _correction_biases(spec, ckpt), fuse_router)
    manifest["embed"] = "graphs/embed.onnx"
    manifest["head"] = "graphs/head.onnx"
    manifest.update(tokenizer)
    manifest["files"] = mf.file_table(out)
    mf.write(out, manifest)
    return manifest
