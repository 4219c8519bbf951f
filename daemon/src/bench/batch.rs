//! Batched decode: N sequences stepping together ([`Engine::forward_batch`], what concurrent
//! generations share in the daemon) against one sequence decoding alone, on one engine, the arms
//! alternating (paired) so slow drifts of a shared machine reach both alike. Reports aggregate
//! tokens/s of each, their ratio, the time of one step, and where a batched step's time goes.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::measure::{Arm, argmax, median, paired, ratio};
use crate::engine::{Engine, EngineError, Logits, Sequence, Step};

/// Turns per arm for each of the bench's repeats.
const TURNS_PER_REPEAT: usize = 3;

#[derive(Debug, Clone, Serialize)]
pub struct BatchResult {
    /// Sequences in the batched arm.
    pub sequences: usize,
    /// Median decode tok/s of one sequence alone.
    pub alone_tok_s: f64,
    /// Median aggregate decode tok/s of the batched sequences.
    pub batched_tok_s: f64,
    /// batched_tok_s / alone_tok_s.
    pub ratio: f64,
    /// Median milliseconds of one step, alone and batched.
    pub alone_step_ms: f64,
    pub batched_step_ms: f64,
    /// Of a batched step: milliseconds in routed-expert graphs, the expert runs, milliseconds in
    /// attention, in the head, and in the other graphs (routers, shared experts, embedding).
    pub batched_expert_ms: f64,
    pub batched_expert_runs: f64,
    pub batched_attention_ms: f64,
    pub batched_head_ms: f64,
    pub batched_other_ms: f64,
    /// Whether every batched step ran attention once for all the sequences.
    pub attention_batched: bool,
}

/// Decodes `n` steps of every sequence in `seqs` together from `firsts`; tok/s over all of them.
fn turn(
    engine: &Engine,
    seqs: &mut [Sequence],
    firsts: &[u32],
    n: usize,
) -> Result<f64, EngineError> {
    let mut next: Vec<[u32; 1]> = firsts.iter().map(|&t| [t]).collect();
    let start = Instant::now();
    for _ in 0..n {
        let mut steps: Vec<Step<'_>> = seqs
            .iter_mut()
            .zip(&next)
            .map(|(seq, tokens)| Step {
                seq,
                tokens,
                which: Logits::Last,
            })
            .collect();
        let out = engine.forward_batch(&mut steps)?;
        for (slot, logits) in next.iter_mut().zip(out) {
            *slot = [argmax(&logits?)];
        }
    }
    Ok((seqs.len() * n) as f64 / start.elapsed().as_secs_f64())
}

/// `sequences` prompts of `prompt` random tokens, then `TURNS_PER_REPEAT × repeat` turns per arm
/// of `decode` steps. None for fewer than 2 sequences.
pub(super) fn run(
    engine: &Engine,
    sequences: usize,
    prompt: usize,
    decode: usize,
    repeat: usize,
    seed: u64,
) -> Result<Option<BatchResult>, EngineError> {
    if sequences < 2 {
        return Ok(None);
    }
    let decode = decode.max(1);
    let vocab = engine.package().vocab_size() as u32;
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(0xba7c));
    let mut seqs = Vec::with_capacity(sequences);
    let mut firsts = Vec::with_capacity(sequences);
    for _ in 0..sequences {
        let ids: Vec<u32> = (0..prompt).map(|_| rng.random_range(0..vocab)).collect();
        let mut seq = engine.new_sequence();
        firsts.push(argmax(&engine.forward(&mut seq, &ids, Logits::Last)?));
        seqs.push(seq);
    }
    // Warm-up of both arms: the first steps load the experts they route to.
    for n in [1, sequences] {
        turn(engine, &mut seqs[..n], &firsts[..n], decode.min(4))?;
        seqs.iter_mut().for_each(|s| s.truncate(prompt));
    }
    let mut stats = Vec::new();
    let (a, b) = paired(TURNS_PER_REPEAT * repeat.max(1), |arm, _| {
        let n = if arm == Arm::A { 1 } else { sequences };
        let before = engine.stats();
        let tok_s = turn(engine, &mut seqs[..n], &firsts[..n], decode)?;
        if arm == Arm::B {
            stats.push(engine.stats().since(&before));
        }
        seqs.iter_mut().for_each(|s| s.truncate(prompt));
        Ok::<_, EngineError>(tok_s)
    })?;
    let steps = (stats.len() * decode).max(1) as f64;
    let sum = |f: &dyn Fn(&crate::engine::EngineStats) -> u64| {
        stats.iter().map(|s| f(s) as f64).sum::<f64>()
    };
    let expert_ms = sum(&|s| s.expert_nanos) / 1e6 / steps;
    let ort_ms = sum(&|s| s.ort_nanos) / 1e6 / steps;
    let layers = engine.package().manifest().layers.len() as f64;
    let (alone, batched) = (median(&a), median(&b));
    Ok(Some(BatchResult {
        sequences,
        alone_tok_s: alone,
        batched_tok_s: batched,
        ratio: ratio(batched, alone),
        alone_step_ms: ratio(1e3, alone),
        batched_step_ms: ratio(1e3 * sequences as f64, batched),
        batched_expert_ms: expert_ms,
        batched_expert_runs: sum(&|s| s.expert_runs) / steps,
        batched_attention_ms: sum(&|s| s.attention_nanos) / 1e6 / steps,
        batched_head_ms: sum(&|s| s.head_nanos) / 1e6 / steps,
        batched_other_ms: ort_ms
            - expert_ms
            - (sum(&|s| s.attention_nanos) + sum(&|s| s.head_nanos)) / 1e6 / steps,
        attention_batched: sum(&|s| s.batched_attention_runs) >= steps * layers,
    }))
}
