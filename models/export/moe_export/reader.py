"""Lazy, shard-aware access to a Hugging Face safetensors checkpoint.

Only headers are read up front (to fail early on missing shards, truncated files, missing tensors or
wrong shapes); each tensor is read on demand with its shard opened just for that read, so no more
than the tensors the current graph needs are ever resident.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moe_export import stnumpy
from moe_export.errors import ExportError

try:  # the fast reader; Debian 12 packages neither module, so stnumpy stands in (same results)
    import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy for safetensors)
    from safetensors import SafetensorError, safe_open
except ImportError:
    safe_open = None

INDEX_FILE = "model.safetensors.index.json"
_FLOAT_DTYPES = ("F32", "F16", "BF16")


@dataclass(frozen=True)
class TensorRef:
    """A tensor the exporter needs: `name`, optionally one slice `index` along its first axis."""

    name: str
    shape: tuple[int, ...]
    index: int | None = None

    def describe(self) -> str:
        return self.name if self.index is None else f"{self.name}[{self.index}]"


@dataclass(frozen=True)
class _Entry:
    shard: str
    shape: tuple[int, ...]
    dtype: str


class Checkpoint:
    """The tensors of SRC_DIR, indexed by name; reads are lazy."""

    def __init__(self, src_dir: Path, use_safetensors: bool | None = None):
        self.src = Path(src_dir)
        # None: the safetensors module when installed; False forces stnumpy (tests compare the two).
        self._fast = safe_open is not None if use_safetensors is None else use_safetensors
        self._raw: dict[str, stnumpy.Entry] = {}  # stnumpy's byte ranges, when it is the reader
        self._listed: dict[str, str] = {}  # index.json: name -> shard
        self._entries: dict[str, _Entry] = {}
        index_path = self.src / INDEX_FILE
        if index_path.is_file():
            shards = self._read_index(index_path)
        elif (self.src / "model.safetensors").is_file():
            shards = ["model.safetensors"]
        else:
            shards = sorted(p.name for p in self.src.glob("*.safetensors"))
            if not shards:
                raise ExportError(f"no *.safetensors file and no {INDEX_FILE} in {self.src}")
        for shard in shards:
            self._scan(shard)

    def _read_index(self, index_path: Path) -> list[str]:
        try:
            weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise ExportError(f"cannot read {index_path}: {err!r}") from None
        if not isinstance(weight_map, dict):
            raise ExportError(f"{index_path}: weight_map must be an object")
        self._listed = {str(k): str(v) for k, v in weight_map.items()}
        by_shard: dict[str, list[str]] = {}
        for name, shard in self._listed.items():
            by_shard.setdefault(shard, []).append(name)
        for shard, names in sorted(by_shard.items()):
            if not (self.src / shard).is_file():
                raise ExportError(
                    f"missing shard '{shard}' in {self.src}: {INDEX_FILE} lists {len(names)} tensors in it "
                    f"(e.g. '{sorted(names)[0]}')"
                )
        return sorted(by_shard)

    def _scan(self, shard: str) -> None:
        if not self._fast:
            self._scan_numpy(shard)
            return
        path = self.src / shard
        try:
            with safe_open(str(path), framework="np") as f:
                for name in f.keys():
                    s = f.get_slice(name)
                    if name in self._entries:
                        raise ExportError(
                            f"tensor '{name}' appears in both '{self._entries[name].shard}' and '{shard}'"
                        )
                    self._entries[name] = _Entry(shard, tuple(s.get_shape()), s.get_dtype())
        except SafetensorError as err:
            size = path.stat().st_size
            raise ExportError(f"truncated or corrupt safetensors file '{shard}' ({size} bytes): {err}") from None
        except OSError as err:
            raise ExportError(f"cannot read safetensors file '{shard}': {err}") from None

    def _scan_numpy(self, shard: str) -> None:
        path = self.src / shard
        try:
            entries = stnumpy.read_header(path)
        except stnumpy.FormatError as err:
            size = path.stat().st_size
            raise ExportError(f"truncated or corrupt safetensors file '{shard}' ({size} bytes): {err}") from None
        except OSError as err:
            raise ExportError(f"cannot read safetensors file '{shard}': {err}") from None
        for name, raw in entries.items():
            if name in self._entries:
                raise ExportError(f"tensor '{name}' appears in both '{self._entries[name].shard}' and '{shard}'")
            self._entries[name] = _Entry(shard, raw.shape, raw.dtype)
            self._raw[name] = raw

    def has(self, name: str) -> bool:
        return name in self._entries

    def entry_shape(self, name: str) -> tuple[int, ...] | None:
        entry = self._entries.get(name)
        return entry.shape if entry else None

    def check(self, ref: TensorRef) -> None:
        entry = self._entries.get(ref.name)
        listed = self._listed.get(ref.name)
        if entry is not None and listed is not None and listed != entry.shard:
            raise ExportError(
                f"tensor '{ref.name}' is listed in {INDEX_FILE} for shard '{listed}' "
                f"but that file does not contain it (it is in '{entry.shard}')"
            )
        if entry is None:
            if ref.name in self._listed:
                raise ExportError(
                    f"tensor '{ref.name}' is listed in {INDEX_FILE} for shard '{self._listed[ref.name]}' "
                    "but that file does not contain it"
                )
            raise ExportError(f"tensor '{ref.name}' is missing from the checkpoint in {self.src}")
        if entry.dtype not in _FLOAT_DTYPES:
            raise ExportError(
                f"tensor '{ref.name}' has dtype {entry.dtype}; supported: {', '.join(_FLOAT_DTYPES)}"
            )
        stored = entry.shape if ref.index is None else entry.shape[1:]
        if ref.index is not None and (not entry.shape or ref.index >= entry.shape[0]):
            raise ExportError(f"tensor '{ref.name}' has shape {list(entry.shape)}, no slice {ref.index}")
        if tuple(stored) != tuple(ref.shape):
            got = list(entry.shape)
            want = list(ref.shape) if ref.index is None else ["E", *ref.shape]
            raise ExportError(f"tensor '{ref.name}' has shape {got}, expected {want}")

    def load(self, ref: TensorRef) -> np.ndarray:
        """Read one tensor (or one slice of it) as a fresh float32 array."""
        self.check(ref)
        entry = self._entries[ref.name]
        if not self._fast:
            try:
                array = stnumpy.read(self.src / entry.shard, self._raw[ref.name], ref.index)
            except (stnumpy.FormatError, OSError) as err:
                raise ExportError(f"cannot read tensor '{ref.name}' from '{entry.shard}': {err}") from None
            return array.reshape(ref.shape)  # already a fresh float32 array
        try:
            with safe_open(str(self.src / entry.shard), framework="np") as f:
                if ref.index is None:
                    array = f.get_tensor(ref.name)
                else:
                    array = f.get_slice(ref.name)[ref.index : ref.index + 1]
        except SafetensorError as err:
            raise ExportError(f"cannot read tensor '{ref.name}' from '{entry.shard}': {err}") from None
        return np.array(array, dtype=np.float32, copy=True).reshape(ref.shape)
