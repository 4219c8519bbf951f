//! [`ToWire`] for every contract type moed sends: which limit bounds which field.
//!
//! Each impl destructures the whole value (no `..`), so adding a string field to a contract type
//! fails to compile until it is given a limit here.

use super::limits::{
    ALERT_CODE, ALERT_MESSAGE, DESCRIPTION, DOCUMENT_ID, DOCUMENT_TEXT, DOCUMENT_TITLE,
    ERROR_MESSAGE, GENERATED_TEXT, JSON, NAME, PATH, TOKEN,
};
use super::{ToWire, owned};
use crate::knowledge::{DocumentInfo, IngestSummary, SearchHit, SourceInfo};
use crate::plugins::{AlertRecord, PluginInfo};
use crate::types::{ExpertStatistics, GenerationInfo, ModelInfo, ModelSummary, ScoredToken};

/// What [`ToWire::map_strings`] applies to each string field.
type F<'a> = &'a mut dyn FnMut(String, usize) -> String;

/// An alert as the `alerts` of [`GenerationInfo`] carries it: severity, code, message, source.
type AlertTuple = (String, String, String, String);

fn opt(s: Option<String>, max: usize, f: F<'_>) -> Option<String> {
    s.map(|s| f(s, max))
}

fn list(v: Vec<String>, max: usize, f: F<'_>) -> Vec<String> {
    v.into_iter().map(|s| f(s, max)).collect()
}

/// An alert's severity, code, message and source (the plugin's name).
fn alert(a: AlertTuple, f: F<'_>) -> AlertTuple {
    let (severity, code, message, source) = a;
    (
        f(severity, NAME),
        f(code, ALERT_CODE),
        f(message, ALERT_MESSAGE),
        f(source, NAME),
    )
}

/// `(name, why)` pairs: a data source label or document name, and an error message.
fn failures(v: Vec<(String, String)>, name_max: usize, f: F<'_>) -> Vec<(String, String)> {
    v.into_iter()
        .map(|(name, why)| (f(name, name_max), f(why, ERROR_MESSAGE)))
        .collect()
}

/// `Knowledge.Search`'s `(label, why)` failures, bounded for the bus.
pub fn source_failures(v: Vec<(String, String)>) -> Vec<(String, String)> {
    failures(v, NAME, &mut owned)
}

impl ToWire for GenerationInfo {
    fn map_strings(self, f: F<'_>) -> Self {
        let GenerationInfo {
            request_id,
            model,
            finish_reason,
            text,
            thinking,
            prompt_tokens,
            completion_tokens,
            token_ids,
            queue_ms,
            first_token_ms,
            total_ms,
            error_name,
            error_message,
            alerts,
            sources,
        } = self;
        GenerationInfo {
            request_id: f(request_id, NAME),
            model: f(model, NAME),
            finish_reason: f(finish_reason, NAME),
            text: f(text, GENERATED_TEXT),
            thinking: f(thinking, GENERATED_TEXT),
            prompt_tokens,
            completion_tokens,
            token_ids,
            queue_ms,
            first_token_ms,
            total_ms,
            error_name: opt(error_name, NAME, f),
            error_message: opt(error_message, ERROR_MESSAGE, f),
            alerts: alerts.map(|v| v.into_iter().map(|a| alert(a, f)).collect()),
            sources: sources.map(|v| {
                v.into_iter()
                    .map(|(source, id)| (f(source, NAME), f(id, DOCUMENT_ID)))
                    .collect()
            }),
        }
    }
}

impl ToWire for ScoredToken {
    fn map_strings(self, f: F<'_>) -> Self {
        let ScoredToken {
            id,
            text,
            has_logprob,
            logprob,
        } = self;
        ScoredToken {
            id,
            text: f(text, TOKEN),
            has_logprob,
            logprob,
        }
    }
}

impl ToWire for ModelSummary {
    fn map_strings(self, f: F<'_>) -> Self {
        let ModelSummary {
            name,
            path,
            architecture,
            loaded,
            active,
            error,
        } = self;
        ModelSummary {
            name: f(name, NAME),
            path: f(path, PATH),
            architecture: f(architecture, NAME),
            loaded,
            active,
            error: opt(error, ERROR_MESSAGE, f),
        }
    }
}

impl ToWire for ModelInfo {
    fn map_strings(self, f: F<'_>) -> Self {
        let ModelInfo {
            name,
            path,
            manifest_name,
            architecture,
            format_version,
            hidden_size,
            vocab_size,
            num_layers,
            context_length,
            num_experts,
            top_k,
            expert_precision,
            total_bytes,
            loaded,
            active,
            execution_provider,
        } = self;
        ModelInfo {
            name: f(name, NAME),
            path: f(path, PATH),
            manifest_name: f(manifest_name, NAME),
            architecture: f(architecture, NAME),
            format_version,
            hidden_size,
            vocab_size,
            num_layers,
            context_length,
            num_experts,
            top_k,
            expert_precision: f(expert_precision, NAME),
            total_bytes,
            loaded,
            active,
            execution_provider: opt(execution_provider, NAME, f),
        }
    }
}

impl ToWire for ExpertStatistics {
    fn map_strings(self, f: F<'_>) -> Self {
        let ExpertStatistics {
            model,
            layers,
            cache_hits,
            cache_misses,
            cache_evictions,
            requests,
        } = self;
        ExpertStatistics {
            model: f(model, NAME),
            layers,
            cache_hits,
            cache_misses,
            cache_evictions,
            requests,
        }
    }
}

impl ToWire for PluginInfo {
    fn map_strings(self, f: F<'_>) -> Self {
        let PluginInfo {
            name,
            version,
            kind,
            description,
            enabled,
            always,
            status,
            disabled_reason,
            load_error,
            origin,
            path,
            source,
            installed_at,
            granted,
            requested,
            config,
            config_schema,
            pinned,
            interface,
            consecutive_failures,
            calls,
            failures,
            mean_call_us,
            compiled_from_cache,
        } = self;
        PluginInfo {
            name: f(name, NAME),
            version: f(version, NAME),
            kind: f(kind, NAME),
            description: f(description, DESCRIPTION),
            enabled,
            always,
            status: f(status, NAME),
            disabled_reason: opt(disabled_reason, ALERT_MESSAGE, f),
            load_error: opt(load_error, ERROR_MESSAGE, f),
            origin: f(origin, NAME),
            path: f(path, PATH),
            source: f(source, PATH),
            installed_at,
            // `source=LABEL` entries carry a label from the manifest.
            granted: list(granted, NAME, f),
            requested: list(requested, NAME, f),
            config: f(config, JSON),
            config_schema: f(config_schema, JSON),
            pinned: list(pinned, NAME, f),
            interface: f(interface, NAME),
            consecutive_failures,
            calls,
            failures,
            mean_call_us,
            compiled_from_cache,
        }
    }
}

impl ToWire for AlertRecord {
    fn map_strings(self, f: F<'_>) -> Self {
        let AlertRecord {
            seq,
            time,
            request_id,
            plugin,
            severity,
            code,
            message,
            uid,
        } = self;
        AlertRecord {
            seq,
            time,
            request_id: opt(request_id, NAME, f),
            plugin: f(plugin, NAME),
            severity: f(severity, NAME),
            code: f(code, ALERT_CODE),
            message: f(message, ALERT_MESSAGE),
            uid,
        }
    }
}

impl ToWire for SearchHit {
    fn map_strings(self, f: F<'_>) -> Self {
        let SearchHit {
            label,
            id,
            source,
            text,
            score,
        } = self;
        SearchHit {
            label: f(label, NAME),
            id: f(id, DOCUMENT_ID),
            source: f(source, DOCUMENT_TITLE),
            text: f(text, DOCUMENT_TEXT),
            score,
        }
    }
}

impl ToWire for SourceInfo {
    fn map_strings(self, f: F<'_>) -> Self {
        let SourceInfo {
            label,
            kind,
            status,
            message,
            documents,
            chunks,
            timeout_ms,
            max_rows,
            max_bytes,
        } = self;
        SourceInfo {
            label: f(label, NAME),
            kind: f(kind, NAME),
            status: f(status, NAME),
            message: opt(message, ERROR_MESSAGE, f),
            documents,
            chunks,
            timeout_ms,
            max_rows,
            max_bytes,
        }
    }
}

impl ToWire for DocumentInfo {
    fn map_strings(self, f: F<'_>) -> Self {
        let DocumentInfo {
            label,
            name,
            format,
            sha256,
            bytes,
            chunks,
            added,
        } = self;
        DocumentInfo {
            label: f(label, NAME),
            name: f(name, PATH),
            format: f(format, NAME),
            sha256: f(sha256, NAME),
            bytes,
            chunks,
            added,
        }
    }
}

impl ToWire for IngestSummary {
    fn map_strings(self, f: F<'_>) -> Self {
        let IngestSummary {
            job,
            label,
            added,
            replaced,
            unchanged,
            chunks,
            failed,
        } = self;
        IngestSummary {
            job: f(job, NAME),
            label: f(label, NAME),
            added,
            replaced,
            unchanged,
            chunks,
            failed: failures(failed, PATH, f),
        }
    }
}

#[cfg(test)]
#[path = "contract_types_tests.rs"]
mod tests;
