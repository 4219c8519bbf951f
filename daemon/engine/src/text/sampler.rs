//! Chooses the next token from logits: greedy, or sampling with temperature, top-k, top-p, min-p and
//! repetition penalty, applied in transformers' order and with its semantics.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplerError {
    #[error("temperature must be a finite number >= 0, got {0}")]
    Temperature(f32),
    #[error("top_p must be in (0, 1], got {0}")]
    TopP(f32),
    #[error("min_p must be in [0, 1], got {0}")]
    MinP(f32),
    #[error("repetition_penalty must be a finite number > 0, got {0}")]
    RepetitionPenalty(f32),
    #[error("the logits are empty")]
    EmptyLogits,
    #[error("no token has a finite logit (all {0} are NaN or -inf)")]
    NoFiniteLogits(usize),
}

/// Sampling parameters. `temperature == 0` means greedy (argmax), as `do_sample=False`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (ties with the last kept one stay); 0 disables.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; 1 disables.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 disables.
    pub min_p: f32,
    /// Divides positive logits and multiplies negative ones of tokens already in the context; 1 disables.
    pub repetition_penalty: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams::greedy()
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    pub fn validate(&self) -> Result<(), SamplerError> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(SamplerError::Temperature(self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplerError::TopP(self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(SamplerError::MinP(self.min_p));
        }
        if !self.repetition_penalty.is_finite() || self.repetition_penalty <= 0.0 {
            return Err(SamplerError::RepetitionPenalty(self.repetition_penalty));
        }
        Ok(())
    }
}

/// A sampler with its own random stream: the same seed, parameters and logits give the same tokens.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams, seed: u64) -> Result<Self, SamplerError> {
        params.validate()?;
        Ok(Sampler {
            params,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Next token given the logits over the vocabulary and the ids seen so far (prompt and
    /// generated), which the repetition penalty needs.
    pub fn sample(&mut self, logits: &[f32], context: &[u32]) -> Result<u32, SamplerError> {
        if self.params.is_greedy() {
            let scores = self.penalized(logits, context)?;
            return argmax(&scores).ok_or(SamplerError::NoFiniteLogits(logits.len()));
        }
        let dist = self.distribution(logits, context)?;
        // `dist` is normalized and non-empty; the walk ends on the last candidate if rounding
        // leaves the draw above the final cumulative sum.
        let draw: f64 = self.rng.random::<f64>();
        let mut cumulative = 0.0;
        for &(id, p) in &dist {
            cumulative += p;
            if draw < cumulative {
                return Ok(id);
            }
        }
        dist.last()
            .map(|&(id, _)| id)
            .ok_or(SamplerError::NoFiniteLogits(logits.len()))
    }

    /// The distribution sampling draws from, most likely first: the candidates left after every
    /// filter and their renormalized probabilities. For greedy it is the argmax with probability 1.
    pub fn distribution(
        &self,
        logits: &[f32],
        context: &[u32],
    ) -> Result<Vec<(u32, f64)>, SamplerError> {
        let scores = self.penalized(logits, context)?;
        if self.params.is_greedy() {
            let id = argmax(&scores).ok_or(SamplerError::NoFiniteLogits(logits.len()))?;
            return Ok(vec![(id, 1.0)]);
        }
        let t = f64::from(self.params.temperature);
        let mut cands: Vec<(u32, f64)> = scores
            .iter()
            .enumerate()
            .filter(|(_, s)| **s > f64::NEG_INFINITY)
            .map(|(i, &s)| (i as u32, s / t))
            .collect();
        if cands.is_empty() {
            return Err(SamplerError::NoFiniteLogits(logits.len()));
        }
        // Descending by score; equal scores keep vocabulary order.
        let by_score = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let k = self.params.top_k;
        if k > 0 && k < cands.len() {
            cands.select_nth_unstable_by(k - 1, by_score);
            let kth = cands[k - 1].1;
            // Ties with the k-th score stay, as transformers' `scores < topk(...)[-1]` keeps them.
            let rest = cands.split_off(k);
            cands.extend(rest.into_iter().filter(|c| c.1 >= kth));
        }
        cands.sort_unstable_by(by_score);
        softmax_in_place(&mut cands);
        let top_p = f64::from(self.params.top_p);
        if top_p < 1.0 {
            // transformers removes a token when the probability mass strictly below it (sorted
            // ascending, itself included) is <= 1 - top_p; equivalently a token stays while the mass
            // strictly above it is < top_p. The most likely token always stays.
            let mut above = 0.0;
            let mut keep = 0;
            for (i, &(_, p)) in cands.iter().enumerate() {
                if i > 0 && above >= top_p {
                    break;
                }
                above += p;
                keep = i + 1;
            }
            cands.truncate(keep);
            renormalize(&mut cands);
        }
        let min_p = f64::from(self.params.min_p);
        if min_p > 0.0 {
            let threshold = min_p * cands[0].1;
            let keep = cands.iter().take_while(|c| c.1 >= threshold).count().max(1);
            cands.truncate(keep);
            renormalize(&mut cands);
        }
        Ok(cands)
    }

    /// Logits as f64 with the repetition penalty applied and NaN treated as -inf; +inf stays the
    /// largest finite value so that a model that overflows still picks its preferred token.
    fn penalized(&self, logits: &[f32], context: &[u32]) -> Result<Vec<f64>, SamplerError> {
        if logits.is_empty() {
            return Err(SamplerError::EmptyLogits);
        }
        let mut scores: Vec<f64> = logits
            .iter()
            .map(|&x| match x {
                x if x.is_nan() => f64::NEG_INFINITY,
                x if x == f32::INFINITY => f64::from(f32::MAX),
                x => f64::from(x),
            })
            .collect();
        let penalty = f64::from(self.params.repetition_penalty);
        if penalty != 1.0 {
            let mut seen = vec![false; scores.len()];
            for &id in context {
                let Some(score) = scores.get_mut(id as usize) else {
                    continue;
                };
                if std::mem::replace(&mut seen[id as usize], true) {
                    continue;
                }
                *score = if *score > 0.0 {
                    *score / penalty
                } else {
                    *score * penalty
                };
            }
        }
        Ok(scores)
    }
}

/// Index of the largest finite-or-capped score; the first one on ties (as `torch.argmax`).
fn argmax(scores: &[f64]) -> Option<u32> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &s) in scores.iter().enumerate() {
        if s > f64::NEG_INFINITY && best.is_none_or(|(_, b)| s > b) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i as u32)
}

/// Turns scores (sorted descending) into probabilities.
fn softmax_in_place(cands: &mut [(u32, f64)]) {
    let max = cands.first().map_or(0.0, |c| c.1);
    for c in cands.iter_mut() {
        c.1 = (c.1 - max).exp();
    }
    renormalize(cands);
}

fn renormalize(cands: &mut [(u32, f64)]) {
    let total: f64 = cands.iter().map(|c| c.1).sum();
    if total > 0.0 {
        for c in cands.iter_mut() {
            c.1 /= total;
        }
    }
}

#[cfg(test)]
#[path = "sampler_tests.rs"]
mod tests;
