"""Per-token logprob drift of quantized packages against fp32 on the fixture texts (needs onnxruntime).

  python3 tests/drift.py PKG_FP32 PKG_Q FIXTURE_DIR    one pair, per text and overall
  python3 tests/drift.py --all [--block-size 32]        export every fixture at fp32/int8/int4, one table
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
    from moe_export.quant import QuantConfig

    archs = sorted(p.parent.name for p in FIXTURES.glob("*/golden.json"))
    variants = [("int8", 4), ("int4", 4), ("int8", 0), ("int4", 0), ("fp16", 4)]
    print(f"per-token |logprob - logprob_fp32| over the fixture texts, block size {block_size}")
    print(f"{'arch':12s} " + " ".join(f"{q + ' acc' + str(a) if q != 'fp16' else 'fp16':>19s}" for q, a in variants))
    with tempfile.TemporaryDirectory() as tmp:
        for arch in archs:
            cases = json.loads((FIXTURES / arch / "golden.json").read_text())["cases"]
            base = Path(tmp) / f"{arch}-fp32"
            export(FIXTURES / arch, base, QuantConfig("fp32"), progress=False)
            fp32 = Package(base)
            cells = []
            for q, acc in variants:
                out = Path(tmp) / f"{arch}-{q}-{acc}"
                export(FIXTURES / arch, out, QuantConfig(q, block_size, acc), progress=False)
                d, _ = drift(fp32, Package(out), cases)
                cells.append(f"{d.mean():.4f} / {d.max():.4f}")
            print(f"{arch:12s} " + " ".join(f"{c:>19s}" for c in cells))
    print("cells: mean / max")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("--all", action="store_true")
    p.add_argument("--block-size", type=int, default=32)
    a = p.parse_args()
    if a.all:
        all_fixtures(a.block_size)
    elif len(a.paths) == 3:
        one_pair(*map(Path, a.paths))
    else:
        p.error("give PKG_FP32 PKG_Q FIXTURE_DIR, or --all")


if __name__ == "__main__":
    main()
