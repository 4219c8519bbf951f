//! Hostile plugin strings: NUL bytes, newlines, terminal escapes and multi-megabyte strings in
//! every string a plugin can hand the host (errors, reject reasons, alert codes and messages, log
//! and stderr lines, document ids, sources and texts) come back NUL-free and clipped to the
//! `moed_wire` limits, one line where they are logged; gate weights that would overflow the
//! engine are refused; normal calls keep succeeding meanwhile.

mod util;

use std::sync::{Mutex, OnceLock};

use moed_plugins::{
    CallFailure, FilterError, FilterPlugin, GateAnswer, GateCall, GatePlugin, RetrievalPlugin,
};
use moed_wire::limits;
use serde_json::json;
use util::*;

const MIB: usize = 1 << 20;
/// What the `stderr-huge` modes write: the guest's stderr goes to the host 4 KiB per call, and
/// 8 MiB takes longer than the time limits in a debug build (such a plugin is stopped by them).
const STDERR: usize = 2 * MIB;
const E: usize = 16;
const K: usize = 4;

/// NUL-free, at most `max` bytes, and clipped (the wire's marker).
fn clipped(what: &str, s: &str, max: usize) {
    assert!(s.len() <= max, "{what}: {} bytes > {max}", s.len());
    assert!(!s.contains('\0'), "{what}: a NUL");
    assert!(s.contains(" bytes]"), "{what}: no clip marker: {s}");
}

/// [`clipped`], and one line.
fn one_line(what: &str, s: &str, max: usize) {
    clipped(what, s, max);
    assert!(!s.contains('\n') && !s.contains('\x1b'), "{what}: {s}");
}

/// Log records of the guests' log lines (the host's `moed_plugins::guest` target).
struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.target().starts_with("moed_plugins")
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            self.0.lock().expect("lock").push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

fn captured() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(c).expect("the only logger");
        log::set_max_level(log::LevelFilter::Trace);
        c
    })
}

/// Time limits far above what the multi-megabyte strings cost even in a debug build on a loaded
/// 2-core machine: these tests check what the host makes of the strings, not how fast they come
/// (the runaway cases are in `hostile.rs`).
fn roomy_options() -> moed_plugins::HostOptions {
    let mut o = test_options();
    o.gate.time = std::time::Duration::from_secs(20);
    o.filter.time = std::time::Duration::from_secs(20);
    o.retrieval.time = std::time::Duration::from_secs(20);
    o
}

fn filter(
    mode: &str,
    size: usize,
) -> (
    FilterPlugin,
    moed_plugins::PluginHost,
    std::sync::Arc<Recorder>,
) {
    let (host, rec) = host_recording(roomy_options());
    let plugin = host
        .load(&spec_with(
            "hostile-filter-misbehave",
            &[("mode", json!(mode)), ("size", json!(size))],
        ))
        .expect("load");
    (FilterPlugin::new(&plugin).expect("filter"), host, rec)
}

#[test]
fn filter_rejections_and_errors_come_back_clipped() {
    for size in [8 * MIB, 40 * MIB] {
        let (f, host, rec) = filter("reject-huge", size);
        let (r, ok) = with_normal_traffic(&host, || {
            (f.check_input("héllo", &[]), f.output(&[]).push("héllo wö"))
        });
        assert!(ok > 0);
        for (stage, r) in [("prompt", r.0.map(|_| ())), ("response", r.1.map(|_| ()))] {
            match r {
                Err(FilterError::Rejected { reason, .. }) => {
                    one_line(stage, &reason, limits::ALERT_MESSAGE);
                    assert!(
                        reason.starts_with("hostile\u{FFFD}payload\\n[forged]"),
                        "{reason}"
                    );
                }
                other => panic!("{size} {stage}: {other:?}"),
            }
        }
        assert!(rec.failures.lock().expect("lock").is_empty());

        let (f, _host, rec) = filter("error-huge", size);
        for e in [
            f.check_input("héllo", &[]).map(|_| ()),
            f.output(&[]).push("héllo").map(|_| ()),
        ] {
            let e = e.expect_err("fails closed");
            let FilterError::Failed {
                failure: CallFailure::Plugin(m),
                ..
            } = &e
            else {
                panic!("{e:?}")
            };
            one_line("error", m, limits::PLUGIN_DETAIL);
            assert!(e.to_string().len() <= limits::ERROR_MESSAGE);
        }
        for failure in rec.failures.lock().expect("lock").iter() {
            one_line("failure event", &failure.message, limits::ALERT_MESSAGE);
        }
    }
}

#[test]
fn filter_alerts_logs_and_stderr_are_bounded() {
    let logs = captured();
    let (f, _host, rec) = filter("alert-huge", 8 * MIB);
    let out = f.check_input("hello", &[]).expect("allowed");
    assert_eq!(out.alerts.len(), 1);
    let a = &out.alerts[0];
    one_line("alert code", &a.code, limits::ALERT_CODE);
    clipped("alert message", &a.message, limits::ALERT_MESSAGE);
    // The audit log gets the same bounded alert.
    assert_eq!(rec.alerts.lock().expect("lock")[0], *a);

    let (f, _host, _) = filter("log-huge", 8 * MIB);
    f.check_input("hello", &[]).expect("allowed");
    let lines: Vec<String> = logs
        .0
        .lock()
        .expect("lock")
        .iter()
        .filter(|l| l.contains("filter-misbehave") && l.contains("hostile"))
        .cloned()
        .collect();
    assert!(!lines.is_empty());
    for l in &lines {
        // The plugin's name and the wire's limit for the line itself.
        one_line("log line", l, limits::LOG_LINE + 64);
    }

    let (f, _host, _) = filter("stderr-huge", STDERR);
    match f.check_input("hello", &[]) {
        Err(FilterError::Failed {
            failure: CallFailure::Trap(m),
            ..
        }) => {
            assert!(m.len() <= limits::PLUGIN_DETAIL && !m.contains('\0') && !m.contains('\n'));
            // The end of stderr, where the panic message is, is what is quoted.
            assert!(
                m.contains("its stderr: …") && m.contains("deliberate panic"),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn nul_in_redacted_and_released_text_is_replaced() {
    let (f, _host, _) = filter("nul-text", 0);
    let redacted = f.check_input("hello", &[]).expect("redacts").redacted;
    assert_eq!(redacted.as_deref(), Some("hello\u{FFFD}"));
    let mut out = f.output(&[]);
    let released = out.push("a b c").expect("passes").text + &out.finish().expect("end").text;
    assert_eq!(released, "a\u{FFFD}b\u{FFFD}c");
}

fn gate_route(
    mode: &str,
    size: usize,
) -> (Result<GateAnswer, CallFailure>, std::sync::Arc<Recorder>) {
    let (host, rec) = host_recording(roomy_options());
    let plugin = host
        .load(&spec_with(
            "hostile-gate-misbehave",
            &[("mode", json!(mode)), ("size", json!(size))],
        ))
        .expect("load");
    let gate = GatePlugin::bind(&plugin, qwen3(E, K, 2)).expect("bind");
    let logits = Lcg(5).logits(3 * E);
    let call = GateCall {
        layer: 0,
        num_tokens: 3,
        num_experts: E,
        top_k: K,
        logits: &logits,
        params: &[],
    };
    let (r, ok) = with_normal_traffic(&host, || {
        let mut out = GateAnswer::default();
        gate.route(&call, &mut out).map(|()| out)
    });
    assert!(ok > 0);
    (r, rec)
}

#[test]
fn gate_weights_must_be_bounded() {
    for (mode, want) in [
        ("max-weight", "is not a number from 0 to 10000"),
        ("infinite-weight", "weight inf of expert"),
        ("nan", "weight NaN of expert"),
        ("negative", "weight -0.5 of expert"),
    ] {
        match gate_route(mode, 0).0 {
            Err(CallFailure::BadAnswer(m)) => assert!(m.contains(want), "{mode}: {m}"),
            other => panic!("{mode}: {other:?}"),
        }
    }
    // At the bound: answered as given.
    let answer = gate_route("big-weight", 0).0.expect("1e4 is allowed");
    assert!(answer.weights.iter().all(|&w| w == 1e4));
}

#[test]
fn gate_errors_stderr_and_alerts_are_bounded() {
    match gate_route("error-huge", 8 * MIB).0 {
        Err(CallFailure::Plugin(m)) => one_line("gate error", &m, limits::PLUGIN_DETAIL),
        other => panic!("{other:?}"),
    }
    match gate_route("stderr-huge", STDERR).0 {
        Err(CallFailure::Trap(m)) => {
            assert!(m.len() <= limits::PLUGIN_DETAIL && !m.contains('\0') && !m.contains('\n'));
            assert!(m.contains("deliberate panic after a huge stderr"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    let (r, rec) = gate_route("alert-huge", 4 * MIB);
    r.expect("the answer itself is fine");
    let alerts = rec.alerts.lock().expect("lock");
    assert_eq!(alerts.len(), 1);
    one_line("gate alert code", &alerts[0].code, limits::ALERT_CODE);
    clipped(
        "gate alert message",
        &alerts[0].message,
        limits::ALERT_MESSAGE,
    );
}

fn retrieve(mode: &str, size: usize) -> moed_plugins::Retrieved {
    let (host, _) = host_recording(roomy_options());
    let plugin = host
        .load(&spec_with(
            "hostile-retrieval-misbehave",
            &[("mode", json!(mode)), ("size", json!(size))],
        ))
        .expect("load");
    let r = RetrievalPlugin::new(&plugin).expect("retrieval");
    let (got, ok) = with_normal_traffic(&host, || r.retrieve("vacation days", 4, &[]));
    assert!(ok > 0);
    got
}

#[test]
fn retrieved_document_fields_are_clipped() {
    let got = retrieve("doc-strings", 200 << 10);
    assert_eq!(got.failure, None);
    let d = &got.documents[0];
    one_line("id", &d.id, limits::DOCUMENT_ID);
    one_line("source", &d.source, limits::DOCUMENT_SOURCE);
    clipped("text", &d.text, limits::DOCUMENT_TEXT);
    // Over the total the host takes from one call: refused, the id never echoed whole.
    let got = retrieve("doc-strings", 8 * MIB);
    assert!(got.documents.is_empty());
    let failure = got.failure.expect("failure").to_string();
    assert!(failure.contains("bytes of documents"), "{failure}");
    let got = retrieve("nan-huge-id", 200 << 10);
    let failure = got.failure.expect("failure").to_string();
    assert!(
        failure.contains("has score NaN") && failure.contains("bytes)") && failure.len() < 512,
        "{failure}"
    );
}

#[test]
fn retrieval_errors_stderr_and_alerts_are_bounded() {
    for size in [8 * MIB, 40 * MIB] {
        let got = retrieve("error-huge", size);
        assert!(got.documents.is_empty());
        match got.failure {
            Some(CallFailure::Plugin(m)) => one_line("error", &m, limits::PLUGIN_DETAIL),
            other => panic!("{other:?}"),
        }
        let failed = got
            .alerts
            .iter()
            .find(|a| a.code == "retrieval.failed")
            .expect("alert");
        one_line("retrieval.failed", &failed.message, limits::ALERT_MESSAGE);
    }
    let got = retrieve("stderr-huge", STDERR);
    match got.failure {
        Some(CallFailure::Trap(m)) => {
            assert!(m.len() <= limits::PLUGIN_DETAIL && !m.contains('\0'), "{m}");
            assert!(m.contains("deliberate panic after a huge stderr"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    let got = retrieve("alert-huge", 8 * MIB);
    assert_eq!(got.failure, None);
    assert_eq!(got.documents.len(), 1);
    let a = &got.alerts[0];
    one_line("alert code", &a.code, limits::ALERT_CODE);
    clipped("alert message", &a.message, limits::ALERT_MESSAGE);
}
