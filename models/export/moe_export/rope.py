"""Rotary embedding parameters computed the way transformers computes them (float32), without torch.

transformers standardises `rope_scaling` / `rope_theta` / `rope_parameters` into one dict and derives
`inv_freq` and an `attention_scaling` that multiplies cos and sin. Only the rope types whose
frequencies do not depend on the running sequence length are supported; the others are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from moe_export.errors import ExportError

SUPPORTED_ROPE_TYPES = ("default", "linear", "yarn", "llama3")
# Known to transformers but position-dependent (or per-layer): refusing beats approximating.
_REFUSED_ROPE_TYPES = {
    "dynamic": "its frequencies change with the running sequence length",
    "longrope": "its frequencies switch with the running sequence length",
    "proportional": "it is not used by any supported architecture",
}


@dataclass(frozen=True)
class RopeSpec:
    """What the attention graph needs to rotate q and k."""

    rope_type: str
    dim: int  # rotated dimensions per head
    inv_freq: np.ndarray  # float32 [dim // 2]
    attention_scaling: float  # multiplies cos and sin
    interleaved: bool  # rotate pairs (x0, x1), (x2, x3)... instead of halves
    parameters: dict  # the standardised rope parameters (for the record)


def standardize(cfg: dict) -> dict:
    """Merge config.json's rope keys into one dict, as PreTrainedConfig.convert_rope_params_to_dict does."""
    raw = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    if not isinstance(raw, dict):
        raise ExportError(f"config.json: rope_parameters must be an object, got {raw!r}")
    if any(isinstance(v, dict) for v in raw.values()):
        raise ExportError("config.json: per-layer-type rope_parameters are not supported")
    params = dict(raw)
    params.setdefault("rope_theta", cfg.get("rope_theta", 10000.0))
    if cfg.get("partial_rotary_factor") is not None:
        params.setdefault("partial_rotary_factor", cfg["partial_rotary_factor"])
    params.setdefault("rope_type", params.get("type", "default"))
    if params["rope_type"] in ("llama3", "yarn", "longrope"):
        if "original_max_position_embeddings" in cfg:
            params["original_max_position_embeddings"] = cfg["original_max_position_embeddings"]
        else:
            params.setdefault("original_max_position_embeddings", cfg.get("max_position_embeddings"))
    return params


def _require(params: dict, key: str):
    value = params.get(key)
    if value is None:
        raise ExportError(f"config.json: rope type '{params['rope_type']}' needs rope_parameters.{key}")
    return value


def _base_inv_freq(base: float, dim: int) -> np.ndarray:
    exponents = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    return (np.float32(1.0) / np.power(np.float32(base), exponents)).astype(np.float32)


def _yarn(params: dict, dim: int, max_position_embeddings: int) -> tuple[np.ndarray, float]:
    base = float(params["rope_theta"])
    factor = params.get("factor")
    original = _require(params, "original_max_position_embeddings")
    if factor is None:
        factor = max_position_embeddings / original
    factor = float(factor)
    attention_factor = params.get("attention_factor")
    mscale = params.get("mscale")
    mscale_all_dim = params.get("mscale_all_dim")

    def get_mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
        else:
            attention_factor = get_mscale(factor)
    beta_fast = params.get("beta_fast") or 32
    beta_slow = params.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    pos_freqs = np.power(np.float32(base), np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))
    extrapolation = (np.float32(1.0) / pos_freqs).astype(np.float32)
    interpolation = (np.float32(1.0) / (np.float32(factor) * pos_freqs)).astype(np.float32)
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - np.float32(low)) / np.float32(high - low), 0, 1)
    extra_factor = (np.float32(1.0) - ramp).astype(np.float32)
    inv_freq = interpolation * (np.float32(1.0) - extra_factor) + extrapolation * extra_factor
    return inv_freq.astype(np.float32), float(attention_factor)


def _llama3(params: dict, dim: int) -> np.ndarray:
    inv_freq = _base_inv_freq(float(params["rope_theta"]), dim)
    factor = float(_require(params, "factor"))
    low_freq_factor = float(_require(params, "low_freq_factor"))
    high_freq_factor = float(_require(params, "high_freq_factor"))
    old_context = float(_require(params, "original_max_position_embeddings"))
    low_wavelen = old_context / low_freq_factor
    high_wavelen = old_context / high_freq_factor
    wavelen = (np.float32(2 * math.pi) / inv_freq).astype(np.float32)
    scaled = np.where(wavelen > low_wavelen, inv_freq / np.float32(factor), inv_freq).astype(np.float32)
    smooth = ((old_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)).astype(np.float32)
    smoothed = (1 - smooth) * scaled / np.float32(factor) + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def build(cfg: dict, dim: int, interleaved: bool) -> RopeSpec:
    """Compute the rope spec for `dim` rotated dimensions from config.json."""
    params = standardize(cfg)
    rope_type = params["rope_type"]
    if rope_type in _REFUSED_ROPE_TYPES:
        raise ExportError(f"unsupported rope scaling type '{rope_type}': {_REFUSED_ROPE_TYPES[rope_type]}")
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ExportError(
            f"unsupported rope scaling type '{rope_type}' (supported: {', '.join(SUPPORTED_ROPE_TYPES)})"
        )
    partial = params.get("partial_rotary_factor")
    if rope_type != "default" and partial is not None and float(partial) != 1.0:
        raise ExportError(f"config.json: partial_rotary_factor {partial} is not supported")
    if dim % 2:
        raise ExportError(f"rotary dimension {dim} is odd")
    for key in ("rope_theta", "factor", "attention_factor", "mscale", "mscale_all_dim", "beta_fast", "beta_slow",
                "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"):
        value = params.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ExportError(f"config.json: rope_parameters.{key} must be a number, got {value!r}")
    base = float(params["rope_theta"])
    scaling = 1.0
    if rope_type == "default":
        inv_freq = _base_inv_freq(base, dim)
    elif rope_type == "linear":
        inv_freq = (_base_inv_freq(base, dim) / np.float32(_require(params, "factor"))).astype(np.float32)
    elif rope_type == "yarn":
        inv_freq, scaling = _yarn(params, dim, int(cfg.get("max_position_embeddings") or 0))
    else:
        inv_freq = _llama3(params, dim)
    return RopeSpec(rope_type, dim, inv_freq, float(scaling), interleaved, params)


def mla_softmax_scale(params: dict, qk_head_dim: int) -> float:
    """DeepSeek's attention scale: head_dim^-0.5, times mscale(factor, mscale_all_dim)^2 when scaled."""
    scale = qk_head_dim ** (-0.5)
    if params.get("rope_type", "default") != "default":
        mscale_all_dim = params.get("mscale_all_dim", 0)
        if mscale_all_dim:
            factor = float(_require(params, "factor"))
            m = 1.0 if factor <= 1 else 0.1 * mscale_all_dim * math.log(factor) + 1.0
            scale = scale * m * m
    return scale
