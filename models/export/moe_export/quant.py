"""Block-wise weight quantization in the layout of ONNX Runtime's com.microsoft.MatMulNBits, and which
graph kinds of a package are stored at which precision.

For a weight W [N, K] (out, in), quantized over K in blocks of `block_size`:
  B            uint8 [N, k_blocks, block_size * bits / 8], codes packed low bits first along K
  scales       float32 [N, k_blocks]
  zero_points  uint8 [N, ceil(k_blocks * bits / 8)], packed the same way
and W[n, k] ~= (code - zero_point) * scale. As in ORT's own quantizer the block range always includes
0, so zeros stay exact. K is zero-padded to a whole number of blocks. Symmetric blocks have no
zero_points tensor (ORT then uses 2**(bits-1)); as llama.cpp's Q4_0/Q8_0 they map the block's
largest-magnitude value to code 0, so a block uses all 2**bits codes.
The same (B, scales, zero_points) reshaped to [N, K * bits / 8] is com.microsoft.GatherBlockQuantized's
layout, used for embedding tables.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

PRECISIONS = ("fp32", "fp16", "int8", "int4")
# Graph kinds as manifest.precision.graphs names them (models/FORMAT.md).
GRAPH_KINDS = ("embed", "attn", "router", "expert", "shared", "mlp", "head")


@dataclass(frozen=True)
class QuantConfig:
    """How a graph's weights are stored: precision, and for int8/int4 the MatMulNBits parameters."""

    precision: str = "fp32"
    block_size: int = 32
    accuracy_level: int = 4
    symmetric: bool = False

    @property
    def bits(self) -> int | None:
        return {"int8": 8, "int4": 4}.get(self.precision)

    def at(self, precision: str) -> QuantConfig:
        """The same block parameters at another precision."""
        return replace(self, precision=precision)

    def manifest_entry(self) -> dict:
        quantized = self.bits is not None
        return {"weights": self.precision,
                "block_size": self.block_size if quantized else None,
                "accuracy_level": self.accuracy_level if quantized else None,
                "symmetric": self.symmetric if quantized else None}


FP32 = QuantConfig("fp32")
DEFAULT_INT4_DENSE = "int8"
DEFAULT_INT4_HEAD = "int8"
DEFAULT_INT4_EMBED = "int8"


@dataclass(frozen=True)
class PackageQuant:
    """The storage of each graph kind; the router always stays fp32 (its logits pick the experts)."""

    experts: QuantConfig
    dense: QuantConfig  # attention projections, shared experts, dense MLPs
    head: QuantConfig
    embed: QuantConfig
    # FORMAT.md "KV cache types": what an MHA/GQA graph's past inputs hold (MLA keeps float32).
    cache: str = "float32"

    def kind(self, kind: str) -> QuantConfig:
        return {"embed": self.embed, "attn": self.dense, "router": FP32, "expert": self.experts,
                "shared": self.dense, "mlp": self.dense, "head": self.head}[kind]


CACHE_DTYPES = ("float32", "float16")


def package_quant(qc: QuantConfig, dense: str | None = None, head: str | None = None,
                  embed: str | None = None, cache: str = "float32") -> PackageQuant:
    """`qc` for the routed experts; the other kinds at `qc` unless named, except that an int4 package
    keeps attention, shared experts, dense MLPs, head and embedding at int8 (DEFAULT_INT4_*, chosen by
    the drift measurements in models/export/README.md)."""
    if dense is None:
        dense = DEFAULT_INT4_DENSE if qc.precision == "int4" else qc.precision
    if head is None:
        head = DEFAULT_INT4_HEAD if qc.precision == "int4" else qc.precision
    if embed is None:
        embed = DEFAULT_INT4_EMBED if qc.precision == "int4" else qc.precision
    if cache not in CACHE_DTYPES:
        raise ValueError(f"KV cache type must be one of {', '.join(CACHE_DTYPES)}, got {cache!r}")
    return PackageQuant(experts=qc, dense=qc.at(dense), head=qc.at(head), embed=qc.at(embed), cache=cache)


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


def quantize(weight: np.ndarray, bits: int, block_size: int,
             symmetric: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Quantize W [N, K]; returns (B, scales, zero_points) for MatMulNBits, zero_points None if symmetric."""
    n, k = weight.shape
    blocks = -(-k // block_size)
    w = np.zeros((n, blocks * block_size), np.float32)
    w[:, :k] = weight
    w = w.reshape(n, blocks, block_size)
    qmax = (1 << bits) - 1
    if symmetric:
        mid = 1 << (bits - 1)
        idx = np.abs(w).argmax(axis=-1)[..., None]
        extreme = np.take_along_axis(w, idx, axis=-1)[..., 0]
        scale = (extreme / -mid).astype(np.float32)  # the extreme lands on code 0, as in llama.cpp's Q4_0
        safe = np.where(scale == 0, 1.0, scale).astype(np.float32)
        codes = np.clip(np.round(w / safe[..., None]) + mid, 0, qmax).astype(np.uint8)
        del w
        return _pack(codes, bits), scale, None
    lo = np.minimum(w.min(axis=-1), 0.0)
    hi = np.maximum(w.max(axis=-1), 0.0)
    scale = ((hi - lo) / qmax).astype(np.float32)
    safe = np.where(scale == 0, 1.0, scale).astype(np.float32)
    zero = np.where(scale == 0, 0.0, np.clip(np.round(-lo / safe), 0, qmax)).astype(np.uint8)
    codes = np.clip(np.round(w / safe[..., None] + zero[..., None]), 0, qmax).astype(np.uint8)
    del w
    b = _pack(codes, bits)  # [N, blocks, block_size * bits / 8]
    return b, scale, _pack(zero, bits)


def dequantize(b: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None, bits: int, k: int) -> np.ndarray:
    """The W [N, K] that MatMulNBits computes with (for tests and drift checks)."""
    n, blocks, _ = b.shape
    codes = _unpack(b, bits).reshape(n, blocks, -1).astype(np.float32)
    if zero_points is None:
        zeros = np.full((n, blocks), 1 << (bits - 1), np.float32)
    else:
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
