"""The synthetic benchmark generator writes a valid, runnable, reproducible package."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from refrunner import Package, score
from tokenizers import Tokenizer

from moe_export.synth import main

SMALL = ["--layers", "2", "--hidden", "128", "--ffn", "64", "--experts", "8", "--top-k", "2", "--heads", "4",
         "--kv-heads", "2", "--head-dim", "32", "--vocab", "300", "--quiet"]


@pytest.fixture(scope="module")
def synth_pkg(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "pkg"
    assert main([str(out), *SMALL]) == 0
    return out


def test_manifest_and_graphs(synth_pkg):
    m = json.loads((synth_pkg / "manifest.json").read_text())
    assert (m["architecture"], m["attention"]["kind"], m["routing"]["scoring"]) == ("qwen3_moe", "mha", "softmax")
    assert m["precision"]["experts"] == "int4" and m["precision"]["block_size"] == 32
    assert m["dims"] == {"hidden_size": 128, "vocab_size": 300, "num_layers": 2, "context_length": 4096}
    assert [len(layer["experts"]) for layer in m["layers"]] == [8, 8]
    assert m["special_tokens"]["eos"] == {"id": 259, "text": "<|im_end|>"}
    for rel in m["files"]:
        if rel.endswith(".onnx"):
            onnx.checker.check_model(str(synth_pkg / rel), full_check=True)


def test_runs_and_cache_is_consistent(synth_pkg):
    pkg = Package(synth_pkg)
    ids = [256, 72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100]
    full = np.array(score(pkg, ids)[1:])
    step = np.array(score(pkg, ids, chunks=[1] * len(ids))[1:])
    assert np.all(np.isfinite(full)) and np.abs(full - step).max() < 2e-5


def test_tokenizer_is_byte_level(synth_pkg):
    tok = Tokenizer.from_file(str(synth_pkg / "tokenizer.json"))
    text = "naïve café — 東京 <|im_end|>"
    enc = tok.encode(text)
    assert enc.ids[-1] == 259 and all(i < 256 for i in enc.ids[:-1])
    assert tok.decode(enc.ids, skip_special_tokens=False) == text


def test_reproducible(tmp_path, synth_pkg):
    assert main([str(tmp_path / "again"), *SMALL]) == 0
    first = json.loads((synth_pkg / "manifest.json").read_text())["files"]
    assert json.loads((tmp_path / "again" / "manifest.json").read_text())["files"] == first


def test_vocab_too_small(tmp_path, capsys):
    assert main([str(tmp_path / "x"), *SMALL[:-3], "--vocab", "100", "--quiet"]) == 2
    assert "--vocab must be at least 262" in capsys.readouterr().err
