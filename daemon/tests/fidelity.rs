//! Fidelity: every committed fixture's fp32 package, run by the Rust engine, reproduces transformers'
//! per-token logprobs within 1e-4 and its greedy continuation; incremental decoding equals
//! full-prefix scoring; dense execution and a tight expert budget give the same numbers.

mod common;

use common::{argmax, fixture_archs, logprob, package};
use std::sync::Arc;

use moed::engine::{
    Engine, EngineOptions, ExecMode, Gate, GateError, Logits, RouterInput, Routing,
};

const TOL: f64 = 1e-4;

struct Case {
    text: String,
    ids: Vec<u32>,
    logprobs: Vec<Option<f64>>,
    greedy: Vec<u32>,
}

fn golden(arch: &str) -> Vec<Case> {
    let path = common::fixtures_dir().join(arch).join("golden.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ids = |x: &serde_json::Value| -> Vec<u32> {
        x.as_array()
            .expect("id list")
            .iter()
            .map(|i| i.as_u64().expect("id") as u32)
            .collect()
    };
    v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap_or_default().to_string(),
            ids: ids(&c["ids"]),
            logprobs: c["logprobs"]
                .as_array()
                .expect("logprobs")
                .iter()
                .map(serde_json::Value::as_f64)
                .collect(),
            greedy: ids(&c["greedy"]["ids"]),
        })
        .collect()
}

fn load(arch: &str, opts: EngineOptions) -> Engine {
    let dir = package(arch);
    let engine = Engine::load(&dir, opts)
        .unwrap_or_else(|e| panic!("{arch}: loading {}: {e}", dir.display()));
    let precision = &engine.package().manifest().precision;
    assert_eq!(
        (precision.dense.as_str(), precision.experts.as_str()),
        ("fp32", "fp32"),
        "{arch}: fidelity needs the fp32 export (see {})",
        common::export_command(arch)
    );
    engine
}

/// Logprobs of `ids` scored in one call (None for the first token), and the last row's argmax.
fn score(engine: &Engine, ids: &[u32], mode: ExecMode) -> (Vec<Option<f64>>, Vec<f32>) {
    let mut seq = engine.new_sequence();
    let v = engine.package().vocab_size();
    let all = engine
        .forward_with_mode(&mut seq, ids, Logits::All, mode)
        .expect("forward");
    assert_eq!(all.len(), ids.len() * v);
    let mut lp = vec![None];
    for i in 1..ids.len() {
        lp.push(Some(logprob(&all[(i - 1) * v..i * v], ids[i] as usize)));
    }
    (lp, all[(ids.len() - 1) * v..].to_vec())
}

/// Every mismatch against golden, as readable lines.
fn check_arch(arch: &str, engine: &Engine, mode: ExecMode) -> Vec<String> {
    let mut bad = Vec::new();
    for (ci, case) in golden(arch).iter().enumerate() {
        let (lp, last) = score(engine, &case.ids, mode);
        let mut worst = 0.0f64;
        for (i, (got, want)) in lp.iter().zip(&case.logprobs).enumerate() {
            match (got, want) {
                (None, None) => {}
                (Some(g), Some(w)) => {
                    worst = worst.max((g - w).abs());
                    if (g - w).abs() > TOL {
                        bad.push(format!(
                            "{arch} {mode:?} case {ci} token {i}: logprob {g:.6} vs golden {w:.6}"
                        ));
                    }
                }
                _ => bad.push(format!("{arch} case {ci} token {i}: null mismatch")),
            }
        }
        eprintln!(
            "{arch} {mode:?} case {ci} ({:?}): max |logprob diff| {worst:.2e}",
            case.text
        );

        // Greedy continuation with the KV cache.
        let mut seq = engine.new_sequence();
        let mut logits = engine
            .forward_with_mode(&mut seq, &case.ids, Logits::Last, mode)
            .expect("prefill");
        let max_diff = max_abs_diff(&logits, &last);
        if max_diff > 1e-4 {
            bad.push(format!(
                "{arch} case {ci}: Logits::Last differs from Logits::All's last row by {max_diff}"
            ));
        }
        // make_fixtures.py generates with min_new_tokens = max_new_tokens, which makes transformers
        // set the EOS logit to -inf at every step: EOS is never chosen, so the same here.
        let eos = engine
            .package()
            .special_tokens()
            .eos
            .as_ref()
            .map(|t| t.id as usize);
        let mut out = Vec::new();
        for _ in 0..case.greedy.len() {
            if let Some(eos) = eos {
                logits[eos] = f32::NEG_INFINITY;
            }
            let next = argmax(&logits);
            out.push(next);
            logits = engine
                .forward_with_mode(&mut seq, &[next], Logits::Last, mode)
                .expect("decode");
        }
        if out != case.greedy {
            bad.push(format!(
                "{arch} {mode:?} case {ci}: greedy {out:?} vs golden {:?}",
                case.greedy
            ));
        }
    }
    bad
}

#[test]
fn every_fixture_matches_transformers() {
    let archs = fixture_archs();
    assert!(
        !archs.is_empty(),
        "no fixtures under {}",
        common::fixtures_dir().display()
    );
    let mut bad = Vec::new();
    for arch in &archs {
        let before = moed::qmatmul::moed_attention_calls();
        let engine = load(arch, EngineOptions::default());
        bad.extend(check_arch(arch, &engine, ExecMode::Sparse));
        // The head-major (GQA) graphs run on moed's attention kernel, not ONNX Runtime's. (The
        // counter is process-wide and other tests run at once, so only a run can be asserted.)
        let head_major = !arch.starts_with("deepseek");
        if head_major && moed::qmatmul::moed_attention_calls() == before {
            bad.push(format!("{arch}: moed's attention kernel did not run"));
        }
    }
    assert!(bad.is_empty(), "fidelity failures:\n{}", bad.join("\n"));
}

#[test]
fn dense_execution_matches_transformers() {
    let mut bad = Vec::new();
    for arch in &fixture_archs() {
        let engine = load(arch, EngineOptions::default());
        bad.extend(check_arch(arch, &engine, ExecMode::Dense));
    }
    assert!(
        bad.is_empty(),
        "dense fidelity failures:\n{}",
        bad.join("\n")
    );
}

#[test]
fn incremental_decode_equals_full_prefix_scoring() {
    for arch in &fixture_archs() {
        let engine = load(arch, EngineOptions::default());
        let v = engine.package().vocab_size();
        for case in golden(arch) {
            let ids = &case.ids;
            let mut full_seq = engine.new_sequence();
            let full = engine
                .forward(&mut full_seq, ids, Logits::All)
                .expect("full");
            // One token at a time.
            let mut seq = engine.new_sequence();
            for (i, &id) in ids.iter().enumerate() {
                let row = engine.forward(&mut seq, &[id], Logits::Last).expect("step");
                let d = max_abs_diff(&row, &full[i * v..(i + 1) * v]);
                assert!(
                    d <= 1e-4,
                    "{arch}: token {i} one-at-a-time logits differ by {d}"
                );
            }
            assert_eq!(seq.len(), ids.len());
            // Two chunks, then truncate and redo the second chunk.
            let cut = ids.len() / 2;
            let mut seq = engine.new_sequence();
            engine
                .forward(&mut seq, &ids[..cut], Logits::Last)
                .expect("chunk 1");
            let second = engine
                .forward(&mut seq, &ids[cut..], Logits::All)
                .expect("chunk 2");
            seq.truncate(cut);
            assert_eq!(seq.len(), cut);
            let again = engine
                .forward(&mut seq, &ids[cut..], Logits::All)
                .expect("chunk 2 again");
            for (name, got) in [("chunked", &second), ("after truncate", &again)] {
                let d = max_abs_diff(got, &full[cut * v..]);
                assert!(
                    d <= 1e-4,
                    "{arch}: {name} logits differ from full-prefix scoring by {d}"
                );
            }
        }
    }
}

/// Fails every routing call, so a forward pass stops at its first MoE layer after that layer's
/// attention (and any dense layers before it) already wrote its new cache rows.
struct FailingGate;

impl Gate for FailingGate {
    fn route(&self, _: usize, _: &RouterInput<'_>, _: &mut Routing) -> Result<(), GateError> {
        Err(GateError("refused by the test".into()))
    }
}

#[test]
fn a_failed_forward_leaves_the_cache_as_it_was() {
    for arch in &fixture_archs() {
        let engine = load(arch, EngineOptions::default());
        let v = engine.package().vocab_size();
        let ids = &golden(arch)
            .into_iter()
            .max_by_key(|c| c.ids.len())
            .expect("a golden case")
            .ids;
        let mut full_seq = engine.new_sequence();
        let full = engine
            .forward(&mut full_seq, ids, Logits::All)
            .expect("full");
        let cut = ids.len() / 2;
        let mut seq = engine.new_sequence();
        engine
            .forward(&mut seq, &ids[..cut], Logits::Last)
            .expect("chunk 1");
        seq.set_gate(Some(Arc::new(FailingGate)));
        assert!(
            engine.forward(&mut seq, &ids[cut..], Logits::All).is_err(),
            "{arch}: the failing gate did not fail the forward pass"
        );
        assert_eq!(seq.len(), cut, "{arch}");
        seq.set_gate(None);
        // Decode the rest one token at a time: each step reads the rows the failed pass wrote.
        for (i, &id) in ids.iter().enumerate().skip(cut) {
            let row = engine.forward(&mut seq, &[id], Logits::Last).expect("step");
            let d = max_abs_diff(&row, &full[i * v..(i + 1) * v]);
            assert!(
                d <= 1e-4,
                "{arch}: token {i} after a failed pass differs by {d}"
            );
        }
    }
}

#[test]
fn a_tight_expert_budget_evicts_and_gives_the_same_logprobs() {
    let arch = "deepseek_v3";
    let dir = package(arch);
    let unlimited = load(arch, EngineOptions::default());
    let m = unlimited.package().manifest();
    let (largest, top_k) = common::largest_expert_and_top_k(&unlimited);
    let tight = Engine::load(
        &dir,
        EngineOptions {
            expert_memory_budget: Some(largest * top_k),
            ..EngineOptions::default()
        },
    )
    .expect("load with budget");
    let case = &golden(arch)[0];
    let (a, _) = score(&unlimited, &case.ids, ExecMode::Sparse);
    let (b, _) = score(&tight, &case.ids, ExecMode::Sparse);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        if let (Some(x), Some(y)) = (x, y) {
            assert!((x - y).abs() < 1e-6, "token {i}: {x} vs {y}");
        }
    }
    let s = tight.stats();
    assert!(
        s.cache_evictions > 0,
        "budget of {top_k} experts never evicted: {s:?}"
    );
    assert!(s.resident_expert_bytes <= largest * top_k, "{s:?}");
    let u = unlimited.stats();
    assert_eq!(u.cache_evictions, 0);
    // Every routed token is counted once per chosen expert.
    let routed: u64 = u.activations.iter().flatten().sum();
    let moe_layers = m.layers.iter().filter(|l| l.is_moe()).count() as u64;
    assert_eq!(routed, u.forward_tokens * moe_layers * top_k);
}

#[test]
fn held_hot_experts_and_next_layer_guesses_keep_the_logprobs_under_a_budget() {
    let arch = "deepseek_v3";
    let dir = package(arch);
    let unlimited = load(arch, EngineOptions::default());
    let case = &golden(arch)[0];
    let (a, _) = score(&unlimited, &case.ids, ExecMode::Sparse);
    let hot = unlimited.stats().activations;
    let bytes: u64 = unlimited
        .package()
        .manifest()
        .layers
        .iter()
        .filter_map(|l| match l {
            moed::package::LayerSpec::Moe { experts, .. } => Some(
                experts
                    .iter()
                    .map(|e| unlimited.package().graph_bytes(e))
                    .sum::<u64>(),
            ),
            _ => None,
        })
        .sum();
    let budgeted = |prefetch_next_layer| {
        Engine::load(
            &dir,
            EngineOptions {
                expert_memory_budget: Some(bytes / 2),
                prefetch_next_layer,
                ..EngineOptions::default()
            },
        )
        .expect("load with budget")
    };
    let engine = budgeted(true);
    let held = engine.hold_hot_experts(&hot, 0.5).expect("hold");
    assert!(held.experts > 0, "{held:?}");
    assert!(held.bytes <= bytes / 4, "{held:?} over half of the budget");
    let before = engine.stats();
    assert_eq!(
        (before.held_experts, before.held_expert_bytes),
        (held.experts as u64, held.bytes)
    );
    // The first pass teaches the guesses that the second makes.
    for _ in 0..2 {
        let (b, _) = score(&engine, &case.ids, ExecMode::Sparse);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            if let (Some(x), Some(y)) = (x, y) {
                assert!((x - y).abs() < 1e-6, "token {i}: {x} vs {y}");
            }
        }
    }
    let (b, _) = score(&engine, &case.ids, ExecMode::Sparse);
    let s = engine.stats();
    assert_eq!(
        s.held_experts, held.experts as u64,
        "held experts were evicted: {s:?}"
    );
    assert!(s.resident_expert_bytes <= bytes / 2, "{s:?}");
    // The held experts are the ones this prompt uses most: most lookups find them.
    assert!(s.cache_hits > 0, "{s:?}");
    assert!(s.prefetch_guessed > 0 && s.prefetch_chosen > 0, "{s:?}");
    assert!(
        s.prefetch_guessed_right <= s.prefetch_guessed.min(s.prefetch_chosen),
        "{s:?}"
    );
    // Nothing to guess without the option; the same logprobs.
    let plain = budgeted(false);
    let (c, _) = score(&plain, &case.ids, ExecMode::Sparse);
    assert_eq!(b, c);
    assert_eq!(plain.stats().prefetch_guessed, 0);
    assert_eq!(
        plain
            .hold_hot_experts(&[], 0.5)
            .expect("nothing to hold")
            .experts,
        0
    );
}

#[test]
fn score_tokens_matches_golden() {
    for arch in &fixture_archs() {
        let engine = load(arch, EngineOptions::default());
        for (ci, case) in golden(arch).iter().enumerate() {
            let lp = moed::engine::score_tokens(&engine, &case.ids).expect("score");
            for (i, (g, w)) in lp.iter().zip(&case.logprobs).enumerate() {
                match (g, w) {
                    (Some(g), Some(w)) => assert!(
                        (g - w).abs() <= TOL,
                        "{arch} case {ci} token {i}: {g} vs {w}"
                    ),
                    (None, None) => {}
                    _ => panic!("{arch} case {ci} token {i}: null mismatch"),
                }
            }
        }
    }
}

#[test]
fn concurrent_requests_on_one_engine_match_sequential_scoring() {
    let arch = "deepseek_v3";
    let engine = load(arch, EngineOptions::default());
    let cases = golden(arch);
    let sequential: Vec<Vec<Option<f64>>> = cases
        .iter()
        .map(|c| moed::engine::score_tokens(&engine, &c.ids).expect("score"))
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|c| {
                let engine = &engine;
                s.spawn(move || {
                    (0..3)
                        .map(|_| moed::engine::score_tokens(engine, &c.ids).expect("score"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for (h, want) in handles.into_iter().zip(&sequential) {
            for got in h.join().expect("thread") {
                assert_eq!(&got, want, "concurrent scoring differs from sequential");
            }
        }
    });
}

#[test]
fn score_command_prints_golden_ids_and_logprobs_as_json() {
    for arch in &fixture_archs() {
        let dir = package(arch);
        for case in golden(arch) {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_moed"))
                .args(["score", "--json", "--model"])
                .arg(&dir)
                .arg(&case.text)
                .output()
                .expect("run moed score");
            assert!(
                out.status.success(),
                "{arch}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            let tokens = v["tokens"].as_array().expect("tokens");
            let ids: Vec<u32> = tokens
                .iter()
                .map(|t| t["id"].as_u64().expect("id") as u32)
                .collect();
            assert_eq!(
                ids, case.ids,
                "{arch}: {:?} tokenized differently",
                case.text
            );
            for (i, (t, want)) in tokens.iter().zip(&case.logprobs).enumerate() {
                assert!(t["text"].is_string());
                match (t["logprob"].as_f64(), want) {
                    (None, None) => assert!(t["logprob"].is_null()),
                    (Some(g), Some(w)) => {
                        assert!((g - w).abs() <= TOL, "{arch} token {i}: {g} vs {w}")
                    }
                    _ => panic!("{arch} token {i}: null mismatch"),
                }
            }
        }
    }
}

/// The largest elementwise difference of two logit rows.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}
