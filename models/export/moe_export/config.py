"""config.json -> a validated ModelSpec (see archs.py for the per-architecture rules)."""

from __future__ import annotations

import json
from pathlib import Path

from moe_export.archs import PARSERS, Cfg
from moe_export.errors import ExportError
from moe_export.spec import FfnSpec, MhaSpec, MlaSpec, ModelSpec, RoutingSpec

__all__ = ["ARCHITECTURES", "FfnSpec", "MhaSpec", "MlaSpec", "ModelSpec", "RoutingSpec", "load_spec",
           "spec_from_dict"]

# model_type -> accepted `architectures` entries
ARCHITECTURES = {
    "deepseek_v3": ("DeepseekV3ForCausalLM",),
    "deepseek_v2": ("DeepseekV2ForCausalLM",),
    "mixtral": ("MixtralForCausalLM",),
    "qwen3_moe": ("Qwen3MoeForCausalLM",),
    "qwen2_moe": ("Qwen2MoeForCausalLM",),
    "olmoe": ("OlmoeForCausalLM",),
}


def spec_from_dict(data: dict) -> ModelSpec:
    model_type = data.get("model_type")
    classes = data.get("architectures") or []
    if not isinstance(classes, list):
        raise ExportError(f"config.json: architectures must be a list, got {classes!r}")
    if model_type not in PARSERS:
        named = ", ".join(classes) or "none"
        raise ExportError(
            f"unknown architecture: model_type '{model_type}' (architectures: {named}); "
            f"supported: {', '.join(sorted(PARSERS))}"
        )
    for cls in classes:
        if cls not in ARCHITECTURES[model_type]:
            raise ExportError(
                f"unknown architecture '{cls}' for model_type '{model_type}' "
                f"(supported: {', '.join(ARCHITECTURES[model_type])})"
            )
    c = Cfg(data)
    parts = PARSERS[model_type](c)
    common = parts.pop("common")
    if not any(k == "moe" for k in parts["layer_kinds"]):
        raise ExportError("config.json: the model has no Mixture-of-Experts layer")
    return ModelSpec(
        architecture=model_type,
        architectures=tuple(classes) or ARCHITECTURES[model_type],
        hidden_size=common["hidden_size"],
        vocab_size=common["vocab_size"],
        num_layers=common["num_layers"],
        context_length=common["context_length"],
        rms_norm_eps=common["rms_norm_eps"],
        tie_word_embeddings=common["tie_word_embeddings"],
        raw=data,
        **parts,
    )


def load_spec(src_dir: Path) -> ModelSpec:
    path = Path(src_dir) / "config.json"
    if not path.is_file():
        raise ExportError(f"missing {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path}: expected a JSON object")
    return spec_from_dict(data)
