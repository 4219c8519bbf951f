"""Block-wise asymmetric weight quantization in the layout of ONNX Runtime's com.microsoft.MatMulNBits.

For a weight W [N, K] (out, in), quantized over K in blocks of `block_size`:
  B            uint8 [N, k_blocks, block_size * bits / 8], codes packed low bits first along K
  scales       float32 [N, k_blocks]
  zero_points  uint8 [N, ceil(k_blocks * bits / 8)], packed the same way
and W[n, k] ~= (code - zero_point) * scale. As in ORT's own quantizer the block range always includes
0, so zeros stay exact. K is zero-padded to a whole number of blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRECISIONS = ("fp32", "fp16", "int8", "int4")


@dataclass(frozen=True)
class QuantConfig:
    """How FFN weights are stored: precision, and for int8/int4 the MatMulNBits parameters."""

    precision: str = "fp32"
    block_size: int = 32
    accuracy_level: int = 4

    @property
    def bits(self) -> int | None:
        return {"int8": 8, "int4": 4}.get(self.precision)


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack the last axis of uint8 `codes` (values < 2**bits) low-first into bytes."""
    if bits == 8:
        return codes.astype(np.uint8)
    per_byte = 8 // bits
    pad = (-codes.shape[-1]) % per_byte
    if pad:
        codes = np.concatenate([codes, np.zeros(codes.shape[:-1] + (pad,), np.uint8)], axis=-1)
    grouped = codes.reshape(codes.shape[:-1] + (-1, per_byte)).astype(np.uint8)
    packed = np.zeros(grouped.shape[:-1], np.uint8)
    for i in range(per_byte):
        packed |= (grouped[..., i] << (bits * i)).astype(np.uint8)
    return packed


def quantize(weight: np.ndarray, bits: int, block_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantize W [N, K]; returns (B, scales, zero_points) for MatMulNBits."""
    n, k = weight.shape
    blocks = -(-k // block_size)
    w = np.zeros((n, blocks * block_size), np.float32)
    w[:, :k] = weight
    w = w.reshape(n, blocks, block_size)
    qmax = (1 << bits) - 1
    lo = np.minimum(w.min(axis=-1), 0.0)
    hi = np.maximum(w.max(axis=-1), 0.0)
    scale = ((hi - lo) / qmax).astype(np.float32)
    safe = np.where(scale == 0, 1.0, scale).astype(np.float32)
    zero = np.where(scale == 0, 0.0, np.clip(np.round(-lo / safe), 0, qmax)).astype(np.uint8)
    codes = np.clip(np.round(w / safe[..., None] + zero[..., None]), 0, qmax).astype(np.uint8)
    del w
    b = _pack(codes, bits)  # [N, blocks, block_size * bits / 8]
    return b, scale, _pack(zero, bits)


def dequantize(b: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, bits: int, k: int) -> np.ndarray:
    """The W [N, K] that MatMulNBits computes with (for tests and drift checks)."""
    n, blocks, _ = b.shape
    codes = _unpack(b, bits).reshape(n, blocks, -1).astype(np.float32)
    zeros = _unpack(zero_points, bits)[:, :blocks].astype(np.float32)
    w = (codes - zeros[..., None]) * scales[..., None]
    return w.reshape(n, -1)[:, :k]


def _unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    if bits == 8:
        return packed
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    parts = [(packed >> (bits * i)) & mask for i in range(per_byte)]
    return np.stack(parts, axis=-1).reshape(packed.shape[:-1] + (-1,))
