"""Check an exported package against the checkpoint it came from, and show what the package writes.

`python3 check_package.py CKPT_DIR PACKAGE_DIR [--tokens 40]`

For a few texts: the per-token logprobs of transformers (fp32, eager) and of the package run by the
exporter's test reference runner (models/export/tests/refrunner.py: ONNX Runtime + numpy routing),
their largest difference, and the package's greedy continuation decoded. Needs torch, transformers,
onnxruntime.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "export" / "tests"))
import refrunner  # noqa: E402  (test-only runner, not an installed module)

TEXTS = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune",
    "Elinor could not help smiling at the thought of it.",
    "The weather was fine, and",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt", type=Path)
    ap.add_argument("package", type=Path)
    ap.add_argument("--tokens", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForCausalLM.from_pretrained(args.ckpt, dtype=torch.float32, attn_implementation="eager",
                                                 experts_implementation="eager").eval()
    pkg = refrunner.Package(args.package)
    worst = 0.0
    for text in TEXTS:
        ids = tok(text).input_ids
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
        ref = np.array([float(lp[i - 1, ids[i]]) for i in range(1, len(ids))])
        got = np.array(refrunner.score(pkg, ids)[1:], dtype=np.float64)
        diff = float(np.abs(ref - got).max())
        worst = max(worst, diff)
        new = refrunner.greedy(pkg, ids, args.tokens)
        if tok.eos_token_id in new:
            new = new[: new.index(tok.eos_token_id)]
        print(f"[{text}]\n  mean logprob transformers {ref.mean():.4f} package {got.mean():.4f}, "
              f"max |diff| {diff:.2e}\n  package greedy: {text + tok.decode(new)!r}\n")
    print(f"max |logprob diff| over {len(TEXTS)} texts: {worst:.2e}")


if __name__ == "__main__":
    main()
