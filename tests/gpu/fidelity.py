"""Fidelity of one execution provider through moed's public commands, against transformers.

For every fixture with a golden.json (models/fixtures/<arch>/golden.json) and each of its cases:
`moed score --json --provider P` must tokenize the text to the golden ids and give every
logprob within --tol of transformers' (fp32 packages), and `moed generate --json --raw
--temperature 0 --ignore-eos --provider P` must continue with the golden greedy ids, reporting P as
the provider it used. A provider that cannot be used makes the commands fail: moed falls back only
to providers that were listed, and only P is.

    python3 tests/gpu/fidelity.py --moed BIN --provider cuda --packages DIR [--tol 1e-3]

Prints one line per case and a summary line per architecture; exits 1 on any mismatch or failure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_json(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed: {out.stderr.strip()[-600:]}")
    return json.loads(out.stdout)


def check_case(a: argparse.Namespace, pkg: Path, case: dict) -> tuple[float, list[str]]:
    """The largest |logprob difference| of the case and its mismatches."""
    bad: list[str] = []
    base = [a.moed]
    scored = run_json(base + ["score", "--json", "--provider", a.provider, "--model", str(pkg), case["text"]])
    ids = [t["id"] for t in scored["tokens"]]
    if ids != case["ids"]:
        bad.append(f"tokenized as {ids}, golden {case['ids']}")
    worst = 0.0
    for i, (tok, want) in enumerate(zip(scored["tokens"], case["logprobs"])):
        got = tok["logprob"]
        if (got is None) != (want is None):
            bad.append(f"token {i}: logprob {got} vs golden {want}")
        elif got is not None:
            worst = max(worst, abs(got - want))
            if abs(got - want) > a.tol:
                bad.append(f"token {i}: logprob {got:.6f} vs golden {want:.6f}")
    want = case["greedy"]["ids"]
    gen = run_json(base + ["generate", "--model", str(pkg), "--json", "--raw", "--temperature", "0",
                           "--max-tokens", str(len(want)), "--ignore-eos", "--provider", a.provider,
                           case["text"]])
    used = gen.get("stats", {}).get("execution_provider")
    if used != a.provider:
        bad.append(f"generate ran on {used!r}, not {a.provider}")
    if gen.get("token_ids") != want:
        bad.append(f"greedy {gen.get('token_ids')} vs golden {want}")
    return worst, bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moed", required=True, help="the moed binary")
    ap.add_argument("--provider", required=True, help="execution provider: cuda, tensorrt or cpu")
    ap.add_argument("--packages", required=True, type=Path, help="the fp32 fixture packages, one folder per arch")
    ap.add_argument("--tol", type=float, default=1e-3, help="largest allowed |logprob difference|")
    a = ap.parse_args()
    archs = sorted(p.parent.name for p in (REPO / "models" / "fixtures").glob("*/golden.json"))
    if not archs:
        print("fidelity.py: no models/fixtures/*/golden.json", file=sys.stderr)
        return 1
    failed = 0
    for arch in archs:
        pkg = a.packages / arch
        golden = json.loads((REPO / "models" / "fixtures" / arch / "golden.json").read_text())
        precision = json.loads((pkg / "manifest.json").read_text()).get("precision", {}) if (pkg / "manifest.json").is_file() else {}
        if (precision.get("dense"), precision.get("experts")) != ("fp32", "fp32"):
            print(f"FAIL {a.provider} {arch}: {pkg} is not an fp32 export (tests/run.sh makes them)")
            failed += 1
            continue
        worst_arch, bad_arch = 0.0, 0
        for ci, case in enumerate(golden["cases"]):
            try:
                worst, bad = check_case(a, pkg, case)
            except (RuntimeError, json.JSONDecodeError, KeyError) as e:
                worst, bad = float("nan"), [str(e)]
            worst_arch = max(worst_arch, worst) if worst == worst else worst_arch
            for b in bad:
                print(f"FAIL {a.provider} {arch} case {ci}: {b}")
            bad_arch += bool(bad)
        verdict = "ok" if bad_arch == 0 else f"FAIL ({bad_arch} case(s))"
        print(f"{verdict}: {a.provider} {arch}: {len(golden['cases'])} cases, max |logprob diff| {worst_arch:.2e} "
              f"(tolerance {a.tol:g}), greedy {'equal' if bad_arch == 0 else 'see above'}")
        failed += bad_arch > 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
