"""A pure-numpy safetensors reader, used when the `safetensors` / `ml_dtypes` modules are not installed.

Distributions that lack those modules (Debian 12) still ship numpy, and the format is simple: an 8-byte
little-endian header length, a JSON header {name: {dtype, shape, data_offsets: [begin, end]}} (plus an
optional "__metadata__" entry), then the raw little-endian tensor bytes. Only the float dtypes the
exporter accepts are decoded; bfloat16 becomes float32 by placing its 16 bits in the high half of a
uint32, which is exact, so results match `safetensors` + `ml_dtypes` bit for bit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Headers of real checkpoints are a few MB at most (one entry per tensor); bound before reading.
MAX_HEADER = 100 * 1024 * 1024
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
             "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}
_NUMPY = {"F32": "<f4", "F16": "<f2"}


class FormatError(Exception):
    """The file is not a well-formed safetensors file (truncated, bad header, offsets out of range)."""


@dataclass(frozen=True)
class Entry:
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute file offsets of the tensor's bytes
    end: int


def read_header(path: Path) -> dict[str, Entry]:
    """Every tensor's dtype, shape and byte range, checked against the file's size."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(0)
        raw_len = f.read(8)
        if len(raw_len) < 8:
            raise FormatError("file shorter than its 8-byte header length")
        n = int.from_bytes(raw_len, "little")
        if n > MAX_HEADER or 8 + n > size:
            raise FormatError(f"header length {n} does not fit the file ({size} bytes)")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise FormatError(f"header is not JSON: {err}") from None
    if not isinstance(header, dict):
        raise FormatError("header is not a JSON object")
    data_start = 8 + n
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        entries[name] = _entry(name, info, data_start, size)
    return entries


def _entry(name: str, info, data_start: int, size: int) -> Entry:
    try:
        dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
    except (TypeError, KeyError, ValueError):
        raise FormatError(f"tensor '{name}': malformed header entry") from None
    if dtype not in _ITEMSIZE or not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise FormatError(f"tensor '{name}': bad dtype or shape")
    if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
        raise FormatError(f"tensor '{name}': bad data offsets")
    count = 1
    for d in shape:
        count *= d
    if end - begin != count * _ITEMSIZE[dtype]:
        raise FormatError(f"tensor '{name}': {end - begin} bytes for shape {shape} of {dtype}")
    if data_start + end > size:
        raise FormatError(f"tensor '{name}' ends past the end of the file ({size} bytes)")
    return Entry(dtype, tuple(shape), data_start + begin, data_start + end)


def read(path: Path, entry: Entry, index: int | None = None) -> np.ndarray:
    """The tensor (or its slice `index` along the first axis) as a new float32 array; only those bytes
    are read, straight into the array (a bfloat16 tensor costs its bytes plus the float32 result)."""
    if entry.dtype not in ("F32", "F16", "BF16"):
        raise FormatError(f"unsupported dtype {entry.dtype}")
    shape = entry.shape
    begin, nbytes = entry.begin, entry.end - entry.begin
    if index is not None:
        if not shape or not 0 <= index < shape[0]:
            raise FormatError(f"no slice {index} in shape {list(shape)}")
        nbytes //= shape[0]
        begin += index * nbytes
        shape = (1, *shape[1:])
    stored = np.empty(nbytes // _ITEMSIZE[entry.dtype], dtype="<u2" if entry.dtype == "BF16" else _NUMPY[entry.dtype])
    with open(path, "rb") as f:
        f.seek(begin)
        if f.readinto(memoryview(stored).cast("B")) != nbytes:
            raise FormatError("file shorter than its header says")
    if entry.dtype == "BF16":
        wide = np.left_shift(stored, 16, dtype="<u4")  # bf16 is the high half of an f32
        del stored
        return wide.view("<f4").astype(np.float32, copy=False).reshape(shape)
    return stored.astype(np.float32, copy=False).reshape(shape)
