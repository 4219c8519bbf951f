"""What running on a distribution's Python (Debian 12: onnx 1.12, no safetensors) needs: an onnx older than
the IR version the exporter writes still checks each graph and leaves the same bytes; the module check
names the package to install; --progress-lines gives `moectl models import` one line per graph."""

from __future__ import annotations

import importlib.util

import onnx
import pytest
from conftest import FIXTURES
from test_stnumpy import same_tree

from moe_export import deps
from moe_export.cli import main
from moe_export.export import export
from moe_export.graphs import builder
from moe_export.quant import QuantConfig


def test_old_onnx_checks_an_ir8_copy_and_writes_ir10(tmp_path, monkeypatch):
    export(FIXTURES / "deepseek_v3", tmp_path / "new", QuantConfig("int4"), progress=False)
    checked = []
    real_check = onnx.checker.check_model

    def spy(path, full_check=False):
        checked.append(onnx.load(path, load_external_data=False).ir_version)
        return real_check(path, full_check=full_check)

    with monkeypatch.context() as m:
        m.setattr(onnx, "IR_VERSION", 8)
        m.setattr(onnx.checker, "check_model", spy)
        export(FIXTURES / "deepseek_v3", tmp_path / "old", QuantConfig("int4"), progress=False)
    assert checked and set(checked) == {8}
    same_tree(tmp_path / "new", tmp_path / "old")
    model = onnx.load(tmp_path / "old" / "graphs" / "embed.onnx", load_external_data=False)
    assert model.ir_version == builder.IR_VERSION == 10


def test_a_broken_graph_still_fails_the_checker_with_old_onnx(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx, "IR_VERSION", 8)
    g = builder.GraphWriter(tmp_path, "bad")
    x = g.input("x", builder.FLOAT, [1, 4])
    g.output(g.op("NoSuchOp", x), "y", builder.FLOAT, [1, 4])
    with pytest.raises(Exception, match="fails onnx.checker"):
        g.finish()


def test_no_module_is_missing_here():
    assert deps.problems() == []


def test_missing_and_old_modules_are_named(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    monkeypatch.setattr(deps, "REQUIRED", (*deps.REQUIRED, ("numpy", (99, 0), "python3-numpy")))
    with pytest.raises(SystemExit) as exit_info:
        deps.require()
    assert exit_info.value.code == deps.MISSING_EXIT
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == ("moe_export: error: python3-onnx is not installed (Python module 'onnx' missing): "
                        "apt install python3-onnx")
    assert lines[1].startswith("moe_export: error: python3-numpy ") and "numpy >= 99.0" in lines[1]
    assert len(lines) == 2


def test_several_missing_modules_make_one_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert deps.problems() == [
        "python3-numpy python3-onnx python3-tqdm are not installed (Python modules 'numpy', 'onnx', 'tqdm' "
        "missing): apt install python3-numpy python3-onnx python3-tqdm"]


@pytest.mark.parametrize("text,want", [("1.24.2", (1, 24)), ("2.4.6", (2, 4)), ("1.12.0", (1, 12)),
                                       ("1.17.0rc1", (1, 17)), ("4.64", (4, 64)), ("dev", (0,))])
def test_versions(text, want):
    assert deps._version(text) == want


def test_progress_lines(tmp_path, capsys):
    assert main([str(FIXTURES / "olmoe"), str(tmp_path / "out"), "--progress-lines"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == f"graph 1/{len(lines) - 1} embed", lines
    assert lines[-2].startswith(f"graph {len(lines) - 1}/{len(lines) - 1} ")
    assert lines[-1].startswith(f"wrote {tmp_path / 'out'} (")
    assert "exporting" not in captured.err  # no tqdm bar besides the lines
