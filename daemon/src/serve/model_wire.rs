//! The D-Bus shapes of the model registry's answers (`Models.List`, `Models.Info`,
//! `Models.ExpertStats`), built from what `moed_service::models` reports.

use moed_dbus::{ExpertStatistics, LayerActivations, ModelInfo, ModelSummary};
use moed_service::models::{ModelDetails, ModelEntry};

use crate::state::PersistedStats;

/// One row of `Models.List`.
pub fn summary(entry: ModelEntry) -> ModelSummary {
    ModelSummary {
        name: entry.name,
        path: entry.path.display().to_string(),
        architecture: entry.architecture,
        loaded: entry.loaded,
        active: entry.active,
        error: entry.error,
    }
}

/// `Models.Info`: what the package's manifest says, and its state in the daemon.
pub fn info(details: ModelDetails) -> ModelInfo {
    let m = details.package.manifest();
    let routing = m.routing.as_ref();
    ModelInfo {
        name: details.name,
        path: details.dir.display().to_string(),
        manifest_name: m.name.clone(),
        architecture: m.architecture.clone(),
        format_version: m.format_version as u32,
        hidden_size: m.dims.hidden_size as u32,
        vocab_size: m.dims.vocab_size as u32,
        num_layers: m.dims.num_layers as u32,
        context_length: m.dims.context_length as u32,
        num_experts: routing.map_or(0, |r| r.num_experts as u32),
        top_k: routing.map_or(0, |r| r.top_k as u32),
        expert_precision: m.precision.experts.clone(),
        total_bytes: m.files.values().map(|f| f.bytes).sum(),
        loaded: details.loaded,
        active: details.active,
        execution_provider: details.execution_provider,
    }
}

/// Turns stored statistics into the D-Bus result (MoE layers only).
pub fn statistics(model: &str, stats: &PersistedStats) -> ExpertStatistics {
    ExpertStatistics {
        model: model.to_string(),
        layers: stats
            .activations
            .iter()
            .enumerate()
            .filter(|(_, row)| !row.is_empty())
            .map(|(layer, row)| LayerActivations {
                layer: layer as u32,
                counts: row.clone(),
            })
            .collect(),
        cache_hits: stats.cache_hits,
        cache_misses: stats.cache_misses,
        cache_evictions: stats.cache_evictions,
        requests: stats.requests,
        tokens: stats.tokens,
        expert_load_bytes: stats.expert_load_bytes,
        expert_load_nanos: stats.expert_load_nanos,
        storage_read_bytes: stats.storage_read_bytes,
        prefetch_guessed: stats.prefetch_guessed,
        prefetch_guessed_right: stats.prefetch_guessed_right,
        prefetch_chosen: stats.prefetch_chosen,
    }
}
