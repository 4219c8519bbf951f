//! One timed greedy run: prefill a prompt, then decode token by token, argmax each step.

use std::time::Instant;

use super::argmax;
use crate::engine::{Engine, EngineError, EngineStats, ExecMode, Logits, Sequence, log_softmax_at};

/// What one greedy run measured.
#[derive(Debug, Clone)]
pub struct GreedyRun {
    /// Wall time of the prefill (the first token's latency), seconds.
    pub prefill_secs: f64,
    /// Wall time of the decode steps, seconds.
    pub decode_secs: f64,
    pub prompt_tokens: usize,
    pub decode_tokens: usize,
    /// The first token after the prompt, then one per decode step.
    pub tokens: Vec<u32>,
    /// The last step's logits, bit for bit (to compare two runs exactly).
    pub last_logits: Vec<u32>,
    /// Engine counters accumulated over the decode steps only.
    pub decode_stats: EngineStats,
    /// KV-cache bytes the decode steps read (the cache's size before each step, summed).
    pub kv_bytes_read: f64,
}

impl GreedyRun {
    pub fn prefill_tok_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_secs
    }

    pub fn decode_tok_s(&self) -> f64 {
        self.decode_tokens as f64 / self.decode_secs
    }
}

/// Runs `prompt` then `decode` greedy steps on `seq` in `mode`.
pub fn greedy_run(
    engine: &Engine,
    seq: &mut Sequence,
    prompt: &[u32],
    decode: usize,
    mode: ExecMode,
) -> Result<GreedyRun, EngineError> {
    let start = Instant::now();
    let mut logits = engine.forward_with_mode(seq, prompt, Logits::Last, mode)?;
    let mut next = argmax(&logits);
    let prefill_secs = start.elapsed().as_secs_f64();
    let mut tokens = Vec::with_capacity(decode + 1);
    tokens.push(next);
    let before = engine.stats();
    let mut kv_bytes_read = 0.0;
    let start = Instant::now();
    for _ in 0..decode {
        kv_bytes_read += seq.cache_bytes() as f64;
        logits = engine.forward_with_mode(seq, &[next], Logits::Last, mode)?;
        next = argmax(&logits);
        tokens.push(next);
    }
    let decode_secs = start.elapsed().as_secs_f64();
    Ok(GreedyRun {
        prefill_secs,
        decode_secs,
        prompt_tokens: prompt.len(),
        decode_tokens: decode,
        tokens,
        last_logits: logits.iter().map(|x| x.to_bits()).collect(),
        decode_stats: engine.stats().since(&before),
        kv_bytes_read,
    })
}

/// Log-probabilities of `ids[from..]` given what precedes each (teacher-forced, one forward of
/// the whole sequence on `seq`), and the greedy token at each of those positions.
pub fn teacher_forced(
    engine: &Engine,
    seq: &mut Sequence,
    ids: &[u32],
    from: usize,
) -> Result<(Vec<f64>, Vec<u32>), EngineError> {
    let all = engine.forward(seq, ids, Logits::All)?;
    let vocab = engine.package().vocab_size();
    let mut lp = Vec::new();
    let mut greedy = Vec::new();
    for i in from.max(1) - 1..ids.len().saturating_sub(1) {
        let Some(row) = all.get(i * vocab..(i + 1) * vocab) else {
            break;
        };
        lp.push(log_softmax_at(row, ids[i + 1] as usize));
        greedy.push(argmax(row));
    }
    Ok((lp, greedy))
}
