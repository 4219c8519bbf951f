//! The `--json` shapes of the contract's result types (field names as in CONTRACT.md).

use moed_dbus::{ExpertStatistics, GenerationInfo, ModelInfo, ModelSummary, ScoredToken};
use serde_json::{Value, json};

pub fn generation_info(info: &GenerationInfo) -> Value {
    let mut value = json!({
        "request_id": info.request_id,
        "model": info.model,
        "finish_reason": info.finish_reason,
        "text": info.text,
        "thinking": info.thinking,
        "prompt_tokens": info.prompt_tokens,
        "completion_tokens": info.completion_tokens,
        "token_ids": info.token_ids,
        "queue_ms": info.queue_ms,
        "first_token_ms": info.first_token_ms,
        "total_ms": info.total_ms,
    });
    // Keys are always present, null when they do not apply (one rule for every --json shape).
    let sources = info.sources.as_ref().map(|sources| {
        sources
            .iter()
            .map(|(source, id)| json!({"source": source, "id": id}))
            .collect::<Vec<Value>>()
    });
    if let Value::Object(map) = &mut value {
        map.insert("error_name".into(), json!(info.error_name));
        map.insert("error_message".into(), json!(info.error_message));
        map.insert("sources".into(), json!(sources));
    }
    value
}

pub fn model_summary(model: &ModelSummary) -> Value {
    json!({
        "name": model.name,
        "path": model.path,
        "architecture": model.architecture,
        "loaded": model.loaded,
        "active": model.active,
        "error": model.error,
    })
}

pub fn model_info(info: &ModelInfo) -> Value {
    json!({
        "name": info.name,
        "path": info.path,
        "manifest_name": info.manifest_name,
        "architecture": info.architecture,
        "format_version": info.format_version,
        "hidden_size": info.hidden_size,
        "vocab_size": info.vocab_size,
        "num_layers": info.num_layers,
        "context_length": info.context_length,
        "num_experts": info.num_experts,
        "top_k": info.top_k,
        "expert_precision": info.expert_precision,
        "total_bytes": info.total_bytes,
        "loaded": info.loaded,
        "active": info.active,
        "execution_provider": info.execution_provider,
    })
}

pub fn scored_tokens(tokens: &[ScoredToken], model: Option<&str>) -> Value {
    let summary = crate::cmd::score::Summary::of(tokens);
    json!({
        "model": model,
        "tokens": tokens.iter().map(|t| json!({
            "id": t.id,
            "text": t.text,
            "logprob": t.has_logprob.then_some(t.logprob),
        })).collect::<Vec<_>>(),
        "scored_tokens": summary.count,
        "total_logprob": summary.total,
        "mean_logprob": summary.mean(),
        "perplexity": summary.perplexity(),
    })
}

pub fn expert_stats(stats: &ExpertStatistics) -> Value {
    json!({
        "model": stats.model,
        "requests": stats.requests,
        "cache": {
            "hits": stats.cache_hits,
            "misses": stats.cache_misses,
            "evictions": stats.cache_evictions,
            "hit_rate": crate::heatmap::hit_rate(stats),
            "load_bytes": stats.expert_load_bytes,
            "load_seconds": stats.expert_load_nanos as f64 / 1e9,
        },
        "tokens": stats.tokens,
        "storage_read_bytes": stats.storage_read_bytes,
        "prefetch": {
            "guessed": stats.prefetch_guessed,
            "guessed_right": stats.prefetch_guessed_right,
            "chosen": stats.prefetch_chosen,
        },
        "layers": stats.layers.iter().map(|l| json!({
            "layer": l.layer,
            "counts": l.counts,
            "total": l.counts.iter().sum::<u64>(),
        })).collect::<Vec<_>>(),
    })
}
