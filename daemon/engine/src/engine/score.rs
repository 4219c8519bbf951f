//! Per-token log-probabilities of a token sequence (what `moed score` prints).

use std::sync::Arc;

use super::{Engine, EngineError, Gate, Logits};

/// Most tokens scored per forward call.
const CHUNK: usize = 256;

/// Most bytes of logits one forward call of scoring may ask for (`[rows x vocab]` f32): a
/// large vocabulary scores fewer tokens per call, so memory stays bounded whatever the text
/// length (all rows at once were ~2 GiB for a 129k vocabulary at a 4k context).
pub const SCORE_LOGITS_BYTES: usize = 32 << 20;

/// Tokens per forward call for a vocabulary of `vocab`: [`CHUNK`], fewer when their logits
/// would pass [`SCORE_LOGITS_BYTES`], at least one.
pub fn score_chunk(vocab: usize) -> usize {
    (SCORE_LOGITS_BYTES / vocab.max(1).saturating_mul(4)).clamp(1, CHUNK)
}

/// `log p(ids[i] | ids[..i])` for every token, `None` for the first. Runs in chunks over one
/// sequence, so the KV cache carries the context between chunks.
pub fn score_tokens(engine: &Engine, ids: &[u32]) -> Result<Vec<Option<f64>>, EngineError> {
    score_tokens_with(engine, ids, None)
}

/// [`score_tokens`] with `gate` routing the sequence instead of the engine's rule.
pub fn score_tokens_with(
    engine: &Engine,
    ids: &[u32],
    gate: Option<Arc<dyn Gate>>,
) -> Result<Vec<Option<f64>>, EngineError> {
    Ok(score_tokens_until(engine, ids, gate, &mut || false)?.unwrap_or_default())
}

/// [`score_tokens_with`] that asks `stop` before each chunk and returns `None` when it says so
/// (a cancelled request).
pub fn score_tokens_until(
    engine: &Engine,
    ids: &[u32],
    gate: Option<Arc<dyn Gate>>,
    stop: &mut dyn FnMut() -> bool,
) -> Result<Option<Vec<Option<f64>>>, EngineError> {
    let v = engine.package().vocab_size();
    let chunk_len = score_chunk(v);
    // Each id indexes a row of logits below; the tokenizer of a bad package may know more ids
    // than the model.
    if let Some(&token) = ids.iter().find(|&&id| id as usize >= v) {
        return Err(EngineError::TokenOutOfRange { token, vocab: v });
    }
    let mut seq = engine.new_sequence();
    seq.set_gate(gate);
    let mut out = Vec::with_capacity(ids.len());
    if ids.is_empty() {
        return Ok(Some(out));
    }
    out.push(None);
    // Logits of row r predict ids[start + r + 1].
    for start in (0..ids.len()).step_by(chunk_len) {
        if stop() {
            return Ok(None);
        }
        let chunk = &ids[start..(start + chunk_len).min(ids.len())];
        let logits = engine.forward(&mut seq, chunk, Logits::All)?;
        for (r, row) in logits.chunks_exact(v).enumerate() {
            if let Some(&next) = ids.get(start + r + 1) {
                out.push(Some(log_softmax_at(row, next as usize)));
            }
        }
    }
    Ok(Some(out))
}

/// `log softmax(row)[id]`, accumulated in f64.
pub fn log_softmax_at(row: &[f32], id: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    row[id] as f64 - max - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::{CHUNK, log_softmax_at, score_chunk};

    #[test]
    fn chunks_shrink_for_large_vocabularies_only() {
        assert_eq!(score_chunk(32_000), CHUNK);
        assert_eq!(score_chunk(129_280), 64);
        assert!(score_chunk(129_280) * 129_280 * 4 <= super::SCORE_LOGITS_BYTES);
        assert_eq!(score_chunk(usize::MAX), 1);
        assert_eq!(score_chunk(0), CHUNK);
    }

    #[test]
    fn log_softmax_matches_a_hand_computed_value() {
        // log(e^2 / (e^0 + e^1 + e^2)) = 2 - ln(1 + e + e^2)
        let want = 2.0 - (1.0 + 1f64.exp() + 2f64.exp()).ln();
        assert!((log_softmax_at(&[0.0, 1.0, 2.0], 2) - want).abs() < 1e-12);
        // Large logits do not overflow.
        assert!((log_softmax_at(&[1000.0, 1000.0], 0) - 0.5f64.ln()).abs() < 1e-12);
    }
}
