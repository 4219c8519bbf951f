//! Sparse decode with the routed experts of each step side by side on the intra-op threads (one
//! expert per thread) against one after another (each matmul split across the threads), on one
//! engine: one prompt is prefilled once per arm, then the arms take turns decoding from it (the
//! first arm alternating, each run cut back to the prompt), so slow drifts of a shared machine
//! reach both alike. Every run must decode the same tokens with the same last logits, bit for
//! bit: only where the work runs differs.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::measure::{Arm, argmax, median, paired, ratio};
use crate::engine::{Engine, EngineError, Logits, Sequence};

/// Turns per arm for each of the bench's repeats: a turn is short, so more of them.
const TURNS_PER_REPEAT: usize = 3;

#[derive(Debug, Clone, Serialize)]
pub struct SideBySideResult {
    /// Median sparse decode tok/s with the experts one after another (the baseline).
    pub one_at_a_time_tok_s: f64,
    /// Median sparse decode tok/s with the experts side by side.
    pub side_by_side_tok_s: f64,
    /// side_by_side_tok_s / one_at_a_time_tok_s.
    pub ratio: f64,
    /// Whether every run decoded the same tokens with the same last logits, bit for bit.
    pub identical: bool,
    pub runs_one_at_a_time_tok_s: Vec<f64>,
    pub runs_side_by_side_tok_s: Vec<f64>,
}

/// What one turn decoded: its tokens and the last step's logits as bits.
type Decoded = (Vec<u32>, Vec<u32>);

fn decode_turn(
    engine: &Engine,
    seq: &mut Sequence,
    first: u32,
    n: usize,
) -> Result<(f64, Decoded), EngineError> {
    let mut next = first;
    let mut tokens = Vec::with_capacity(n);
    let mut logits = Vec::new();
    let start = Instant::now();
    for _ in 0..n {
        logits = engine.forward(seq, &[next], Logits::Last)?;
        next = argmax(&logits);
        tokens.push(next);
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((
        n as f64 / secs,
        (tokens, logits.iter().map(|x| x.to_bits()).collect()),
    ))
}

/// Takes `TURNS_PER_REPEAT × repeat` turns per arm of `decode` sparse steps after a `prompt`-token
/// prefill; the engine's setting is restored afterwards. None when it has one intra-op thread or
/// cannot run its experts side by side (a spinning pool, a GPU provider).
pub(super) fn run(
    engine: &Engine,
    prompt: usize,
    decode: usize,
    repeat: usize,
    seed: u64,
) -> Result<Option<SideBySideResult>, EngineError> {
    let configured = engine.experts_side_by_side();
    engine.set_experts_side_by_side(true);
    if engine.intra_threads() < 2 || !engine.experts_side_by_side() {
        engine.set_experts_side_by_side(configured);
        return Ok(None);
    }
    let result = measure(engine, prompt, decode.max(1), repeat, seed);
    engine.set_experts_side_by_side(configured);
    result.map(Some)
}

fn measure(
    engine: &Engine,
    prompt: usize,
    decode: usize,
    repeat: usize,
    seed: u64,
) -> Result<SideBySideResult, EngineError> {
    let vocab = engine.package().vocab_size() as u32;
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(0x51de));
    let ids: Vec<u32> = (0..prompt).map(|_| rng.random_range(0..vocab)).collect();
    let mut arms = Vec::with_capacity(2);
    for side in [false, true] {
        engine.set_experts_side_by_side(side);
        let mut seq = engine.new_sequence();
        let first = argmax(&engine.forward(&mut seq, &ids, Logits::Last)?);
        // Warm-up: the first steps after a prefill re-plan the graphs for one token.
        decode_turn(engine, &mut seq, first, decode.min(2))?;
        seq.truncate(prompt);
        arms.push((seq, first));
    }
    let mut decoded: Vec<Decoded> = Vec::new();
    let (a, b) = paired(TURNS_PER_REPEAT * repeat.max(1), |arm, _| {
        let i = usize::from(arm == Arm::B);
        engine.set_experts_side_by_side(arm == Arm::B);
        let (seq, first) = &mut arms[i];
        let (tok_s, out) = decode_turn(engine, seq, *first, decode)?;
        seq.truncate(prompt);
        decoded.push(out);
        Ok::<_, EngineError>(tok_s)
    })?;
    let identical = arms[0].1 == arms[1].1 && decoded.windows(2).all(|w| w[0] == w[1]);
    let (one, side) = (median(&a), median(&b));
    Ok(SideBySideResult {
        one_at_a_time_tok_s: one,
        side_by_side_tok_s: side,
        ratio: ratio(side, one),
        identical,
        runs_one_at_a_time_tok_s: a,
        runs_side_by_side_tok_s: b,
    })
}
