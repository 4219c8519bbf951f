//! Graph runs: sequences on one engine run the same graphs at the same time and get the tokens they
//! get one after the other, with both MoE layer forms (a router graph, as in the committed
//! format-1 moe-mini, and the router fused into attention, as the exporter now writes); the
//! run-overhead probe runs on the engine's runtime.

mod common;

use std::path::PathBuf;

use common::{greedy, package, repo};
use moed::engine::{Engine, EngineOptions};

fn concurrent_generation_matches_sequential(dir: PathBuf) {
    let engine = Engine::load(&dir, EngineOptions::default())
        .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()));
    let vocab = engine.package().vocab_size() as u32;
    let prompts: Vec<Vec<u32>> = (0..2u32)
        .map(|p| (0..7).map(|i| (p * 131 + i * 17 + 3) % vocab).collect())
        .collect();
    let sequential: Vec<Vec<u32>> = prompts.iter().map(|p| greedy(&engine, p, 12)).collect();
    assert_ne!(
        sequential[0], sequential[1],
        "the prompts should not give the same tokens"
    );
    std::thread::scope(|s| {
        let handles: Vec<_> = prompts
            .iter()
            .map(|p| {
                let engine = &engine;
                s.spawn(move || (0..3).map(|_| greedy(engine, p, 12)).collect::<Vec<_>>())
            })
            .collect();
        for (h, want) in handles.into_iter().zip(&sequential) {
            for got in h.join().expect("thread") {
                assert_eq!(
                    &got,
                    want,
                    "{}: concurrent generation differs",
                    dir.display()
                );
            }
        }
    });
}

#[test]
fn two_threads_generating_on_moe_mini_match_one_after_the_other() {
    let dir = repo().join("models/moe-mini");
    let m = moed::package::Package::open(&dir).expect("moe-mini");
    assert!(
        m.manifest().layers.iter().all(|l| !l.router_fused()),
        "moe-mini is the format-1 form with router graphs"
    );
    concurrent_generation_matches_sequential(dir);
}

#[test]
fn two_threads_generating_on_a_fixture_match_one_after_the_other() {
    concurrent_generation_matches_sequential(package("qwen3_moe"));
}

#[test]
fn the_run_overhead_probe_runs() {
    let engine = Engine::load(&package("qwen3_moe"), EngineOptions::default()).expect("load");
    let us = engine.run_overhead_us(50).expect("probe");
    assert!(us.is_finite() && us > 0.0, "{us}");
    let before = engine.stats();
    engine.run_overhead_us(5).expect("probe");
    assert_eq!(
        engine.stats().ort_runs,
        before.ort_runs,
        "the probe's runs are not the model's"
    );
}
