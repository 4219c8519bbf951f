//! Every string field of every contract type moed sends, fed a NUL and 10 MB, comes out of
//! [`ToWire`] valid and within its field's limit, checked on the encoded D-Bus message.

use std::collections::HashMap;

use serde::Serialize;
use zbus::message::Message;
use zbus::{DynamicType, OwnedVariant, Variant};

use super::*;
use crate::knowledge::{DocumentInfo, IngestSummary, SearchHit, SourceInfo};
use crate::plugins::{AlertRecord, PluginInfo};
use crate::types::{ExpertStatistics, GenerationInfo, ModelInfo, ModelSummary, ScoredToken};

const HOSTILE_BYTES: usize = 10 * 1024 * 1024;

/// A NUL, a control character, then 10 MB: longer than every limit.
fn hostile() -> String {
    let mut s = String::with_capacity(HOSTILE_BYTES + 2);
    s.push_str("\0\x1b");
    s.push_str(&"x".repeat(HOSTILE_BYTES));
    s
}

fn encoded<T: Serialize + DynamicType>(value: &T) -> Message {
    Message::method_call("/t", "T")
        .build(value)
        .expect("a bounded value encodes as a D-Bus message")
}

fn strings_in(v: &Variant<'_>, out: &mut Vec<String>) {
    match v {
        Variant::Str(s) => out.push(s.as_str().to_string()),
        Variant::Variant(inner) => strings_in(inner, out),
        Variant::Array(a) => a.inner().iter().for_each(|x| strings_in(x, out)),
        Variant::Structure(s) => s.fields().iter().for_each(|x| strings_in(x, out)),
        Variant::Dict(d) => d.iter().for_each(|(k, x)| {
            strings_in(k, out);
            strings_in(x, out);
        }),
        _ => {}
    }
}

/// Encodes a dictionary type and checks each string in it against its key's limit; every key
/// that holds a string must be in `limits`, and each such string (all were hostile) must show
/// the NUL replaced and the clip marker.
fn check_dict<T: Serialize + DynamicType>(value: &T, limits: &[(&str, usize)]) {
    let msg = encoded(value);
    assert!(msg.data().len() < 32 * 1024 * 1024, "message too large");
    let dict: HashMap<String, OwnedVariant> = msg.body().deserialize().expect("a{sv}");
    let mut seen = 0;
    for (key, v) in &dict {
        let mut found = Vec::new();
        strings_in(v, &mut found);
        if found.is_empty() {
            continue;
        }
        let max = limits
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, m)| *m)
            .unwrap_or_else(|| panic!("field '{key}' holds strings but has no limit here"));
        for s in found {
            check_string(key, &s, max);
            seen += 1;
        }
    }
    assert!(
        seen >= limits.len(),
        "{seen} strings for {} limits",
        limits.len()
    );
}

fn check_string(what: &str, s: &str, max: usize) {
    assert!(!s.contains('\0'), "{what}: NUL survived");
    assert!(s.len() <= max, "{what}: {} bytes > {max}", s.len());
    assert!(s.starts_with('\u{FFFD}'), "{what}: NUL not replaced");
    assert!(s.ends_with(" bytes]"), "{what}: no clip marker");
}

#[test]
fn generation_info() {
    let h = hostile();
    let info = GenerationInfo {
        request_id: h.clone(),
        model: h.clone(),
        finish_reason: h.clone(),
        text: h.clone(),
        thinking: h.clone(),
        error_name: Some(h.clone()),
        error_message: Some(h.clone()),
        alerts: Some(vec![(h.clone(), h.clone(), h.clone(), h.clone())]),
        sources: Some(vec![(h.clone(), h)]),
        ..GenerationInfo::default()
    }
    .to_wire();
    check_dict(
        &info,
        &[
            ("request_id", NAME),
            ("model", NAME),
            ("finish_reason", NAME),
            ("text", GENERATED_TEXT),
            ("thinking", GENERATED_TEXT),
            ("error_name", NAME),
            ("error_message", ERROR_MESSAGE),
            ("alerts", ALERT_MESSAGE),
            ("sources", DOCUMENT_ID),
        ],
    );
    let (severity, code, message, source) = &info.alerts.as_ref().expect("alerts")[0];
    check_string("alert severity", severity, NAME);
    check_string("alert code", code, ALERT_CODE);
    check_string("alert message", message, ALERT_MESSAGE);
    check_string("alert source", source, NAME);
    let (source, id) = &info.sources.as_ref().expect("sources")[0];
    check_string("source label", source, NAME);
    check_string("document id", id, DOCUMENT_ID);
}

#[test]
fn scored_tokens() {
    let tokens = vec![ScoredToken {
        id: 7,
        text: hostile(),
        has_logprob: true,
        logprob: -1.5,
    }]
    .to_wire();
    let msg = encoded(&tokens);
    let back: Vec<ScoredToken> = msg.body().deserialize().expect("a(usbd)");
    check_string("token", &back[0].text, TOKEN);
    assert_eq!((back[0].id, back[0].logprob), (7, -1.5));
}

#[test]
fn model_summary_and_info_and_stats() {
    let h = hostile();
    let summary = ModelSummary {
        name: h.clone(),
        path: h.clone(),
        architecture: h.clone(),
        error: Some(h.clone()),
        ..ModelSummary::default()
    };
    check_dict(
        &summary.to_wire(),
        &[
            ("name", NAME),
            ("path", PATH),
            ("architecture", NAME),
            ("error", ERROR_MESSAGE),
        ],
    );
    let info = ModelInfo {
        name: h.clone(),
        path: h.clone(),
        manifest_name: h.clone(),
        architecture: h.clone(),
        expert_precision: h.clone(),
        execution_provider: Some(h.clone()),
        ..ModelInfo::default()
    };
    check_dict(
        &info.to_wire(),
        &[
            ("name", NAME),
            ("path", PATH),
            ("manifest_name", NAME),
            ("architecture", NAME),
            ("expert_precision", NAME),
            ("execution_provider", NAME),
        ],
    );
    let stats = ExpertStatistics {
        model: h,
        ..ExpertStatistics::default()
    };
    check_dict(&stats.to_wire(), &[("model", NAME)]);
}

#[test]
fn plugin_info() {
    let h = hostile();
    let info = PluginInfo {
        name: h.clone(),
        version: h.clone(),
        kind: h.clone(),
        description: h.clone(),
        status: h.clone(),
        disabled_reason: Some(h.clone()),
        load_error: Some(h.clone()),
        origin: h.clone(),
        path: h.clone(),
        source: h.clone(),
        granted: vec![h.clone()],
        requested: vec![h.clone()],
        config: h.clone(),
        config_schema: h.clone(),
        pinned: vec![h.clone()],
        interface: h,
        ..PluginInfo::default()
    };
    check_dict(
        &info.to_wire(),
        &[
            ("name", NAME),
            ("version", NAME),
            ("kind", NAME),
            ("description", DESCRIPTION),
            ("status", NAME),
            ("disabled_reason", ALERT_MESSAGE),
            ("load_error", ERROR_MESSAGE),
            ("origin", NAME),
            ("path", PATH),
            ("source", PATH),
            ("granted", NAME),
            ("requested", NAME),
            ("config", JSON),
            ("config_schema", JSON),
            ("pinned", NAME),
            ("interface", NAME),
        ],
    );
}

#[test]
fn alert_record() {
    let h = hostile();
    let record = AlertRecord {
        request_id: Some(h.clone()),
        plugin: h.clone(),
        severity: h.clone(),
        code: h.clone(),
        message: h,
        ..AlertRecord::default()
    };
    check_dict(
        &vec![record].to_wire()[0],
        &[
            ("request_id", NAME),
            ("plugin", NAME),
            ("severity", NAME),
            ("code", ALERT_CODE),
            ("message", ALERT_MESSAGE),
        ],
    );
}

#[test]
fn knowledge_types() {
    let h = hostile();
    let hit = SearchHit {
        label: h.clone(),
        id: h.clone(),
        source: h.clone(),
        text: h.clone(),
        score: 1.0,
    };
    check_dict(
        &hit.to_wire(),
        &[
            ("label", NAME),
            ("id", DOCUMENT_ID),
            ("source", DOCUMENT_TITLE),
            ("text", DOCUMENT_TEXT),
        ],
    );
    let source = SourceInfo {
        label: h.clone(),
        kind: h.clone(),
        status: h.clone(),
        message: Some(h.clone()),
        ..SourceInfo::default()
    };
    check_dict(
        &source.to_wire(),
        &[
            ("label", NAME),
            ("kind", NAME),
            ("status", NAME),
            ("message", ERROR_MESSAGE),
        ],
    );
    let doc = DocumentInfo {
        label: h.clone(),
        name: h.clone(),
        format: h.clone(),
        sha256: h.clone(),
        ..DocumentInfo::default()
    };
    check_dict(
        &doc.to_wire(),
        &[
            ("label", NAME),
            ("name", PATH),
            ("format", NAME),
            ("sha256", NAME),
        ],
    );
    let summary = IngestSummary {
        job: h.clone(),
        label: h.clone(),
        failed: vec![(h.clone(), h.clone())],
        ..IngestSummary::default()
    };
    let summary = summary.to_wire();
    check_dict(
        &summary,
        &[("job", NAME), ("label", NAME), ("failed", PATH)],
    );
    check_string("failed name", &summary.failed[0].0, PATH);
    check_string("failed why", &summary.failed[0].1, ERROR_MESSAGE);
    let failures = source_failures(vec![(h.clone(), h)]);
    check_string("failure label", &failures[0].0, NAME);
    check_string("failure why", &failures[0].1, ERROR_MESSAGE);
}

#[test]
fn clean_values_pass_unchanged() {
    let info = GenerationInfo {
        request_id: "12".into(),
        model: "tiny".into(),
        finish_reason: "stop".into(),
        text: "Hello, world\n\ttabs and ünïcode stay".into(),
        alerts: Some(vec![(
            "warning".into(),
            "pii.email".into(),
            "an address".into(),
            "pii".into(),
        )]),
        ..GenerationInfo::default()
    };
    assert_eq!(info.clone().to_wire(), info);
    let hit = SearchHit {
        label: "docs".into(),
        id: "a.md#0".into(),
        source: "a.md".into(),
        text: "x".repeat(DOCUMENT_TEXT),
        score: 0.5,
    };
    assert_eq!(hit.clone().to_wire(), hit);
}
