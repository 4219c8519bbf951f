"""manifest.json: tokenizer metadata from the checkpoint's files, the model description, file hashes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from moe_export import FORMAT_VERSION
from moe_export.config import MhaSpec, ModelSpec
from moe_export.errors import ExportError
from moe_export.quant import PackageQuant

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")
_GENERATION_KEYS = ("temperature", "top_p", "top_k")


def _read_json(path: Path, required: bool = False) -> dict | None:
    if not path.is_file():
        if required:
            raise ExportError(f"missing {path}")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path}: expected a JSON object")
    return data


def _token_text(value) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _ids_list(value) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


class _Vocab:
    """token text <-> id from tokenizer.json (added tokens first, then the model's vocabulary)."""

    def __init__(self, tok: dict):
        self.by_text: dict[str, int] = {}
        vocab = (tok.get("model") or {}).get("vocab")
        if isinstance(vocab, dict):
            self.by_text.update({k: v for k, v in vocab.items() if isinstance(v, int)})
        elif isinstance(vocab, list):  # Unigram: [[piece, score], ...]
            self.by_text.update({p[0]: i for i, p in enumerate(vocab) if isinstance(p, list) and p})
        for added in tok.get("added_tokens") or []:
            if isinstance(added, dict) and isinstance(added.get("content"), str):
                self.by_text[added["content"]] = added.get("id")
        self.by_id = {v: k for k, v in self.by_text.items()}


def _post_processor_adds(pp, text: str | None) -> bool:
    if not isinstance(pp, dict) or text is None:
        return False
    if pp.get("type") == "Sequence":
        return any(_post_processor_adds(p, text) for p in pp.get("processors") or [])
    if pp.get("type") == "TemplateProcessing":
        single = pp.get("single") or []
        return bool(single) and (single[0].get("SpecialToken") or {}).get("id") == text
    return False


def tokenizer_section(src: Path, cfg: dict) -> dict:
    """tokenizer, special_tokens, chat_template, thinking, generation and stop ids for the manifest."""
    tok = _read_json(src / "tokenizer.json", required=True)
    tcfg = _read_json(src / "tokenizer_config.json") or {}
    gen = _read_json(src / "generation_config.json") or {}
    vocab = _Vocab(tok)

    def special(key: str) -> dict | None:
        text = _token_text(tcfg.get(f"{key}_token"))
        if text is None:
            ids = _ids_list(cfg.get(f"{key}_token_id"))
            text = vocab.by_id.get(ids[0]) if ids else None
        if text is None:
            return None
        if text not in vocab.by_text:
            raise ExportError(f"tokenizer_config.json: {key}_token '{text}' is not in tokenizer.json")
        return {"id": vocab.by_text[text], "text": text}

    specials = {key: special(key) for key in ("bos", "eos", "pad")}
    bos_text = specials["bos"]["text"] if specials["bos"] else None
    by_tokenizer = _post_processor_adds(tok.get("post_processor"), bos_text)
    add_bos = tcfg.get("add_bos_token")
    if not isinstance(add_bos, bool):
        add_bos = by_tokenizer

    template = tcfg.get("chat_template")
    if isinstance(template, list):  # [{"name": ..., "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    if not isinstance(template, str) and (src / "chat_template.jinja").is_file():
        template = (src / "chat_template.jinja").read_text(encoding="utf-8")
    if not isinstance(template, str):
        template = None

    thinking = None
    if ("<think>" in vocab.by_text and "</think>" in vocab.by_text) or (
        template is not None and "<think>" in template and "</think>" in template
    ):
        thinking = {"start": "<think>", "end": "</think>"}

    stop = []
    for ids in (_ids_list(gen.get("eos_token_id")), _ids_list(cfg.get("eos_token_id")),
                [specials["eos"]["id"]] if specials["eos"] else []):
        stop += [i for i in ids if i not in stop]

    return {
        "tokenizer": {"file": "tokenizer.json", "add_bos_token": add_bos, "bos_added_by_tokenizer": by_tokenizer},
        "special_tokens": specials,
        "stop_token_ids": stop,
        "chat_template": template,
        "thinking": thinking,
        "generation": {k: gen[k] for k in _GENERATION_KEYS if isinstance(gen.get(k), (int, float))},
    }


def precision_section(pq: PackageQuant, kinds: list[str]) -> dict:
    """manifest.precision: `experts` and its block parameters as in format 1, `dense` the attention's
    storage, and `graphs` the storage of every graph kind the package holds."""
    qc = pq.experts
    quantized = qc.bits is not None
    return {"activations": "fp32", "dense": pq.kind("attn").precision, "experts": qc.precision,
            "block_size": qc.block_size if quantized else None,
            "accuracy_level": qc.accuracy_level if quantized else None,
            "graphs": {kind: pq.kind(kind).manifest_entry() for kind in kinds}}


def model_section(spec: ModelSpec, name: str, pq: PackageQuant, cache: list[dict], kinds: list[str]) -> dict:
    a = spec.attention
    # FORMAT.md "KV cache layouts": MHA graphs read the engine's head-major buffer in place.
    layout = "head_major" if isinstance(a, MhaSpec) else "token_major"
    attention = {"kind": a.kind, "num_heads": a.num_heads, "cache": cache, "cache_layout": layout}
    # FORMAT.md "KV cache types": a float16 cache is a format 3 key; other packages stay format 2,
    # which older moed reads.
    half = isinstance(a, MhaSpec) and pq.cache == "float16"
    if half:
        attention["cache_dtype"] = "float16"
    if isinstance(a, MhaSpec):
        attention.update(num_kv_heads=a.num_kv_heads, head_dim=a.head_dim)
    else:
        attention.update(kv_lora_rank=a.kv_lora_rank, qk_rope_head_dim=a.qk_rope_head_dim,
                         qk_nope_head_dim=a.qk_nope_head_dim, v_head_dim=a.v_head_dim)
    r = spec.routing
    return {
        "format": "moed-package",
        "format_version": FORMAT_VERSION if half else 2,
        "name": name,
        "architecture": spec.architecture,
        "source": {"architectures": list(spec.architectures), "model_type": spec.architecture},
        "dims": {"hidden_size": spec.hidden_size, "vocab_size": spec.vocab_size, "num_layers": spec.num_layers,
                 "context_length": spec.context_length},
        "precision": precision_section(pq, kinds),
        "attention": attention,
        "routing": {"num_experts": r.num_experts, "top_k": r.top_k, "scoring": r.scoring,
                    "group_limit": r.group_limit, "norm_topk_prob": r.norm_topk_prob, "norm_eps": r.norm_eps,
                    "routed_scaling_factor": r.routed_scaling_factor},
    }


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_table(out: Path) -> dict:
    files = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"):
        rel = path.relative_to(out).as_posix()
        files[rel] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return files


def write(out: Path, manifest: dict) -> Path:
    path = out / "manifest.json"
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
