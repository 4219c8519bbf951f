//! Decode speed against context length (`moed bench --contexts 128,1024,4096`): one sequence per
//! context is filled with random tokens, then the contexts take turns decoding, so they all see the
//! same machine state; each run is cut back to its context afterwards, so every repeat decodes
//! from the same length.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::measure::{argmax, median};
use crate::engine::{Engine, EngineError, Logits, Sequence};

/// Tokens per forward call while filling a context: attention's scores grow with chunk x context,
/// so a long context is not prefilled in one call.
const FILL_CHUNK: usize = 256;

/// Decode speed from one context length.
#[derive(Debug, Clone, Serialize)]
pub struct ContextResult {
    /// Cached tokens before the first decoded token.
    pub context: usize,
    /// Median over the repeats.
    pub decode_tok_s: f64,
    /// `decode_tok_s` over that of the shortest context measured.
    pub ratio: f64,
    pub runs_decode_tok_s: Vec<f64>,
}

/// Checks the contexts fit the package before any model work is done.
pub(super) fn check(engine: &Engine, contexts: &[usize], decode: usize) -> Result<(), EngineError> {
    let ctx = engine.package().context_length();
    // + 1: the untimed step before each timed run.
    match contexts
        .iter()
        .find(|&&c| c == 0 || c.saturating_add(decode).saturating_add(1) > ctx)
    {
        Some(&bad) => Err(EngineError::Options(format!(
            "context {bad} must be at least 1, and with the {} decoded tokens at most the context length {ctx}",
            decode + 1
        ))),
        None => Ok(()),
    }
}

fn fill(engine: &Engine, tokens: &[u32]) -> Result<(Sequence, u32), EngineError> {
    let mut seq = engine.new_sequence();
    let mut next = 0;
    for chunk in tokens.chunks(FILL_CHUNK) {
        next = argmax(&engine.forward(&mut seq, chunk, Logits::Last)?);
    }
    Ok((seq, next))
}

fn decode_run(
    engine: &Engine,
    seq: &mut Sequence,
    mut next: u32,
    n: usize,
) -> Result<f64, EngineError> {
    // One untimed step first: ONNX Runtime re-plans a graph's first run after its input shapes
    // change, which happens whenever the contexts take turns.
    next = argmax(&engine.forward(seq, &[next], Logits::Last)?);
    let start = Instant::now();
    for _ in 0..n {
        next = argmax(&engine.forward(seq, &[next], Logits::Last)?);
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Decode tokens per second from each of `contexts` (ascending), `decode` tokens per run.
pub(super) fn run(
    engine: &Engine,
    contexts: &[usize],
    decode: usize,
    repeat: usize,
    seed: u64,
) -> Result<Vec<ContextResult>, EngineError> {
    check(engine, contexts, decode)?;
    let mut contexts = contexts.to_vec();
    contexts.sort_unstable();
    contexts.dedup();
    let vocab = engine.package().vocab_size() as u32;
    let mut rng = StdRng::seed_from_u64(seed);
    let longest = contexts.last().copied().unwrap_or(0);
    let prompt: Vec<u32> = (0..longest).map(|_| rng.random_range(0..vocab)).collect();
    let mut seqs = Vec::with_capacity(contexts.len());
    for &c in &contexts {
        let (mut seq, next) = fill(engine, &prompt[..c])?;
        decode_run(engine, &mut seq, next, decode.min(2))?; // warm-up at this length
        seq.truncate(c);
        seqs.push((seq, next));
    }
    let mut runs = vec![Vec::new(); contexts.len()];
    for r in 0..repeat.max(1) {
        // Which context goes first rotates, so none always runs right after the bandwidth-hungry one.
        for k in 0..contexts.len() {
            let i = (k + r) % contexts.len();
            let (seq, next) = &mut seqs[i];
            runs[i].push(decode_run(engine, seq, *next, decode)?);
            seq.truncate(contexts[i]);
        }
    }
    let medians: Vec<f64> = runs.iter().map(|v| median(v)).collect();
    let base = medians.first().copied().unwrap_or(0.0);
    Ok(contexts
        .into_iter()
        .zip(medians)
        .zip(runs)
        .map(
            |((context, decode_tok_s), runs_decode_tok_s)| ContextResult {
                context,
                decode_tok_s,
                ratio: if base > 0.0 { decode_tok_s / base } else { 0.0 },
                runs_decode_tok_s,
            },
        )
        .collect())
}
