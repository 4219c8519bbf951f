"""Decoding through the KV cache (one token, or chunks, per call) equals scoring the whole prefix."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ARCHS, golden
from refrunner import Package, score


@pytest.mark.parametrize("arch", ARCHS)
def test_token_by_token_equals_full_prefix(arch, exports):
    pkg = Package(exports.get(arch))
    for case in golden(arch)["cases"]:
        ids = case["ids"]
        full = np.array(score(pkg, ids)[1:])
        stepwise = np.array(score(pkg, ids, chunks=[1] * len(ids))[1:])
        assert np.abs(full - stepwise).max() < 2e-5, case["text"]


@pytest.mark.parametrize("arch", ARCHS)
def test_chunked_prefill_equals_full_prefix(arch, exports):
    pkg = Package(exports.get(arch))
    ids = max((c["ids"] for c in golden(arch)["cases"]), key=len)
    full = np.array(score(pkg, ids)[1:])
    rest = len(ids) - 8
    chunked = np.array(score(pkg, ids, chunks=[5, 3, rest // 2, rest - rest // 2])[1:])
    assert np.abs(full - chunked).max() < 2e-5


@pytest.mark.parametrize("arch", [a for a in ARCHS if not a.startswith("deepseek")])
def test_spare_head_major_capacity_is_masked(arch, exports):
    """Rows past P in a head-major cache (the engine's spare capacity) hold junk the graph ignores."""
    pkg = Package(exports.get(arch))
    assert pkg.manifest["attention"]["cache_layout"] == "head_major"
    ids = max((c["ids"] for c in golden(arch)["cases"]), key=len)
    pkg.spare_rows = 0
    exact = np.array(score(pkg, ids, chunks=[4, len(ids) - 5, 1])[1:])
    pkg.spare_rows = 40
    spare = np.array(score(pkg, ids, chunks=[4, len(ids) - 5, 1])[1:])
    assert np.abs(exact - spare).max() < 1e-5
