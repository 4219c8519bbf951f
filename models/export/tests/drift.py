"""Per-token logprob drift of quantized packages against fp32 on the fixture texts (needs onnxruntime).

  python3 tests/drift.py PKG_FP32 PKG_Q FIXTURE_DIR    one pair, per text and overall
  python3 tests/drift.py --all [--block-size 32]        export every fixture at fp32/int8/int4, one table
  python3 tests/drift.py --sweep SRC [FIXTURE_DIR]      int4/int8 settings (block size, symmetric, accuracy
                                                        level, head/embedding at 8 bits) on one checkpoint
  python3 tests/drift.py --sweep SRC --texts FILE       the same, scoring FILE's lines (one text a line),
                                                        tokenized with SRC's tokenizer.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from refrunner import Package, score  # noqa: E402

FIXTURES = HERE.parents[1] / "fixtures"


def drift(fp32: Package, quant: Package, cases: list[dict]) -> tuple[np.ndarray, list[np.ndarray]]:
    """|logprob_q - logprob_fp32| for every scored token; also per case."""
    per_case = []
    for case in cases:
        a = np.array(score(fp32, case["ids"])[1:])
        b = np.array(score(quant, case["ids"])[1:])
        per_case.append(np.abs(a - b))
    return np.concatenate(per_case), per_case


def one_pair(pkg_fp32: Path, pkg_q: Path, fixture: Path) -> None:
    cases = json.loads((fixture / "golden.json").read_text())["cases"]
    total, per_case = drift(Package(pkg_fp32), Package(pkg_q), cases)
    for case, d in zip(cases, per_case):
        print(f"{case['text'][:40]!r:44s} tokens {len(d):3d}  mean {d.mean():.4f}  max {d.max():.4f}")
    print(f"{'all':44s} tokens {len(total):3d}  mean {total.mean():.4f}  max {total.max():.4f}")


def all_fixtures(block_size: int) -> None:
    from moe_export.export import export
    from moe_export.quant import QuantConfig, package_quant

    archs = sorted(p.parent.name for p in FIXTURES.glob("*/golden.json"))
    # label -> (--quant, --dense-quant, --head-quant, --embed-quant); None = the default policy
    variants = [("int8", ("int8", None, None, None)), ("int4", ("int4", None, None, None)),
                ("int4 all 4-bit", ("int4", "int4", "int4", "int4")),
                ("int4 experts only", ("int4", "fp32", "fp32", "fp32")), ("fp16", ("fp16", None, None, None))]
    print(f"per-token |logprob - logprob_fp32| over the fixture texts, block size {block_size}, accuracy level 4")
    print(f"{'arch':12s} " + " ".join(f"{label:>19s}" for label, _ in variants))
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            cases = json.loads((FIXTURES / arch / "golden.json").read_text())["cases"]
            base = Path(tmp) / f"{arch}-fp32"
            export(FIXTURES / arch, base, QuantConfig("fp32"), progress=False)
            fp32 = Package(base)
            cells = []
            for i, (_, (q, dense, head, embed)) in enumerate(variants):
                out = Path(tmp) / f"{arch}-{i}"
                pq = package_quant(QuantConfig(q, block_size, 4), dense=dense, head=head, embed=embed)
                export(FIXTURES / arch, out, pq, progress=False)
                d, _ = drift(fp32, Package(out), cases)
                cells.append(f"{d.mean():.4f} / {d.max():.4f}")
            print(f"{arch:12s} " + " ".join(f"{c:>19s}" for c in cells), flush=True)
    print("cells: mean / max")


# label -> (experts, dense, head, embed, block, accuracy level, symmetric)
SWEEP = [
    ("int8 b32 asym acc4 (default)", ("int8", "int8", "int8", "int8", 32, 4, False)),
    ("int8 b32 sym acc4", ("int8", "int8", "int8", "int8", 32, 4, True)),
    ("int8 experts only (format 1)", ("int8", "fp32", "fp32", "fp32", 32, 4, False)),
    ("int4 experts only (format 1)", ("int4", "fp32", "fp32", "fp32", 32, 4, False)),
    ("int4 all b32 asym acc4", ("int4", "int4", "int4", "int4", 32, 4, False)),
    ("int4 b32 asym acc4 head+emb int8 (default)", ("int4", "int4", "int8", "int8", 32, 4, False)),
    ("int4 b32 asym acc0 head+emb int8", ("int4", "int4", "int8", "int8", 32, 0, False)),
    ("int4 b32 sym acc4 head+emb int8", ("int4", "int4", "int8", "int8", 32, 4, True)),
    ("int4 b16 asym acc4 head+emb int8", ("int4", "int4", "int8", "int8", 16, 4, False)),
    ("int4 b64 asym acc4 head+emb int8", ("int4", "int4", "int8", "int8", 64, 4, False)),
    ("int4 b128 asym acc4 head+emb int8", ("int4", "int4", "int8", "int8", 128, 4, False)),
    ("int4 b32 asym acc4 head int8", ("int4", "int4", "int8", "int4", 32, 4, False)),
    ("int4 b32 asym acc4 emb int8", ("int4", "int4", "int4", "int8", 32, 4, False)),
    ("int4 b32 asym acc4 attn+head+emb int8", ("int4", "int8", "int8", "int8", 32, 4, False)),
    ("int4 b32 sym acc4 attn+head+emb int8", ("int4", "int8", "int8", "int8", 32, 4, True)),
    ("int4 b64 asym acc4 attn+head+emb int8", ("int4", "int8", "int8", "int8", 64, 4, False)),
    ("int4 b64 sym acc4 head+emb int8", ("int4", "int4", "int8", "int8", 64, 4, True)),
    ("int4 b32 asym acc0 attn+head+emb int8", ("int4", "int8", "int8", "int8", 32, 0, False)),
    ("int4 b32 asym acc4 attn+head+emb fp32", ("int4", "fp32", "fp32", "fp32", 32, 4, False)),
    ("int4 b32 asym acc4 attn+emb int8, head int4", ("int4", "int8", "int4", "int8", 32, 4, False)),
    ("int4 b32 asym acc4 attn int8, head+emb int4", ("int4", "int8", "int4", "int4", 32, 4, False)),
]


def text_cases(src: Path, texts: Path) -> list[dict]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    lines = [t for t in texts.read_text(encoding="utf-8").splitlines() if t.strip()]
    return [{"text": t, "ids": tok.encode(t).ids} for t in lines]


def sweep(src: Path, cases: list[dict], only: list[str] | None = None) -> None:
    from moe_export.export import export
    from moe_export.quant import PackageQuant, QuantConfig

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "fp32"
        export(src, base, QuantConfig("fp32"), progress=False)
        fp32 = Package(base)
        print(f"{src.name}: per-token |logprob - logprob_fp32| over {len(cases)} texts")
        for label, (ex, dense, head, embed, block, acc, sym) in SWEEP:
            if only and not any(o in label for o in only):
                continue
            qc = QuantConfig(ex, block, acc, sym)
            pq = PackageQuant(experts=qc, dense=qc.at(dense), head=qc.at(head), embed=qc.at(embed))
            out = Path(tmp) / "q"
            m = export(src, out, pq, progress=False, force=True)
            d, _ = drift(fp32, Package(out), cases)
            mb = sum(f["bytes"] for f in m["files"].values()) / 1e6
            print(f"  {label:44s} mean {d.mean():.4f}  max {d.max():.4f}  package {mb:7.2f} MB", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("--all", action="store_true")
    p.add_argument("--block-size", type=int, default=32)
    p.add_argument("--sweep", metavar="SRC", type=Path, help="a checkpoint folder (config.json, *.safetensors)")
    p.add_argument("--only", action="append", help="with --sweep: variants whose label contains this")
    p.add_argument("--texts", type=Path, help="with --sweep: score these lines instead of golden.json's cases")
    a = p.parse_args()
    if a.sweep and a.texts:
        sweep(a.sweep, text_cases(a.sweep, a.texts), a.only)
    elif a.sweep:
        fixture = Path(a.paths[0]) if a.paths else a.sweep
        sweep(a.sweep, json.loads((fixture / "golden.json").read_text())["cases"], a.only)
    elif a.all:
        all_fixtures(a.block_size)
    elif len(a.paths) == 3:
        one_pair(*map(Path, a.paths))
    else:
        p.error("give PKG_FP32 PKG_Q FIXTURE_DIR, or --all")


if __name__ == "__main__":
    main()
