//! [`ToWire`] for every contract type moed sends: which limit bounds which field.
//!
//! Each impl destructures the whole value (no `..`), so adding a field to a contract type fails to
//! compile until it is listed here, a string with its limit.

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

fn alert_list(v: Option<Vec<AlertTuple>>, f: F<'_>) -> Option<Vec<AlertTuple>> {
    v.map(|v| v.into_iter().map(|a| alert(a, f)).collect())
}

/// The documents an answer cites: `(source label, document id)`.
fn cited(v: Option<Vec<(String, String)>>, f: F<'_>) -> Option<Vec<(String, String)>> {
    v.map(|v| {
        v.into_iter()
            .map(|(source, id)| (f(source, NAME), f(id, DOCUMENT_ID)))
            .collect()
    })
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

/// `ToWire` for a record: `field: str LIMIT` bounds a string, `field: opt|list|failures LIMIT`
/// an optional string, a list of them or `(name, why)` pairs, `field: with HELPER` is given to
/// `HELPER(field, f)`; a bare `field` is kept. The record
/// is destructured whole, so a field left out fails to compile.
macro_rules! to_wire {
    ($ty:ident { $($field:ident $(: $how:ident $limit:ident)?),* $(,)? }) => {
        impl ToWire for $ty {
            fn map_strings(self, f: F<'_>) -> Self {
                let $ty { $($field),* } = self;
                $ty { $($field: to_wire!(@bound f, $field $(, $how $limit)?)),* }
            }
        }
    };
    (@bound $f:ident, $field:ident) => { $field };
    (@bound $f:ident, $field:ident, str $limit:ident) => { $f($field, $limit) };
    (@bound $f:ident, $field:ident, with $helper:ident) => { $helper($field, $f) };
    (@bound $f:ident, $field:ident, $how:ident $limit:ident) => { $how($field, $limit, $f) };
}

to_wire!(GenerationInfo {
    request_id: str NAME,
    model: str NAME,
    finish_reason: str NAME,
    text: str GENERATED_TEXT,
    thinking: str GENERATED_TEXT,
    prompt_tokens,
    completion_tokens,
    token_ids,
    queue_ms,
    first_token_ms,
    total_ms,
    error_name: opt NAME,
    error_message: opt ERROR_MESSAGE,
    alerts: with alert_list,
    sources: with cited,
    tool_calls: opt GENERATED_TEXT,
});

to_wire!(ScoredToken {
    id,
    text: str TOKEN,
    has_logprob,
    logprob,
});

to_wire!(ModelSummary {
    name: str NAME,
    path: str PATH,
    architecture: str NAME,
    loaded,
    active,
    error: opt ERROR_MESSAGE,
});

to_wire!(ModelInfo {
    name: str NAME,
    path: str PATH,
    manifest_name: str NAME,
    architecture: str NAME,
    format_version,
    hidden_size,
    vocab_size,
    num_layers,
    context_length,
    num_experts,
    top_k,
    expert_precision: str NAME,
    total_bytes,
    loaded,
    active,
    execution_provider: opt NAME,
});

to_wire!(ExpertStatistics {
    model: str NAME,
    layers,
    cache_hits,
    cache_misses,
    cache_evictions,
    requests,
    tokens,
    expert_load_bytes,
    expert_load_nanos,
    storage_read_bytes,
    prefetch_guessed,
    prefetch_guessed_right,
    prefetch_chosen,
});

to_wire!(PluginInfo {
    name: str NAME,
    version: str NAME,
    kind: str NAME,
    description: str DESCRIPTION,
    enabled,
    always,
    status: str NAME,
    disabled_reason: opt ALERT_MESSAGE,
    load_error: opt ERROR_MESSAGE,
    origin: str NAME,
    path: str PATH,
    source: str PATH,
    installed_at,
    // `source=LABEL` entries carry a label from the manifest.
    granted: list NAME,
    requested: list NAME,
    config: str JSON,
    config_schema: str JSON,
    pinned: list NAME,
    interface: str NAME,
    consecutive_failures,
    calls,
    failures,
    mean_call_us,
    compiled_from_cache,
});

to_wire!(AlertRecord {
    seq,
    time,
    request_id: opt NAME,
    plugin: str NAME,
    severity: str NAME,
    code: str ALERT_CODE,
    message: str ALERT_MESSAGE,
    uid,
});

to_wire!(SearchHit {
    label: str NAME,
    id: str DOCUMENT_ID,
    source: str DOCUMENT_TITLE,
    text: str DOCUMENT_TEXT,
    score,
});

to_wire!(SourceInfo {
    label: str NAME,
    kind: str NAME,
    status: str NAME,
    message: opt ERROR_MESSAGE,
    documents,
    chunks,
    timeout_ms,
    max_rows,
    max_bytes,
});

to_wire!(DocumentInfo {
    label: str NAME,
    name: str PATH,
    format: str NAME,
    sha256: str NAME,
    bytes,
    chunks,
    added,
});

to_wire!(IngestSummary {
    job: str NAME,
    label: str NAME,
    added,
    replaced,
    unchanged,
    chunks,
    failed: failures PATH,
});

#[cfg(test)]
#[path = "contract_types_tests.rs"]
mod tests;
