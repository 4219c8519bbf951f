//! The prompt of a routing benchmark: random token ids from a seed, checked to fit the context.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::engine::Engine;

/// `prompt_tokens` random ids of `engine`'s vocabulary (the same for the same `seed`), once the
/// prompt and `decode_tokens` are known to fit its context length; the error names the numbers.
pub fn random_prompt(
    engine: &Engine,
    (prompt_tokens, decode_tokens): (usize, usize),
    seed: u64,
) -> Result<Vec<u32>, String> {
    let vocab = engine.package().vocab_size() as u32;
    let ctx = engine.package().context_length();
    if prompt_tokens == 0 || decode_tokens == 0 || prompt_tokens + decode_tokens + 1 > ctx {
        return Err(format!(
            "prompt ({prompt_tokens}) and decode ({decode_tokens}) tokens must be at least 1 and fit the context length {ctx}"
        ));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    Ok((0..prompt_tokens)
        .map(|_| rng.random_range(0..vocab))
        .collect())
}
