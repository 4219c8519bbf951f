//! Batched forward steps: several sequences run as one step get the logits each gets alone, on
//! every attention form (moed's kernel over head-major f32 and f16 caches, batched in one run;
//! token-major MLA and router graphs, per sequence), and one sequence's failing gate fails only it.

mod common;

use std::sync::Arc;

use common::{argmax, greedy, package, packages_dir, repo};
use moed::engine::{
    Engine, EngineError, EngineOptions, Gate, GateError, Logits, RouterInput, Routing, Sequence,
    Step,
};

fn prompts(vocab: u32) -> Vec<Vec<u32>> {
    // Different lengths, so the rows of a step and the caches' pasts differ.
    [5usize, 9, 2]
        .iter()
        .enumerate()
        .map(|(p, &n)| {
            (0..n as u32)
                .map(|i| (p as u32 * 131 + i * 17 + 3) % vocab)
                .collect()
        })
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Prefill (all logits) and then 6 greedy decode steps of three sequences, alone and batched.
fn batched_matches_alone(dir: std::path::PathBuf) -> moed::engine::EngineStats {
    let engine = Engine::load(&dir, EngineOptions::default())
        .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()));
    let prompts = prompts(engine.package().vocab_size() as u32);

    let mut alone_seqs: Vec<Sequence> = prompts.iter().map(|_| engine.new_sequence()).collect();
    let mut alone_steps: Vec<Vec<Vec<f32>>> = Vec::new();
    for (seq, p) in alone_seqs.iter_mut().zip(&prompts) {
        let mut steps = vec![engine.forward(seq, p, Logits::All).expect("prefill")];
        for _ in 0..6 {
            let v = engine.package().vocab_size();
            let last = &steps[steps.len() - 1];
            let next = argmax(&last[last.len() - v..]);
            steps.push(engine.forward(seq, &[next], Logits::Last).expect("decode"));
        }
        alone_steps.push(steps);
    }

    let mut seqs: Vec<Sequence> = prompts.iter().map(|_| engine.new_sequence()).collect();
    let mut inputs: Vec<Vec<u32>> = prompts.clone();
    let mut which = Logits::All;
    for step in 0..alone_steps[0].len() {
        let mut batch: Vec<Step<'_>> = seqs
            .iter_mut()
            .zip(&inputs)
            .map(|(seq, tokens)| Step { seq, tokens, which })
            .collect();
        let out = engine.forward_batch(&mut batch).expect("batched step");
        for (i, got) in out.into_iter().enumerate() {
            let got = got.expect("a sequence of the step");
            let want = alone_steps[i].get(step).expect("the step alone");
            let d = max_diff(&got, want);
            assert!(
                d <= 1e-4,
                "{}: step {step}, sequence {i}: batched logits differ by {d}",
                dir.display()
            );
            let v = engine.package().vocab_size();
            inputs[i] = vec![argmax(&got[got.len() - v..])];
        }
        which = Logits::Last;
    }
    for (a, b) in seqs.iter().zip(&alone_seqs) {
        assert_eq!(a.len(), b.len());
    }
    let stats = engine.stats();
    assert_eq!((stats.batch_steps, stats.batch_sequences), (7, 21));
    stats
}

#[test]
fn batched_steps_match_alone_on_head_major_f32_with_the_kernel_batching_attention() {
    let stats = batched_matches_alone(package("qwen3_moe"));
    let layers = 3;
    assert_eq!(
        stats.batched_attention_runs,
        7 * layers,
        "one attention run per layer and step"
    );
}

#[test]
fn batched_steps_match_alone_on_head_major_f16_and_quantized() {
    for p in [
        "kv16/qwen3_moe",
        "quantized/qwen3_moe.int4",
        "quantized/mixtral.int8",
    ] {
        let stats = batched_matches_alone(packages_dir().join(p));
        assert!(
            stats.batched_attention_runs > 0,
            "{p}: attention was not batched"
        );
    }
}

#[test]
fn batched_steps_match_alone_on_mla_and_router_graphs() {
    let mla = [
        package("deepseek_v3"),
        packages_dir().join("quantized/deepseek_v3.int4-dense4"),
    ];
    for dir in mla {
        let stats = batched_matches_alone(dir);
        assert_eq!(
            stats.batched_attention_runs, 0,
            "MLA attention runs per sequence"
        );
    }
    batched_matches_alone(repo().join("models/moe-mini"));
}

/// Fails every routing at layer 1.
struct Failing;

impl Gate for Failing {
    fn route(&self, layer: usize, _: &RouterInput<'_>, _: &mut Routing) -> Result<(), GateError> {
        if layer == 1 {
            return Err(GateError("refused on purpose".into()));
        }
        Err(GateError(
            "layer 0 of qwen3_moe is dense: never asked".into(),
        ))
    }
}

#[test]
fn one_sequences_failing_gate_fails_only_it_and_leaves_its_cache() {
    let dir = package("qwen3_moe");
    let engine = Engine::load(&dir, EngineOptions::default()).expect("load");
    let prompts = prompts(engine.package().vocab_size() as u32);
    let mut seqs: Vec<Sequence> = prompts.iter().map(|_| engine.new_sequence()).collect();
    let mut alone = engine.new_sequence();
    let want = engine
        .forward(&mut alone, &prompts[0], Logits::Last)
        .expect("alone");
    seqs[1].set_gate(Some(Arc::new(Failing)));
    let mut batch: Vec<Step<'_>> = seqs
        .iter_mut()
        .zip(&prompts)
        .map(|(seq, tokens)| Step {
            seq,
            tokens,
            which: Logits::Last,
        })
        .collect();
    let mut bad_token = vec![u32::MAX];
    let mut extra = engine.new_sequence();
    batch.push(Step {
        seq: &mut extra,
        tokens: &bad_token,
        which: Logits::Last,
    });
    let out = engine.forward_batch(&mut batch).expect("the step runs");
    assert!(max_diff(out[0].as_ref().expect("first"), &want) <= 1e-4);
    assert!(
        matches!(&out[1], Err(EngineError::Gate { message, .. }) if message.contains("on purpose")),
        "{:?}",
        out[1].as_ref().err()
    );
    assert!(out[2].is_ok());
    assert!(matches!(out[3], Err(EngineError::TokenOutOfRange { .. })));
    drop(batch);
    bad_token.clear();
    assert_eq!(
        seqs[1].len(),
        0,
        "the failed sequence keeps its cache as before"
    );
    assert_eq!(seqs[0].len(), prompts[0].len());
    assert_eq!(extra.len(), 0);
}

fn greedy_member(engine: &Engine, prompt: &[u32], n: usize) -> Vec<u32> {
    let member = engine.batch_member();
    let mut seq = engine.new_sequence();
    let mut logits = member
        .forward(engine, &mut seq, prompt, Logits::Last)
        .expect("prefill");
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let next = argmax(&logits);
        out.push(next);
        logits = member
            .forward(engine, &mut seq, &[next], Logits::Last)
            .expect("decode");
    }
    out
}

/// Four generations at once through the engine's shared steps get the tokens each gets alone,
/// and ran together; with a token limit of 3 per step the 5- and 9-token prompts run in chunks.
#[test]
fn concurrent_generations_share_steps_and_get_their_own_tokens() {
    let engine = Engine::load(&package("qwen3_moe"), EngineOptions::default()).expect("load");
    let mut prompts = prompts(engine.package().vocab_size() as u32);
    prompts.push(vec![7, 1, 7, 1]);
    let alone: Vec<Vec<u32>> = prompts.iter().map(|p| greedy(&engine, p, 12)).collect();
    for max_tokens in [512, 3] {
        engine.set_batch_limits(moed::engine::BatchLimits {
            max_sequences: 8,
            max_tokens,
        });
        let before = engine.stats();
        let got: Vec<Vec<u32>> = std::thread::scope(|s| {
            let handles: Vec<_> = prompts
                .iter()
                .map(|p| {
                    let engine = &engine;
                    s.spawn(move || greedy_member(engine, p, 12))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        assert_eq!(got, alone, "max_tokens {max_tokens}");
        let d = engine.stats().since(&before);
        assert!(
            d.batch_steps > 0 && d.batch_sequences >= 2 * d.batch_steps,
            "the generations never shared a step: {d:?}"
        );
        if max_tokens == 3 {
            // Each of the 12 decode steps of four members, and at least ceil(9 / 3) chunks.
            assert!(d.forward_calls >= 4 * 12 + 3 + 2 + 1 + 2, "{d:?}");
        }
    }
}

/// `moed bench --batch`: both arms measured, attention batched where the kernel allows it.
#[test]
fn the_batch_bench_measures_both_arms() {
    for (arch, batched) in [("qwen3_moe", true), ("deepseek_v3", false)] {
        let engine = Engine::load(&package(arch), EngineOptions::default()).expect("load");
        let cfg = moed::bench::BenchConfig {
            prompt_tokens: 4,
            decode_tokens: 2,
            repeat: 1,
            bandwidth_bytes: 1 << 20,
            batch: 3,
            ..moed::bench::BenchConfig::default()
        };
        let report = moed::bench::run(&engine, &cfg, None).expect("bench");
        let b = report.batch.expect("the batch comparison ran");
        assert_eq!(b.sequences, 3);
        assert!(
            b.alone_tok_s > 0.0 && b.batched_tok_s > 0.0,
            "{arch}: {b:?}"
        );
        assert_eq!(b.attention_batched, batched, "{arch}");
    }
}
