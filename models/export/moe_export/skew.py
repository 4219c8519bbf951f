"""Skewed routing for synthetic packages: a per-layer `correction_bias` (FORMAT.md, routing rule step 2:
added to the scores for choosing experts only, not to their weights) that makes top-k selection follow a
Zipf law over experts, as real MoE routers do. With random weights every expert is about as likely as
another, which flatters an expert cache; budgets and prefetching are measured on skewed routing too.

The bias is calibrated on simulated router inputs (unit-RMS Gaussian vectors, what an RMS-normalized
hidden state looks like) through the layer's real router weight, so the skew reached in a real run is
close to, not exactly, the target: the package records both the target and what calibration reached.
"""

from __future__ import annotations

import numpy as np

from moe_export.errors import ExportError

#: Simulated router inputs per calibration step, and steps.
SAMPLES = 4096
STEPS = 200


def zipf_targets(num_experts: int, top_k: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Per-expert selection frequency (share of tokens that choose it), summing to `top_k`, none above 1:
    proportional to 1 / rank**exponent, ranks in a random order, capped at 1 with the excess spread over
    the others (a token cannot choose an expert twice)."""
    if not (np.isfinite(exponent) and 0.0 <= exponent <= 4.0):
        raise ExportError(f"--router-zipf must be between 0 and 4, got {exponent}")
    if not 0 < top_k <= num_experts:
        raise ExportError(f"top_k {top_k} must be between 1 and the number of experts {num_experts}")
    weights = 1.0 / np.arange(1, num_experts + 1, dtype=np.float64) ** exponent
    freq = np.zeros(num_experts)
    capped = np.zeros(num_experts, dtype=bool)
    for _ in range(num_experts):
        left = top_k - capped.sum()
        freq[~capped] = weights[~capped] * left / weights[~capped].sum()
        over = (freq > 1.0) & ~capped
        if not over.any():
            break
        capped |= over
        freq[capped] = 1.0
    order = rng.permutation(num_experts)
    out = np.empty(num_experts)
    out[order] = freq
    return out


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def selection_frequency(scores: np.ndarray, bias: np.ndarray, top_k: int) -> np.ndarray:
    """Share of rows of `scores` whose top-k of `scores + bias` includes each expert."""
    chosen = np.argpartition(-(scores + bias), top_k - 1, axis=-1)[:, :top_k]
    return np.bincount(chosen.ravel(), minlength=scores.shape[1]) / scores.shape[0]


def simulated_scores(router: np.ndarray, rng: np.random.Generator, samples: int = SAMPLES) -> np.ndarray:
    """Softmax router scores for unit-RMS Gaussian inputs through `router` ([experts, hidden])."""
    x = rng.standard_normal((samples, router.shape[1]), dtype=np.float32)
    return _softmax((x @ router.T).astype(np.float64))


def calibrate(router: np.ndarray, top_k: int, target: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A bias whose top-k selection frequencies approach `target` (float32, one per expert)."""
    scores = simulated_scores(router, rng)
    scale = float(scores.std()) or 1.0
    bias = np.zeros(router.shape[0])
    best, best_err = bias.copy(), np.inf
    floor = 0.5 / scores.shape[0]
    for _ in range(STEPS):
        freq = selection_frequency(scores, bias, top_k)
        err = float(np.abs(freq - target).sum())
        if err < best_err:
            best, best_err = bias.copy(), err
        bias += 0.5 * scale * (np.log(np.maximum(target, floor)) - np.log(np.maximum(freq, floor)))
        bias -= bias.mean()
    return best.astype(np.float32)


def hot_share(freq: np.ndarray, target: np.ndarray, fraction: float = 0.5) -> float:
    """Share of all selections that go to the `fraction` of experts the target makes hottest: the hit rate
    an expert cache holding exactly those experts would have."""
    n = max(1, int(round(len(target) * fraction)))
    hot = np.argsort(-target, kind="stable")[:n]
    return float(freq[hot].sum() / max(freq.sum(), 1e-12))
