"""Test-only reference runner for moed packages: ONNX Runtime (CPU) for the graphs, numpy for routing.

It follows models/FORMAT.md literally: the engine's job (cache buffers, routing rule, running only the
chosen experts, the weighted sum and residual add) is done here in plain numpy, so the tests check the
exporter's graphs and manifest on their own.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort


def route(logits: np.ndarray, routing: dict, correction_bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """FORMAT.md's routing rule for router logits [T, E]: (expert ids [T, k], weights [T, k])."""
    logits = logits.astype(np.float32)
    if routing["scoring"] == "softmax":
        z = np.exp(logits - logits.max(axis=-1, keepdims=True))
        scores = z / z.sum(axis=-1, keepdims=True)
    elif routing["scoring"] == "sigmoid":
        scores = np.float32(1.0) / (np.float32(1.0) + np.exp(-logits))
    else:
        raise ValueError(f"unknown scoring {routing['scoring']}")
    scores = scores.astype(np.float32)
    choice = scores + correction_bias.astype(np.float32) if correction_bias is not None else scores.copy()
    t, e = choice.shape
    gl = routing.get("group_limit")
    if gl:
        groups = choice.reshape(t, gl["n_group"], e // gl["n_group"])
        if gl["group_score"] == "max":
            gscore = groups.max(axis=-1)
        else:
            gscore = np.sort(groups, axis=-1)[..., -2:].sum(axis=-1)
        keep = np.argsort(-gscore, axis=-1, kind="stable")[:, : gl["topk_group"]]
        mask = np.zeros_like(gscore, dtype=bool)
        np.put_along_axis(mask, keep, True, axis=-1)
        fill = -np.inf if gl.get("masked", "zero") == "neg_inf" else 0.0
        choice = np.where(np.repeat(mask, e // gl["n_group"], axis=-1), choice, np.float32(fill))
    idx = np.argsort(-choice, axis=-1, kind="stable")[:, : routing["top_k"]]
    w = np.take_along_axis(scores, idx, axis=-1)
    if routing["norm_topk_prob"]:
        w = w / (w.sum(axis=-1, keepdims=True) + np.float32(routing["norm_eps"]))
    w = (w * np.float32(routing["routed_scaling_factor"])).astype(np.float32)
    return idx, w


class Package:
    """A loaded package; sessions are created on first use, so unused experts are never loaded."""

    def __init__(self, path: Path, threads: int = 1):
        self.root = Path(path)
        self.manifest = json.loads((self.root / "manifest.json").read_text(encoding="utf-8"))
        # 2 adds precision.graphs, 3 attention.cache_dtype
        if self.manifest.get("format_version") not in (1, 2, 3):
            raise ValueError(f"unknown format_version {self.manifest.get('format_version')}")
        self._opts = ort.SessionOptions()
        self._opts.intra_op_num_threads = threads
        self._opts.inter_op_num_threads = 1
        self._sessions: dict[str, ort.InferenceSession] = {}
        self.expert_calls = 0
        # Head-major caches are passed with room for the call's new rows plus this many more (all
        # filled with junk the graph must mask out), as the engine's buffers have.
        self.spare_rows = 3

    def _run(self, rel: str, feeds: dict) -> list[np.ndarray]:
        if rel not in self._sessions:
            self._sessions[rel] = ort.InferenceSession(str(self.root / rel), self._opts,
                                                       providers=["CPUExecutionProvider"])
        return self._sessions[rel].run(None, feeds)

    def new_cache(self) -> list[dict[str, np.ndarray]]:
        shapes = {c["name"]: c["shape"] for c in self.manifest["attention"]["cache"]}
        return [{n: np.zeros((0, *s), np.float32) for n, s in shapes.items()} for _ in self.manifest["layers"]]

    def _moe(self, layer: dict, x: np.ndarray, logits: np.ndarray | None) -> np.ndarray:
        if logits is None:  # a router graph, not logits from the attention graph (FORMAT.md "Fused graphs")
            (logits,) = self._run(layer["router"], {"ffn_in": x})
        bias = layer.get("correction_bias")
        idx, w = route(logits, self.manifest["routing"], None if bias is None else np.asarray(bias, np.float32))
        out = np.zeros_like(x)
        for e in np.unique(idx):
            rows, slots = np.nonzero(idx == e)
            (y,) = self._run(layer["experts"][int(e)], {"x": np.ascontiguousarray(x[rows])})
            self.expert_calls += 1
            out[rows] += w[rows, slots][:, None] * y
        if layer.get("shared"):
            out += self._run(layer["shared"], {"x": x})[0]
        return out

    def forward(self, ids: list[int], cache: list[dict[str, np.ndarray]]) -> np.ndarray:
        """Run tokens `ids` after what `cache` holds; appends to the cache; returns logits [T, V]."""
        names = [c["name"] for c in self.manifest["attention"]["cache"]]
        p = next(iter(cache[0].values())).shape[0]
        head_major = self.manifest["attention"].get("cache_layout", "token_major") == "head_major"
        # FORMAT.md "KV cache types": the cache holds the new rows rounded to its type.
        dtype = np.float16 if self.manifest["attention"].get("cache_dtype") == "float16" else np.float32
        (hidden,) = self._run(self.manifest["embed"], {"input_ids": np.asarray(ids, np.int64)})
        positions = np.arange(p, p + len(ids), dtype=np.int64)
        for layer, kv in zip(self.manifest["layers"], cache):
            past = {n: _head_major(kv[n], len(ids) + self.spare_rows).astype(dtype) if head_major else kv[n]
                    for n in names}
            feeds = {"hidden": hidden, "positions": positions, **{f"past_{n}": past[n] for n in names}}
            outs = self._run(layer["attn"], feeds)
            sess = self._sessions[layer["attn"]]
            got = dict(zip([o.name for o in sess.get_outputs()], outs))
            for n in names:
                kv[n] = np.concatenate([kv[n], got[f"new_{n}"]], axis=0)
            ffn_in = got["ffn_in"]
            if layer["kind"] == "dense":
                ffn = self._run(layer["mlp"], {"x": ffn_in})[0]
            else:
                ffn = self._moe(layer, ffn_in, got.get("router_logits"))
            hidden = got["hidden_out"] + ffn
        (logits,) = self._run(self.manifest["head"], {"hidden": hidden})
        return logits


def _head_major(rows: np.ndarray, spare: int) -> np.ndarray:
    """Token-major cache rows [P, heads, d] as the head-major buffer [heads, P + spare, d]."""
    p, heads, d = rows.shape
    buf = np.full((heads, p + spare, d), 7.0, np.float32)
    buf[:, :p] = rows.transpose(1, 0, 2)
    return buf


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def score(pkg: Package, ids: list[int], chunks: list[int] | None = None) -> list[float | None]:
    """log p(ids[i] | ids[:i]) with None first; `chunks` splits the prompt into calls of those sizes."""
    cache = pkg.new_cache()
    sizes = chunks or [len(ids)]
    assert sum(sizes) == len(ids)
    logits, start = [], 0
    for n in sizes:
        logits.append(pkg.forward(ids[start:start + n], cache))
        start += n
    lp = log_softmax(np.concatenate(logits, axis=0))
    return [None] + [float(lp[i - 1, ids[i]]) for i in range(1, len(ids))]


def greedy(pkg: Package, ids: list[int], new_tokens: int, suppress: tuple[int, ...] = ()) -> list[int]:
    """Greedy continuation using the cache: prefill, then one token per call.

    `suppress` lists ids never chosen (transformers' min_new_tokens masks EOS this way).
    """
    cache = pkg.new_cache()
    logits = pkg.forward(ids, cache)
    out = []
    for _ in range(new_tokens):
        last = logits[-1].copy()
        last[list(suppress)] = -np.inf
        nxt = int(np.argmax(last))
        out.append(nxt)
        logits = pkg.forward([nxt], cache)
    return out
