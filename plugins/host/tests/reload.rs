//! Hot reload: the new code is loaded and checked completely, then swapped in atomically; a call
//! in flight finishes on the old code, later calls run the new; a failed reload keeps the old.

mod util;

use std::sync::Arc;
use std::time::Duration;

use moed_plugins::{CallFailure, GateAnswer, GateCall, GatePlugin};
use serde_json::json;
use util::*;

const E: usize = 16;
const K: usize = 4;

fn route(gate: &GatePlugin, seed: u64) -> Result<GateAnswer, CallFailure> {
    let logits = Lcg(seed).logits(2 * E);
    let call = GateCall {
        layer: 0,
        num_tokens: 2,
        num_experts: E,
        top_k: K,
        logits: &logits,
        params: &[],
    };
    let mut out = GateAnswer::default();
    gate.route(&call, &mut out).map(|()| out)
}

#[test]
fn in_flight_calls_finish_on_the_old_code() {
    let mut o = test_options();
    o.gate.time = Duration::from_millis(800);
    let (host, _) = host_recording(o);
    // Old code: spins until its time limit.
    let old = spec_with("hostile-gate-misbehave", &[("mode", json!("loop"))]);
    let plugin = host.load(&old).expect("load");
    let gate = GatePlugin::bind(&plugin, qwen3(E, K, 1)).expect("bind");
    let in_flight = {
        let gate = gate.clone();
        std::thread::spawn(move || route(&gate, 1))
    };
    std::thread::sleep(Duration::from_millis(200));
    // New code under the same name: topk's component.
    let mut new = old.clone();
    new.wasm = plugins_dir().join("topk.wasm");
    host.reload(&plugin, &new).expect("reload");
    let after = route(&gate, 2).expect("the new code answers");
    assert_eq!(after.k, K);
    // The call that was running when the swap happened ran on to the old code's end.
    assert!(matches!(
        in_flight.join().expect("thread"),
        Err(CallFailure::Timeout(_))
    ));
}

#[test]
fn reloads_under_traffic_lose_no_call_and_a_bad_reload_keeps_the_old_code() {
    let host = Arc::new(host());
    let plugin = host.load(&spec("topk")).expect("load");
    let gate = GatePlugin::bind(&plugin, qwen3(E, K, 1)).expect("bind");
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let gate = gate.clone();
            std::thread::spawn(move || {
                (0..300)
                    .map(|i| route(&gate, w * 1000 + i).map(|a| a.k))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for _ in 0..5 {
        host.reload(&plugin, &spec("topk")).expect("reload");
    }
    let mut bad = spec("topk");
    bad.wasm = plugins_dir().join("hostile-forbidden.wasm");
    let e = host.reload(&plugin, &bad).expect_err("refused").to_string();
    assert!(e.contains("wasi:sockets"), "{e}");
    for w in workers {
        for r in w.join().expect("worker") {
            assert_eq!(r, Ok(K));
        }
    }
    assert_eq!(route(&gate, 9).expect("old code still loaded").k, K);
    let mut other_kind = spec("pii-redact");
    other_kind.manifest.name = "topk".into();
    let e = host
        .reload(&plugin, &other_kind)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("must keep the name and kind"), "{e}");
}
