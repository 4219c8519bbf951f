//! `moed bench --contexts`: decode speed from several context lengths, each against the shortest.

mod common;

use moed::bench::{self, BenchConfig};
use moed::engine::{Engine, EngineOptions};

fn config(contexts: Vec<usize>) -> BenchConfig {
    BenchConfig {
        prompt_tokens: 4,
        decode_tokens: 2,
        repeat: 2,
        bandwidth_bytes: 1 << 20,
        contexts,
        ..BenchConfig::default()
    }
}

#[test]
fn every_context_is_measured_against_the_shortest() {
    // qwen3_moe has a head-major cache, deepseek_v3 a token-major one.
    for arch in ["qwen3_moe", "deepseek_v3"] {
        let engine = Engine::load(&common::package(arch), EngineOptions::default()).expect("load");
        let report = bench::run(&engine, &config(vec![200, 5, 40]), None).expect("bench");
        let contexts: Vec<usize> = report.contexts.iter().map(|c| c.context).collect();
        assert_eq!(contexts, vec![5, 40, 200], "{arch}");
        assert_eq!(report.contexts[0].ratio, 1.0, "{arch}");
        for c in &report.contexts {
            assert_eq!(
                c.runs_decode_tok_s.len(),
                2,
                "{arch}: context {}",
                c.context
            );
            assert!(c.decode_tok_s > 0.0, "{arch}: context {}", c.context);
            let want = c.decode_tok_s / report.contexts[0].decode_tok_s;
            assert!(
                (c.ratio - want).abs() < 1e-9,
                "{arch}: context {}",
                c.context
            );
        }
    }
}

#[test]
fn a_context_past_the_package_length_is_refused_before_running() {
    let engine =
        Engine::load(&common::package("qwen3_moe"), EngineOptions::default()).expect("load");
    let ctx = engine.package().context_length();
    let err = bench::run(&engine, &config(vec![8, ctx - 1]), None)
        .expect_err("a context leaving no room to decode")
        .to_string();
    assert!(err.contains(&format!("context {}", ctx - 1)), "{err}");
    assert!(err.contains(&format!("context length {ctx}")), "{err}");
    assert_eq!(engine.stats().forward_calls, 0, "{err}");
}
