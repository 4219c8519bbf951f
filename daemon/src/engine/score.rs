//! Per-token log-probabilities of a token sequence (what `moed score` prints).

use std::sync::Arc;

use super::{Engine, EngineError, Gate, Logits};

/// Tokens scored per forward call: bounds the `[chunk x vocab]` logits held at once.
const CHUNK: usize = 256;

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
    let v = engine.package().vocab_size();
    let mut seq = engine.new_sequence();
    seq.set_gate(gate);
    let mut out = Vec::with_capacity(ids.len());
    if ids.is_empty() {
        return Ok(out);
    }
    out.push(None);
    // Logits of row r predict ids[start + r + 1].
    for start in (0..ids.len()).step_by(CHUNK) {
        let chunk = &ids[start..(start + CHUNK).min(ids.len())];
        let logits = engine.forward(&mut seq, chunk, Logits::All)?;
        for (r, row) in logits.chunks_exact(v).enumerate() {
            if let Some(&next) = ids.get(start + r + 1) {
                out.push(Some(log_softmax_at(row, next as usize)));
            }
        }
    }
    Ok(out)
}

/// `log softmax(row)[id]`, accumulated in f64.
pub fn log_softmax_at(row: &[f32], id: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    row[id] as f64 - max - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::log_softmax_at;

    #[test]
    fn log_softmax_matches_a_hand_computed_value() {
        // log(e^2 / (e^0 + e^1 + e^2)) = 2 - ln(1 + e + e^2)
        let want = 2.0 - (1.0 + 1f64.exp() + 2f64.exp()).ln();
        assert!((log_softmax_at(&[0.0, 1.0, 2.0], 2) - want).abs() < 1e-12);
        // Large logits do not overflow.
        assert!((log_softmax_at(&[1000.0, 1000.0], 0) - 0.5f64.ln()).abs() < 1e-12);
    }
}
