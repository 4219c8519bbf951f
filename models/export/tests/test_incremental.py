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
