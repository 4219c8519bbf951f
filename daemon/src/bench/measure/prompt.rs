//! The prompt of a routing benchmark: random token ids from a seed, checked to fit the context.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `prompt_tokens` random ids below `vocab` (the same for the same `seed`), once the prompt and
/// `decode_tokens` are known to fit the context length `ctx`; the error names the numbers.
pub fn random_prompt(
    vocab: u32,
    ctx: usize,
    prompt_tokens: usize,
    decode_tokens: usize,
    seed: u64,
) -> Result<Vec<u32>, String> {
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
