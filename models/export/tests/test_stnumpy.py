"""The pure-numpy safetensors reader (for systems without safetensors/ml_dtypes, e.g. Debian 12) against
the safetensors library: same arrays bit for bit, same packages byte for byte, same error lines."""

from __future__ import annotations

import filecmp
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from conftest import FIXTURES
from safetensors.numpy import save_file
from test_errors import CASES, copy_fixture, run_cli

from moe_export import reader, stnumpy
from moe_export.export import export
from moe_export.quant import QuantConfig
from moe_export.reader import Checkpoint, TensorRef


def same_tree(a: Path, b: Path) -> None:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert filecmp.cmp(a / rel, b / rel, shallow=False), rel


def bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_tensors_match_the_safetensors_library(tmp_path, dtype):
    rng = np.random.default_rng(7)
    base = (rng.standard_normal((5, 3, 8)) * 100).astype(np.float32)
    # Values that rounding would change: subnormals, infinities, a NaN payload, signed zero.
    base.flat[:6] = [1e-40, -0.0, np.inf, -np.inf, np.float32(np.nan), 65504.0]
    np_dtype = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}[dtype]
    path = tmp_path / "model.safetensors"
    save_file({"a": base.astype(np_dtype), "b": base[0].astype(np_dtype)}, str(path), metadata={"format": "pt"})
    fast = Checkpoint(tmp_path, use_safetensors=True)
    slow = Checkpoint(tmp_path, use_safetensors=False)
    entries = stnumpy.read_header(path)
    assert entries["a"].dtype == dtype and entries["a"].shape == (5, 3, 8)
    for ref in (TensorRef("a", (5, 3, 8)), TensorRef("a", (3, 8), index=4), TensorRef("b", (3, 8))):
        want, got = fast.load(ref), slow.load(ref)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert np.array_equal(bits(got), bits(want)), ref


def _export(src: Path, out: Path, precision: str, monkeypatch, fallback: bool) -> Path:
    with monkeypatch.context() as m:
        if fallback:
            m.setattr(reader, "safe_open", None)
        export(src, out, QuantConfig(precision), progress=False)
    return out


@pytest.mark.parametrize("arch,precision", [("qwen3_moe", "int4"), ("deepseek_v3", "fp32")])
def test_packages_are_byte_identical(tmp_path, monkeypatch, arch, precision):
    src = FIXTURES / arch
    same_tree(_export(src, tmp_path / "lib", precision, monkeypatch, False),
              _export(src, tmp_path / "numpy", precision, monkeypatch, True))


def test_bf16_checkpoint_is_byte_identical(tmp_path, monkeypatch):
    from safetensors.numpy import load_file

    src = copy_fixture("mixtral", tmp_path / "src")
    tensors = load_file(str(src / "model.safetensors"))
    save_file({k: v.astype(ml_dtypes.bfloat16) for k, v in tensors.items()}, str(src / "model.safetensors"))
    same_tree(_export(src, tmp_path / "lib", "int8", monkeypatch, False),
              _export(src, tmp_path / "numpy", "int8", monkeypatch, True))


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_input_gives_the_same_line(case, tmp_path, capsys, monkeypatch):
    arch, breaker = CASES[case]
    src = copy_fixture(arch, tmp_path / "src")
    expected = breaker(src)
    monkeypatch.setattr(reader, "safe_open", None)
    line = run_cli(capsys, src, tmp_path / "out")
    assert expected in line, line


@pytest.mark.parametrize("blob,message", [
    (b"\x01\x02", "shorter than its 8-byte header length"),
    ((1 << 40).to_bytes(8, "little") + b"{}", "does not fit the file"),
    ((2).to_bytes(8, "little") + b"[]", "not a JSON object"),
    ((4).to_bytes(8, "little") + b"\xff\xfe{}", "not JSON"),
])
def test_bad_headers_are_refused(tmp_path, blob, message):
    path = tmp_path / "x.safetensors"
    path.write_bytes(blob)
    with pytest.raises(stnumpy.FormatError, match=message):
        stnumpy.read_header(path)


@pytest.mark.parametrize("entry,message", [
    ({"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}, "8 bytes for shape"),
    ({"dtype": "F32", "shape": [1 << 62, 1 << 62], "data_offsets": [0, 4]}, "bytes for shape"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [0, 4096]}, "bytes for shape"),
    ({"dtype": "F32", "shape": [1024], "data_offsets": [0, 4096]}, "past the end of the file"),
    ({"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}, "bad dtype or shape"),
    ({"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}, "bad dtype or shape"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}, "bad data offsets"),
    ({"dtype": "F32", "shape": [1]}, "malformed header entry"),
])
def test_bad_entries_are_refused(tmp_path, entry, message):
    import json

    header = json.dumps({"t": entry}).encode()
    path = tmp_path / "x.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 16)
    with pytest.raises(stnumpy.FormatError, match=message):
        stnumpy.read_header(path)

