"""A small ONNX graph writer that streams weights into the graph's own external-data file.

Weights are appended to `<graph>.onnx.data` as they are added, so the ModelProto never holds their
bytes and a graph costs little more memory than its largest weight. Small constants (shapes, axes,
scalars) stay inline in the .onnx file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from moe_export.errors import ExportError

OPSET = 17
MS_DOMAIN = "com.microsoft"
IR_VERSION = 10
_INLINE_LIMIT = 256  # elements; constants larger than this go to external data
_BIG_TENSOR = 64 * 1024  # bytes; such tensors start on a page boundary so they can be memory-mapped
_PAGE = 4096
_SMALL_ALIGN = 64

_NP_TO_ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.float16): TensorProto.FLOAT16,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.uint8): TensorProto.UINT8,
    np.dtype(np.bool_): TensorProto.BOOL,
}

FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16
INT64 = TensorProto.INT64
INT32 = TensorProto.INT32


class GraphWriter:
    """Builds one graph file (and its .data file) under `graphs_dir`."""

    def __init__(self, graphs_dir: Path, name: str, doc: str = ""):
        self.name = name
        self.path = Path(graphs_dir) / f"{name}.onnx"
        self.data_path = Path(graphs_dir) / f"{name}.onnx.data"
        self.doc = doc
        self._data = None
        self._offset = 0
        self._nodes: list[onnx.NodeProto] = []
        self._inputs: list[onnx.ValueInfoProto] = []
        self._outputs: list[onnx.ValueInfoProto] = []
        self._inits: list[TensorProto] = []
        self._consts: dict[tuple, str] = {}
        self._names: set[str] = set()
        self._counter = 0
        self._uses_ms = False

    # -- names -------------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        self._counter += 1
        name = f"{hint}_{self._counter}"
        self._names.add(name)
        return name

    def _claim(self, name: str) -> str:
        if name in self._names:
            raise ValueError(f"duplicate value name {name} in graph {self.name}")
        self._names.add(name)
        return name

    # -- interface -----------------------------------------------------------------------------
    def input(self, name: str, elem_type: int, shape: list) -> str:
        self._inputs.append(helper.make_tensor_value_info(self._claim(name), elem_type, shape))
        return name

    def output(self, value: str, name: str, elem_type: int, shape: list) -> str:
        """Expose `value` as graph output `name` (through an Identity when the names differ)."""
        if value != name:
            self._nodes.append(helper.make_node("Identity", [value], [self._claim(name)], name=f"out_{name}"))
        self._outputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    # -- tensors -------------------------------------------------------------------------------
    def weight(self, hint: str, array: np.ndarray) -> str:
        """Add `array` as an initializer stored in this graph's external-data file."""
        array = np.ascontiguousarray(array)
        if array.dtype not in _NP_TO_ONNX:
            raise TypeError(f"unsupported initializer dtype {array.dtype}")
        name = self.fresh(hint)
        if self._data is None:
            self._data = open(self.data_path, "wb")
        align = _PAGE if array.nbytes >= _BIG_TENSOR else _SMALL_ALIGN
        pad = (-self._offset) % align
        if pad:
            self._data.write(b"\0" * pad)
            self._offset += pad
        self._data.write(array.tobytes())
        tensor = TensorProto()
        tensor.name = name
        tensor.data_type = _NP_TO_ONNX[array.dtype]
        tensor.dims.extend(array.shape)
        for key, value in (("location", self.data_path.name), ("offset", self._offset), ("length", array.nbytes)):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
        tensor.data_location = TensorProto.EXTERNAL
        self._offset += array.nbytes
        self._inits.append(tensor)
        return name

    def const(self, value, dtype=np.int64) -> str:
        """A small constant kept inline (deduplicated)."""
        array = np.asarray(value, dtype=dtype)
        if array.size > _INLINE_LIMIT:
            return self.weight("const", array)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            name = self.fresh("c")
            self._inits.append(numpy_helper.from_array(array, name))
            self._consts[key] = name
        return self._consts[key]

    # -- nodes ---------------------------------------------------------------------------------
    def op(self, op_type: str, *inputs: str, outputs: int | list[str] = 1, domain: str = "", **attrs):
        """Append a node; returns its output name (or list of names when several)."""
        if isinstance(outputs, int):
            names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        else:
            names = [self._claim(n) for n in outputs]
        if domain == MS_DOMAIN:
            self._uses_ms = True
        self._nodes.append(
            helper.make_node(op_type, list(inputs), names, name=f"n{len(self._nodes)}_{op_type}",
                             domain=domain or None, **attrs)
        )
        return names[0] if len(names) == 1 else names

    # -- output --------------------------------------------------------------------------------
    def finish(self) -> list[Path]:
        """Write the .onnx (and .data) files, run the full checker, return the files written."""
        if self._data is not None:
            self._data.close()
            self._data = None
        graph = helper.make_graph(self._nodes, self.name, self._inputs, self._outputs, self._inits,
                                  doc_string=self.doc)
        opsets = [helper.make_opsetid("", OPSET)]
        if self._uses_ms:
            opsets.append(helper.make_opsetid(MS_DOMAIN, 1))
        model = helper.make_model(graph, opset_imports=opsets, producer_name="moe_export",
                                  ir_version=IR_VERSION)
        check(self.path, model)
        self.path.write_bytes(model.SerializeToString())
        files = [self.path]
        if self._offset:
            files.append(self.data_path)
        return files


def check(path: Path, model: onnx.ModelProto) -> None:
    """Run onnx's full checker on `model`, written at `path` so its external data resolves.

    An onnx older than IR_VERSION (Debian 12 ships 1.12, IR 8) refuses the model outright; nothing in
    these graphs needs IR 9/10 (float8, int4 tensor types), so it checks a copy that says IR 8. The
    caller then overwrites `path` with the real bytes, so the package is the same with either onnx.
    """
    checked = model
    if onnx.IR_VERSION < model.ir_version:
        checked = onnx.ModelProto()
        checked.CopyFrom(model)
        checked.ir_version = onnx.IR_VERSION
    path.write_bytes(checked.SerializeToString())
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        raise ExportError(f"internal error: graph {path.name} fails onnx.checker: {err}") from None
