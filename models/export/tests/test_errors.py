"""Broken inputs give one specific line `moe_export: error: ...` and exit status 2, never a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES
from safetensors.numpy import load_file, save_file

from moe_export.cli import main

FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json")


def copy_fixture(arch: str, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in FILES:
        shutil.copyfile(FIXTURES / arch / name, dst / name)
    return dst


def reshard(src: Path, shards: int) -> list[str]:
    """Split model.safetensors into HF-style shards with an index; returns the shard names."""
    tensors = load_file(str(src / "model.safetensors"))
    (src / "model.safetensors").unlink()
    names = sorted(tensors)
    files = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    weight_map = {}
    for i, fname in enumerate(files):
        part = names[i::shards]
        save_file({n: tensors[n] for n in part}, str(src / fname))
        weight_map.update({n: fname for n in part})
    (src / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return files


def rewrite(src: Path, edit) -> None:
    tensors = load_file(str(src / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(src / "model.safetensors"))


def edit_config(src: Path, **changes) -> None:
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(changes)
    (src / "config.json").write_text(json.dumps(cfg))


def run_cli(capsys, src: Path, out: Path, *extra: str) -> str:
    rc = main([str(src), str(out), "--quiet", *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("moe_export: error: "), err
    assert not (out / "manifest.json").exists()
    return lines[0]


def _missing_shard(d):
    files = reshard(d, 3)
    (d / files[1]).unlink()
    return "missing shard 'model-00002-of-00003.safetensors'"


def _truncated(d):
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    return "truncated or corrupt safetensors file 'model.safetensors'"


def _truncated_shard(d):
    files = reshard(d, 2)
    data = (d / files[0]).read_bytes()
    (d / files[0]).write_bytes(data[:-100])
    return f"truncated or corrupt safetensors file '{files[0]}'"


def _truncated_header(d):
    (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:6])
    return "truncated or corrupt safetensors file 'model.safetensors'"


def _renamed(d):
    name = "model.layers.1.mlp.experts.3.up_proj.weight"
    rewrite(d, lambda t: t.__setitem__("model.layers.1.mlp.experts.3.upproj.weight", t.pop(name)))
    return f"tensor '{name}' is missing from the checkpoint"


def _wrong_shape(d):
    name = "model.layers.1.self_attn.q_a_proj.weight"
    rewrite(d, lambda t: t.__setitem__(name, t[name][:, :63].copy()))
    return f"tensor '{name}' has shape [24, 63], expected [24, 64]"


def _wrong_expert_shape(d):
    name = "model.layers.2.mlp.experts.7.down_proj.weight"
    rewrite(d, lambda t: t.__setitem__(name, np.zeros((64, 31), np.float32)))
    return f"tensor '{name}' has shape [64, 31], expected [64, 32]"


def _not_in_listed_shard(d):
    reshard(d, 2)
    index = json.loads((d / "model.safetensors.index.json").read_text())
    name = "model.layers.0.mlp.up_proj.weight"
    other = [f for f in set(index["weight_map"].values()) if f != index["weight_map"][name]][0]
    index["weight_map"][name] = other
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    return f"tensor '{name}' is listed in model.safetensors.index.json for shard '{other}'"


def _bad_dtype(d):
    name = "model.norm.weight"
    rewrite(d, lambda t: t.__setitem__(name, t[name].astype(np.int32)))
    return f"tensor '{name}' has dtype I32"


def _unknown_arch(d):
    edit_config(d, model_type="llama", architectures=["LlamaForCausalLM"])
    return "unknown architecture: model_type 'llama' (architectures: LlamaForCausalLM)"


def _unknown_class(d):
    edit_config(d, architectures=["DeepseekV3ForSequenceClassification"])
    return "unknown architecture 'DeepseekV3ForSequenceClassification' for model_type 'deepseek_v3'"


def _rope(rope_type):
    def edit(d):
        cfg = json.loads((d / "config.json").read_text())
        cfg["rope_parameters"]["rope_type"] = rope_type
        (d / "config.json").write_text(json.dumps(cfg))
        return f"unsupported rope scaling type '{rope_type}'"
    return edit


def _legacy_rope_scaling(d):
    edit_config(d, rope_scaling={"type": "longrope", "short_factor": [1.0], "long_factor": [1.0]})
    return "unsupported rope scaling type 'longrope'"


def _gelu(d):
    edit_config(d, hidden_act="gelu")
    return "hidden_act 'gelu' is not supported"


def _quantized(d):
    edit_config(d, quantization_config={"quant_method": "fp8", "weight_block_size": [128, 128]})
    return "quantized checkpoints are not supported (quantization_config 'fp8')"


def _no_config(d):
    (d / "config.json").unlink()
    return "missing " + str(d / "config.json")


def _no_tokenizer(d):
    (d / "tokenizer.json").unlink()
    return "missing " + str(d / "tokenizer.json")


CASES = {
    "missing_shard": ("deepseek_v3", _missing_shard),
    "truncated_file": ("deepseek_v3", _truncated),
    "truncated_shard": ("qwen3_moe", _truncated_shard),
    "truncated_header": ("mixtral", _truncated_header),
    "renamed_tensor": ("deepseek_v3", _renamed),
    "wrong_shape": ("deepseek_v3", _wrong_shape),
    "wrong_expert_shape": ("deepseek_v3", _wrong_expert_shape),
    "index_points_to_wrong_shard": ("deepseek_v3", _not_in_listed_shard),
    "non_float_dtype": ("olmoe", _bad_dtype),
    "unknown_architecture": ("deepseek_v3", _unknown_arch),
    "unknown_architecture_class": ("deepseek_v3", _unknown_class),
    "rope_dynamic": ("deepseek_v3", _rope("dynamic")),
    "rope_unknown": ("qwen3_moe", _rope("fancy")),
    "rope_legacy_longrope": ("mixtral", _legacy_rope_scaling),
    "hidden_act": ("qwen2_moe", _gelu),
    "quantized_checkpoint": ("deepseek_v3", _quantized),
    "no_config": ("olmoe", _no_config),
    "no_tokenizer": ("olmoe", _no_tokenizer),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_input_is_named(case, tmp_path, capsys):
    arch, breaker = CASES[case]
    src = copy_fixture(arch, tmp_path / "src")
    expected = breaker(src)
    line = run_cli(capsys, src, tmp_path / "out")
    assert expected in line, line


def test_sliding_window_is_refused(tmp_path, capsys):
    src = copy_fixture("mixtral", tmp_path / "src")
    edit_config(src, sliding_window=128)
    assert "sliding_window 128" in run_cli(capsys, src, tmp_path / "out")
    src2 = copy_fixture("qwen3_moe", tmp_path / "src2")
    edit_config(src2, use_sliding_window=True, sliding_window=64)
    assert "sliding_window 64 (use_sliding_window) is not supported" in run_cli(capsys, src2, tmp_path / "out2")


def test_sliding_window_longer_than_context_is_harmless(tmp_path, capsys):
    src = copy_fixture("mixtral", tmp_path / "src")
    edit_config(src, sliding_window=4096)  # context is 256: the window never applies
    assert main([str(src), str(tmp_path / "out"), "--quiet"]) == 0


def test_non_empty_output_directory(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    line = run_cli(capsys, FIXTURES / "mixtral", out)
    assert "is not empty (use --force to overwrite)" in line
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("flag,value,message", [
    ("--block-size", "24", "block size must be a power of two >= 16, got 24"),
    ("--quant", "int3", "invalid choice: 'int3'"),
    ("--accuracy-level", "7", "accuracy level must be 0..4, got '7'"),
])
def test_bad_options(tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exc:
        main([str(FIXTURES / "mixtral"), str(tmp_path / "out"), flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "moe_export: error:" in err and message in err


def test_entry_point_prints_one_line_without_traceback(tmp_path):
    src = copy_fixture("deepseek_v3", tmp_path / "src")
    _missing_shard(src)
    proc = subprocess.run([sys.executable, "-m", "moe_export", str(src), str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"moe_export: error: missing shard 'model-00002-of-00003.safetensors' in {src}: "
        "model.safetensors.index.json lists "
        + proc.stderr.split(" lists ")[1].strip()
    ]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
