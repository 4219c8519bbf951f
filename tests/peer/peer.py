"""moed against llama.cpp on the same random weights: prepares the models, runs interleaved pairs,
prints one table per shape / quantization / thread count and writes the raw results as JSON.

Normally started by tests/peer/run.sh, which builds both engines and sets PYTHONPATH (the exporter
of this checkout, gguf-py of the pinned llama.cpp). See tests/peer/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import measure
from ckpt_gguf import weight_bytes_per_token
from prepare import GGUF_TYPES, Artefacts
from shapes import DEFAULT_SHAPES, QUICK_SHAPES, SHAPES

# This script's own peak above which it starts again before measuring (see fresh_start_after_preparing).
REEXEC_ABOVE_BYTES = 512 << 20

METRICS = [  # key, label, format, higher is better
    ("decode_tok_s", "decode tok/s (after {p}-token context)", "{:.2f}", True),
    ("prefill_tok_s", "prefill tok/s ({p}-token prompt)", "{:.1f}", True),
    ("ttft_ms", "time to first token, {p}-token prompt (ms)", "{:.1f}", False),
    ("load_to_first_token_s", "load to first token, warm (s)", "{:.2f}", False),
    ("peak_rss_mb", "peak RSS of the benchmark run (MB)", "{:.0f}", False),
    ("bytes_per_token_mb", "bytes read / decoded token (MB) [1]", "{:.1f}", False),
    ("model_mb", "model on disk (MB)", "{:.0f}", False),
]


def _csv(kind):
    def parse(text: str) -> list:
        try:
            return [kind(x) for x in text.split(",") if x]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got '{text}'") from None
    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="tests/peer/run.sh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", type=_csv(str), default=None,
                    help=f"comma-separated, from {', '.join(SHAPES)} (default {','.join(DEFAULT_SHAPES)})")
    ap.add_argument("--quants", type=_csv(str), default=["int4", "int8"],
                    help="moed quantizations; int4, int4-dense4 (attention at 4 bits too), int4-b64s (that in "
                         "Q4_0's bytes: block 64, symmetric) and int4-b64s-head4 (the head at 4 bits too) "
                         "are compared with Q4_0, int8 with Q8_0 (default int4,int8)")
    ap.add_argument("--q4km", action="store_true", help="also compare moed int4 with llama.cpp Q4_K_M")
    ap.add_argument("--threads", type=_csv(int), default=[1, 2], help="thread counts (default 1,2)")
    ap.add_argument("--pairs", type=int, default=3, help="interleaved moed/llama.cpp pairs (default 3)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="timed runs inside each engine's benchmark (moed bench --repeat, llama-bench -r; default 3)")
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens, also the decode context (default 128)")
    ap.add_argument("--decode", type=int, default=64, help="decoded tokens (default 64)")
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke check: shapes {','.join(QUICK_SHAPES)}, int4 only, 1 pair, repeat 1, prompt 32, "
                         "decode 16")
    ap.add_argument("--moed-args", default="", help="extra flags that moed bench and moed generate both take, e.g. --moed-args='--provider cpu'")
    ap.add_argument("--llama-args", default="", help="extra flags for llama-bench, e.g. --llama-args='--poll 0' (with '=')")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    ap.add_argument("--keep-checkpoint", action="store_true",
                    help="keep the safetensors checkpoint and the F16 GGUF (deleted by default: disk)")
    ap.add_argument("--prepare-only", action="store_true", help="make the models, run nothing")
    ap.add_argument("--out", type=Path, help="results JSON (default WORK/results-<UTC time>.json)")
    ap.add_argument("--moed", required=True, help="moed binary")
    ap.add_argument("--llama-bin", type=Path, required=True, help="folder with llama-bench and llama-quantize")
    ap.add_argument("--llama-version", required=True, help="llama-cpp-python version the binaries come from")
    ap.add_argument("--work", type=Path, required=True, help="folder for the generated models and results")
    a = ap.parse_args(argv)
    if a.quick:
        a.shapes = a.shapes or list(QUICK_SHAPES)
        a.quants, a.pairs, a.repeat, a.prompt, a.decode = ["int4"], 1, 1, 32, 16
    a.shapes = a.shapes or list(DEFAULT_SHAPES)
    for name in a.shapes:
        if name not in SHAPES:
            ap.error(f"unknown shape '{name}' (known: {', '.join(SHAPES)})")
    for q in a.quants:
        if q not in GGUF_TYPES:
            ap.error(f"unknown quantization '{q}' (known: {', '.join(GGUF_TYPES)})")
    if a.pairs < 1 or a.repeat < 1 or a.prompt < 1 or a.decode < 1 or not a.threads or min(a.threads) < 1:
        ap.error("--pairs, --repeat, --prompt, --decode and --threads must be >= 1")
    return a


def comparisons(a: argparse.Namespace) -> list[tuple[str, str]]:
    pairs = [(q, GGUF_TYPES[q]) for q in a.quants]
    if a.q4km and "int4" in a.quants:
        pairs.append(("int4", "Q4_K_M"))
    return pairs


def one_pair(i: int, a, pkg: Path, gguf: Path, params: measure.Params) -> dict:
    """moed then llama.cpp on even pairs, the other way round on odd ones."""
    def moed() -> dict:
        r = measure.moed_bench(a.moed, str(pkg), params)
        r["load"] = measure.moed_load(a.moed, str(pkg), params)
        return r

    def llama() -> dict:
        r = measure.llama_bench(str(a.llama_bin), str(gguf), params)
        r["load"] = measure.llama_load(str(a.llama_bin), str(gguf), params)
        return r

    order = ["moed", "llama.cpp"] if i % 2 == 0 else ["llama.cpp", "moed"]
    out = {"order": order}
    for engine in order:
        out[engine] = moed() if engine == "moed" else llama()
        print(f"peer:   pair {i + 1} {engine}: decode {out[engine]['decode_tok_s']:.2f} tok/s, "
              f"prefill {out[engine]['prefill_tok_s']:.1f} tok/s", file=sys.stderr)
    return out


def summary(runs: list[dict], engine: str, model_bytes: int, bytes_per_token: float | None = None) -> dict:
    def med(f) -> float:
        return statistics.median(f(r[engine]) for r in runs)
    return {
        "decode_tok_s": med(lambda r: r["decode_tok_s"]),
        "prefill_tok_s": med(lambda r: r["prefill_tok_s"]),
        "ttft_ms": med(lambda r: r["ttft_ms"]),
        "load_to_first_token_s": med(lambda r: r["load"]["load_to_first_token_s"]),
        "peak_rss_mb": max(r[engine]["peak_rss_bytes"] for r in runs) / 1e6,
        "model_mb": model_bytes / 1e6,
        "bytes_per_token_mb": (bytes_per_token if bytes_per_token is not None
                               else med(lambda r: r.get("bytes_per_token") or 0.0)) / 1e6,
    }


def table(title: str, moed: dict, llama: dict, prompt: int) -> str:
    rows = [title, f"{'':<46}{'moed':>12}{'llama.cpp':>12}{'moed/llama':>12}"]
    for key, label, fmt, _ in METRICS:
        m, l_ = moed[key], llama[key]
        ratio = f"{m / l_:.2f}" if l_ else "-"
        rows.append(f"{label.format(p=prompt):<46}{fmt.format(m):>12}{fmt.format(l_):>12}{ratio:>12}")
    rows.append("[1] moed: `moed bench`'s sparse figure (weights touched + KV cache); llama.cpp: the GGUF's "
                "tensors, routed experts at top-k/experts, one embedding row, no KV cache")
    return "\n".join(rows) + "\n"


def fresh_start_after_preparing() -> None:
    """Starts this script again when making the models grew it: on Linux a child's ru_maxrss starts
    from the memory of the process it was forked from, so every peak RSS measured after a large
    preparation would be at least this process's. The models are stamped, so the second start
    only measures."""
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 > REEXEC_ABOVE_BYTES
    if grown and not os.environ.get("MOED_PEER_FRESH"):
        print("peer: models prepared; starting again so the peak RSS figures are the engines' own",
              file=sys.stderr, flush=True)
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "MOED_PEER_FRESH": "1"})


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    import gguf  # gguf-py of the pinned llama.cpp, on PYTHONPATH from run.sh

    started = datetime.datetime.now(datetime.UTC)
    out_path = a.out or a.work / f"results-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    results = {"started": started.isoformat(), "host": platform.node(), "llama_cpp_python": a.llama_version,
               "moed": a.moed, "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
               "shapes": {}}
    tables = []
    gguf_types = sorted({g for _, g in comparisons(a)})
    prepared = {}
    for name in a.shapes:
        art = Artefacts(SHAPES[name], a.work, a.seed, a.llama_bin, a.llama_version)
        prepared[name] = (art, art.ensure(a.quants, gguf_types, gguf, a.keep_checkpoint))
    if not a.prepare_only:
        fresh_start_after_preparing()
    for name in a.shapes:
        shape = SHAPES[name]
        art, sizes = prepared[name]
        entry = {"about": shape.about, "config": shape.config, "bytes_on_disk": sizes, "comparisons": []}
        results["shapes"][name] = entry
        if a.prepare_only:
            continue
        for quant, gtype in comparisons(a):
            for threads in a.threads:
                params = measure.Params(threads, a.prompt, a.decode, a.repeat, tuple(shlex.split(a.moed_args)),
                                        tuple(shlex.split(a.llama_args)))
                print(f"peer: {name} moed {quant} vs llama.cpp {gtype}, {threads} thread(s)", file=sys.stderr)
                runs = [one_pair(i, a, art.package(quant), art.gguf(gtype), params) for i in range(a.pairs)]
                moed = summary(runs, "moed", sizes[f"moed {quant}"])
                llama = summary(runs, "llama.cpp", sizes[f"llama.cpp {gtype}"],
                                weight_bytes_per_token(art.gguf(gtype), shape.config, gguf))
                ratios = {k: (moed[k] / llama[k] if llama[k] else None) for k in moed}
                entry["comparisons"].append({"moed": quant, "llama.cpp": gtype, "threads": threads,
                                             "median_moed": moed, "median_llama.cpp": llama,
                                             "ratio_moed_over_llama.cpp": ratios, "pairs": runs})
                title = (f"== {name}: moed {quant} vs llama.cpp {gtype}, {threads} thread(s); medians of "
                         f"{a.pairs} interleaved pair(s), {a.repeat} run(s) each ==")
                tables.append(table(title, moed, llama, a.prompt))
                print(tables[-1], flush=True)
                out_path.parent.mkdir(parents=True, exist_ok=True)
                out_path.write_text(json.dumps(results, indent=1), encoding="utf-8")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=1), encoding="utf-8")
    if tables:
        print("\n".join(tables))
    print(f"peer: raw results in {out_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (measure.MeasureError, RuntimeError, subprocess.CalledProcessError) as err:
        print(f"peer: error: {err}", file=sys.stderr)
        sys.exit(1)
