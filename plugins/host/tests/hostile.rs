//! Hostile plugins: each is refused at load or contained in the call (the kind's failure policy
//! applies), while normal calls on other threads keep succeeding.

mod util;

use moed_plugins::{
    CallFailure, FilterError, FilterPlugin, GateAnswer, GateCall, GatePlugin, LoadError,
    RetrievalPlugin,
};
use serde_json::json;
use util::*;

const E: usize = 16;
const K: usize = 4;

fn gate_failure(mode: &str) -> CallFailure {
    let (host, _) = host_recording(test_options());
    let plugin = host
        .load(&spec_with(
            "hostile-gate-misbehave",
            &[("mode", json!(mode))],
        ))
        .expect("load");
    let gate = GatePlugin::bind(&plugin, qwen3(E, K, 2)).expect("bind");
    let logits = Lcg(1).logits(3 * E);
    let call = GateCall {
        layer: 0,
        num_tokens: 3,
        num_experts: E,
        top_k: K,
        logits: &logits,
        params: &[],
    };
    let (r, ok) = with_normal_traffic(&host, || gate.route(&call, &mut GateAnswer::default()));
    assert!(ok > 0);
    r.expect_err("the hostile gate must fail")
}

#[test]
fn infinite_loop_times_out() {
    assert!(matches!(gate_failure("loop"), CallFailure::Timeout(_)));
    assert!(matches!(gate_failure("loop-init"), CallFailure::Timeout(_)));
}

#[test]
fn memory_bomb_hits_the_cap() {
    match gate_failure("membomb") {
        CallFailure::Memory(m) => assert!(m.contains("the limit is 32768 KiB"), "{m}"),
        other => panic!("{other}"),
    }
}

#[test]
fn invalid_answers_are_refused() {
    let cases = [
        ("out-of-range", "expert 19 is out of range"),
        ("duplicate", "is chosen twice"),
        ("nan", "weight NaN"),
        ("negative", "weight -0.5"),
        ("wrong-count", "expected 12 of each"),
        ("fewer", "fewer_experts"),
    ];
    for (mode, want) in cases {
        match gate_failure(mode) {
            CallFailure::BadAnswer(m) => assert!(m.contains(want), "{mode}: {m}"),
            other => panic!("{mode}: {other}"),
        }
    }
}

#[test]
fn traps_exits_and_errors_are_contained() {
    match gate_failure("trap") {
        CallFailure::Trap(m) => assert!(m.contains("deliberate panic in route"), "{m}"),
        other => panic!("{other}"),
    }
    match gate_failure("exit") {
        CallFailure::Trap(m) => assert!(m.contains("it called exit("), "{m}"),
        other => panic!("{other}"),
    }
    match gate_failure("error") {
        CallFailure::Plugin(m) => assert!(m.contains("deliberate error"), "{m}"),
        other => panic!("{other}"),
    }
}

#[test]
fn repeated_failures_disable_the_plugin() {
    let mut o = test_options();
    o.max_consecutive_failures = 3;
    let (host, rec) = host_recording(o);
    // An error leaves the instance usable, so its call counter runs on: two good answers, then
    // errors.
    let spec = spec_with(
        "hostile-gate-misbehave",
        &[("mode", json!("error")), ("after", json!(2))],
    );
    let plugin = host.load(&spec).expect("load");
    let gate = GatePlugin::bind(&plugin, qwen3(E, K, 1)).expect("bind");
    let logits = Lcg(2).logits(E);
    let call = GateCall {
        layer: 0,
        num_tokens: 1,
        num_experts: E,
        top_k: K,
        logits: &logits,
        params: &[],
    };
    let mut out = GateAnswer::default();
    gate.route(&call, &mut out).expect("first");
    gate.route(&call, &mut out).expect("second");
    for _ in 0..3 {
        assert!(matches!(
            gate.route(&call, &mut out),
            Err(CallFailure::Plugin(_))
        ));
    }
    let st = plugin.status();
    let reason = st.disabled_reason.expect("disabled");
    assert!(
        reason.contains("3 consecutive failed calls") && reason.contains("deliberate error"),
        "{reason}"
    );
    assert!(matches!(
        gate.route(&call, &mut out),
        Err(CallFailure::Disabled(_))
    ));
    let failures = rec.failures.lock().expect("lock").clone();
    assert_eq!(failures.len(), 3);
    assert!(failures[2].disabled && !failures[1].disabled);
    // The administrator's enable clears it (and the code fails again)...
    plugin.set_enabled(true);
    assert!(matches!(
        gate.route(&call, &mut out),
        Err(CallFailure::Plugin(_))
    ));
    // ...and a reload with fixed code (here topk's, under the same name) brings it back.
    let mut fixed = spec;
    fixed.wasm = plugins_dir().join("topk.wasm");
    host.reload(&plugin, &fixed).expect("reload");
    assert_eq!(plugin.status().disabled_reason, None);
    gate.route(&call, &mut out).expect("after reload");
}

#[test]
fn forbidden_imports_are_refused_at_load_by_name() {
    let host = host();
    let e = match host.load(&spec("hostile-forbidden")) {
        Err(e @ LoadError::Capability { .. }) => e.to_string(),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("loaded a plugin importing sockets"),
    };
    for import in [
        "wasi:sockets/tcp@0.2.6",
        "wasi:clocks/wall-clock@0.2.6",
        "moed:plugin/kv@0.1.0",
    ] {
        assert!(e.contains(import), "{import} not named in: {e}");
    }
    assert!(
        e.contains("no network access") && e.contains("grant `clocks = true`"),
        "{e}"
    );
}

#[test]
fn wrong_interfaces_are_refused_at_load() {
    let host = host();
    let e = host
        .load(&spec("hostile-wrong-interface"))
        .expect_err("refused")
        .to_string();
    assert!(e.contains("does not implement the interface"), "{e}");
    let e = host
        .load(&spec("hostile-future-version"))
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("moed:plugin@0.9") && e.contains("it links 0.1"),
        "{e}"
    );
    // A component of one kind under a manifest of another.
    let mut s = spec("topk");
    s.manifest.kind = moed_plugins::Kind::Filter;
    let e = host.load(&s).expect_err("refused").to_string();
    assert!(
        e.contains("manifest says filter, but it exports moed:plugin/gating (a gate plugin)"),
        "{e}"
    );
}

type Outcomes = (
    Result<moed_plugins::InputOutcome, FilterError>,
    Result<String, FilterError>,
);

fn filter_outcomes(mode: &str) -> Outcomes {
    let (host, _) = host_recording(test_options());
    let plugin = host
        .load(&spec_with(
            "hostile-filter-misbehave",
            &[("mode", json!(mode))],
        ))
        .expect("load");
    let f = FilterPlugin::new(&plugin).expect("filter");
    let (outcomes, ok) = with_normal_traffic(&host, || {
        let input = f.check_input("héllo", &[]);
        let mut out = f.output(&[]);
        let output = out
            .push("héllo wö")
            .and_then(|a| Ok(a.text + &out.finish()?.text));
        (input, output)
    });
    assert!(ok > 0);
    outcomes
}

fn failed_closed(r: Result<impl std::fmt::Debug, FilterError>, want: &str) {
    match r {
        Err(e @ FilterError::Failed { .. }) => {
            let s = e.to_string();
            assert!(s.contains("filters fail closed") && s.contains(want), "{s}");
        }
        other => panic!("expected a failure containing {want:?}, got {other:?}"),
    }
}

#[test]
fn misbehaving_filters_fail_closed() {
    let (input, output) = filter_outcomes("oversized");
    failed_closed(input, "10485760 bytes");
    failed_closed(output, "10485760 bytes");
    failed_closed(filter_outcomes("hold-all").1, "holds back 11 bytes of 10");
    failed_closed(filter_outcomes("split-char").1, "splits a character");
    let (input, output) = filter_outcomes("trap");
    failed_closed(input, "deliberate panic");
    failed_closed(output, "trapped");
    let (input, output) = filter_outcomes("loop");
    failed_closed(input, "time limit");
    failed_closed(output, "time limit");
}

#[test]
fn misbehaving_retrieval_fails_open_with_an_alert() {
    let cases = [
        ("nan-score", "score NaN"),
        ("too-many", "9 documents for a limit of 4"),
        ("huge", "bytes of documents"),
        ("loop", "time limit"),
        ("denied", "not granted"),
    ];
    let (host, _) = host_recording(test_options());
    for (mode, want) in cases {
        let plugin = host
            .load(&spec_with(
                "hostile-retrieval-misbehave",
                &[("mode", json!(mode))],
            ))
            .expect("load");
        let r = RetrievalPlugin::new(&plugin).expect("retrieval");
        let (got, _) = with_normal_traffic(&host, || r.retrieve("vacation days", 4, &[]));
        assert!(got.documents.is_empty(), "{mode}");
        let failure = got.failure.expect("failure").to_string();
        assert!(failure.contains(want), "{mode}: {failure}");
        assert!(
            got.alerts
                .iter()
                .any(|a| a.code == "retrieval.failed" && a.message.contains(want)),
            "{mode}: {:?}",
            got.alerts
        );
    }
}

#[test]
fn a_runaway_call_after_an_idle_spell_still_times_out() {
    // The epoch ticker parks after a second without calls; a call must wake it.
    let (host, _) = host_recording(test_options());
    let plugin = host
        .load(&spec_with(
            "hostile-gate-misbehave",
            &[("mode", json!("loop"))],
        ))
        .expect("load");
    let gate = GatePlugin::bind(&plugin, qwen3(E, K, 1)).expect("bind");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let logits = Lcg(4).logits(E);
    let call = GateCall {
        layer: 0,
        num_tokens: 1,
        num_experts: E,
        top_k: K,
        logits: &logits,
        params: &[],
    };
    assert!(matches!(
        gate.route(&call, &mut GateAnswer::default()),
        Err(CallFailure::Timeout(_))
    ));
}
