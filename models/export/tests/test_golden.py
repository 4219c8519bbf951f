"""fp32 packages reproduce transformers' logprobs (1e-4) and greedy continuations on every fixture."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ARCHS, golden
from refrunner import Package, greedy, score


@pytest.mark.parametrize("arch", ARCHS)
def test_logprobs_match_transformers(arch, exports):
    pkg = Package(exports.get(arch))
    for case in golden(arch)["cases"]:
        got = score(pkg, case["ids"])
        assert got[0] is None and case["logprobs"][0] is None
        diff = np.abs(np.array(got[1:]) - np.array(case["logprobs"][1:]))
        assert diff.max() < 1e-4, f"{arch} {case['text']!r}: max |dlogprob| {diff.max():.3g}"


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_matches_transformers(arch, exports):
    pkg = Package(exports.get(arch))
    # The fixtures were generated with min_new_tokens = max_new_tokens, which masks every EOS id.
    eos = tuple(pkg.manifest["stop_token_ids"])
    for case in golden(arch)["cases"]:
        want = case["greedy"]["ids"]
        assert greedy(pkg, case["ids"], len(want), suppress=eos) == want, case["text"]


@pytest.mark.parametrize("arch", ARCHS)
def test_only_chosen_experts_run(arch, exports):
    pkg = Package(exports.get(arch))
    ids = golden(arch)["cases"][0]["ids"]
    pkg.forward(ids[:1], pkg.new_cache())
    moe_layers = sum(1 for layer in pkg.manifest["layers"] if layer["kind"] == "moe")
    # one token: at most top_k expert graphs per MoE layer, never all of them
    assert pkg.expert_calls <= moe_layers * pkg.manifest["routing"]["top_k"] < moe_layers * pkg.manifest["routing"]["num_experts"]
