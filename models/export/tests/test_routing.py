"""The reference runner's routing rule (FORMAT.md) on hand-made logits where the variants differ."""

from __future__ import annotations

import numpy as np
from refrunner import route

BASE = dict(top_k=2, scoring="softmax", group_limit=None, norm_topk_prob=False, norm_eps=0.0,
            routed_scaling_factor=1.0)


def test_softmax_topk_without_normalisation():
    logits = np.log(np.array([[0.1, 0.4, 0.2, 0.3]], np.float32))
    idx, w = route(logits, BASE, None)
    assert idx.tolist() == [[1, 3]]
    np.testing.assert_allclose(w, [[0.4, 0.3]], rtol=1e-6)


def test_normalised_and_scaled():
    logits = np.log(np.array([[0.1, 0.4, 0.2, 0.3]], np.float32))
    idx, w = route(logits, dict(BASE, norm_topk_prob=True, routed_scaling_factor=2.0), None)
    np.testing.assert_allclose(w, [[2 * 0.4 / 0.7, 2 * 0.3 / 0.7]], rtol=1e-6)


def test_correction_bias_chooses_but_does_not_weigh():
    logits = np.zeros((1, 4), np.float32)  # sigmoid 0.5 everywhere
    bias = np.array([0.0, 0.3, 0.0, 0.2], np.float32)
    rule = dict(BASE, scoring="sigmoid", norm_topk_prob=False)
    idx, w = route(logits, rule, bias)
    assert sorted(idx[0].tolist()) == [1, 3]
    np.testing.assert_allclose(w, [[0.5, 0.5]])


def test_group_limit_masking_matters_with_negative_choice():
    # Group 0 = experts 0..3 wins on top-2 sum, but every choice value in it is negative (sigmoid 0.5
    # plus a bias below -0.5): filling the other group with 0.0 lets its experts win, -inf does not.
    logits = np.zeros((1, 8), np.float32)
    bias = np.array([-0.6, -0.7, -0.9, -0.9, -0.95, -0.95, -0.95, -0.95], np.float32)
    gl = {"n_group": 2, "topk_group": 1, "group_score": "top2_sum"}
    rule = dict(BASE, scoring="sigmoid", norm_topk_prob=True, norm_eps=1e-20)
    idx, w = route(logits, dict(rule, group_limit=dict(gl, masked="neg_inf")), bias)  # DeepSeek-V3
    assert sorted(idx[0].tolist()) == [0, 1]
    np.testing.assert_allclose(w, [[0.5, 0.5]])
    idx, _ = route(logits, dict(rule, group_limit=dict(gl, masked="zero")), bias)
    assert set(idx[0].tolist()) <= {4, 5, 6, 7}


def test_group_score_max_versus_top2_sum():
    # group 0 has the single best expert, group 1 the better pair
    p = np.array([[0.30, 0.01, 0.02, 0.01, 0.20, 0.19, 0.17, 0.10]], np.float32)
    logits = np.log(p)
    by_max = route(logits, dict(BASE, group_limit={"n_group": 2, "topk_group": 1, "group_score": "max"}), None)
    by_sum = route(logits, dict(BASE, group_limit={"n_group": 2, "topk_group": 1, "group_score": "top2_sum"}), None)
    assert sorted(by_max[0][0].tolist()) == [0, 2]
    assert sorted(by_sum[0][0].tolist()) == [4, 5]
