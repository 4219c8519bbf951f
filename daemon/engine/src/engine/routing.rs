//! Expert selection: the gating interface (native rule or a plugin), and the one place where any
//! gate's answer is checked before the engine acts on it.

use crate::package::{GroupScore, RoutingConfig, Scoring};

/// What a gate sees for one MoE layer and one forward call: the router's logits.
#[derive(Debug, Clone, Copy)]
pub struct RouterInput<'a> {
    /// `[num_tokens x num_experts]`, row-major, before softmax/sigmoid.
    pub logits: &'a [f32],
    pub num_tokens: usize,
    pub num_experts: usize,
    /// Experts to choose per token.
    pub top_k: usize,
}

impl<'a> RouterInput<'a> {
    /// The logits of token `t`.
    pub fn row(&self, t: usize) -> &'a [f32] {
        &self.logits[t * self.num_experts..(t + 1) * self.num_experts]
    }
}

/// A gate's answer: for every token exactly `k` distinct experts and their weights.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    pub k: usize,
    /// `[num_tokens x k]` expert indices.
    pub experts: Vec<u32>,
    /// `[num_tokens x k]` weights applied to those experts' outputs.
    pub weights: Vec<f32>,
}

impl Routing {
    /// Empties the answer for a new call choosing `k` experts per token (buffers are kept).
    pub fn reset(&mut self, k: usize) {
        self.k = k;
        self.experts.clear();
        self.weights.clear();
    }

    /// Appends one token's choice.
    pub fn push(&mut self, experts: &[u32], weights: &[f32]) {
        self.experts.extend_from_slice(experts);
        self.weights.extend_from_slice(weights);
    }

    /// Token `t`'s experts and weights.
    pub fn token(&self, t: usize) -> (&[u32], &[f32]) {
        let r = t * self.k..(t + 1) * self.k;
        (&self.experts[r.clone()], &self.weights[r])
    }

    /// Checks the answer against the question: one row per token, exactly `self.k` experts each
    /// (the model's top-k, or fewer: a plugin with the `fewer_experts` grant, such as an expert
    /// budget, may choose fewer; the plugin host checks that grant), indices in range, no
    /// duplicates, weights finite and non-negative.
    pub fn validate(&self, input: &RouterInput<'_>) -> Result<(), String> {
        let (t, e) = (input.num_tokens, input.num_experts);
        if self.k == 0 || self.k > input.top_k {
            return Err(format!(
                "it chose {} experts per token, the model uses {}",
                self.k, input.top_k
            ));
        }
        let k = self.k;
        if self.experts.len() != t * k || self.weights.len() != t * k {
            return Err(format!(
                "it returned {} experts and {} weights for {t} tokens x {k}; expected {} of each",
                self.experts.len(),
                self.weights.len(),
                t * k
            ));
        }
        for tok in 0..t {
            let (ex, w) = self.token(tok);
            for (j, &x) in ex.iter().enumerate() {
                if x as usize >= e {
                    return Err(format!(
                        "token {tok}: expert index {x} is out of range (the layer has {e} experts)"
                    ));
                }
                if ex[..j].contains(&x) {
                    return Err(format!("token {tok}: expert {x} is chosen twice"));
                }
                if !(w[j] >= 0.0 && w[j] <= MAX_WEIGHT) {
                    return Err(format!(
                        "token {tok}: weight {} of expert {x} is not a number from 0 to {MAX_WEIGHT}",
                        w[j]
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The largest weight a gate may give an expert. Finite is not enough: the expert outputs are
/// summed times their weights in f32, and a weight of `f32::MAX` turns the hidden state into
/// infinities. The plugin host checks the same bound (`moed_plugins::gate::MAX_WEIGHT`) on WASM
/// answers; this check covers every gate.
pub const MAX_WEIGHT: f32 = 1e4;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GateError(pub String);

/// Chooses experts from router logits. Implemented natively ([`NativeGate`]) and by the WASM gating
/// plugin; the engine validates every answer with [`Routing::validate`].
pub trait Gate: Send + Sync {
    /// Fills `out` (already reset to `input.top_k`) with one row per token.
    fn route(
        &self,
        layer: usize,
        input: &RouterInput<'_>,
        out: &mut Routing,
    ) -> Result<(), GateError>;
}

/// The architecture's own routing rule, exactly as FORMAT.md's "Routing rule" (which mirrors
/// transformers) describes it.
#[derive(Debug, Clone)]
pub struct NativeGate {
    cfg: RoutingConfig,
    /// `correction_bias` per layer (None for dense layers and layers without one).
    bias: Vec<Option<Vec<f32>>>,
}

impl NativeGate {
    pub fn new(cfg: RoutingConfig, bias: Vec<Option<Vec<f32>>>) -> NativeGate {
        NativeGate { cfg, bias }
    }
}

impl Gate for NativeGate {
    fn route(
        &self,
        layer: usize,
        input: &RouterInput<'_>,
        out: &mut Routing,
    ) -> Result<(), GateError> {
        let e = input.num_experts;
        if e != self.cfg.num_experts || input.top_k != self.cfg.top_k {
            return Err(GateError(format!(
                "asked for top-{} of {e} experts, the manifest says top-{} of {}",
                input.top_k, self.cfg.top_k, self.cfg.num_experts
            )));
        }
        let bias = self.bias.get(layer).and_then(Option::as_deref);
        let mut scratch = Scratch::new(e, self.cfg.group_limit.as_ref().map_or(0, |g| g.n_group));
        for t in 0..input.num_tokens {
            route_token(&self.cfg, bias, input.row(t), &mut scratch);
            out.push(&scratch.chosen, &scratch.chosen_w);
        }
        Ok(())
    }
}

/// Per-call buffers of the native rule (one allocation per layer call, not per token).
struct Scratch {
    scores: Vec<f32>,
    choice: Vec<f32>,
    order: Vec<u32>,
    groups: Vec<f32>,
    group_order: Vec<u32>,
    chosen: Vec<u32>,
    chosen_w: Vec<f32>,
}

impl Scratch {
    fn new(e: usize, n_group: usize) -> Scratch {
        Scratch {
            scores: vec![0.0; e],
            choice: vec![0.0; e],
            order: Vec::with_capacity(e),
            groups: vec![0.0; n_group],
            group_order: Vec::with_capacity(n_group),
            chosen: Vec::new(),
            chosen_w: Vec::new(),
        }
    }
}

/// Indices of the `k` largest values, largest first; ties go to the lower index.
fn top_k_into(values: &[f32], k: usize, order: &mut Vec<u32>) {
    order.clear();
    order.extend(0..values.len() as u32);
    let cmp = |a: &u32, b: &u32| {
        values[*b as usize]
            .total_cmp(&values[*a as usize])
            .then(a.cmp(b))
    };
    if k < order.len() {
        order.select_nth_unstable_by(k, cmp);
        order.truncate(k);
    }
    order.sort_unstable_by(cmp);
}

fn route_token(cfg: &RoutingConfig, bias: Option<&[f32]>, logits: &[f32], s: &mut Scratch) {
    // 1. scores in fp32.
    match cfg.scoring {
        Scoring::Softmax => {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for (o, &l) in s.scores.iter_mut().zip(logits) {
                *o = (l - max).exp();
                sum += *o;
            }
            for o in s.scores.iter_mut() {
                *o /= sum;
            }
        }
        Scoring::Sigmoid => {
            for (o, &l) in s.scores.iter_mut().zip(logits) {
                *o = 1.0 / (1.0 + (-l).exp());
            }
        }
    }
    // 2. choice = scores (+ correction bias).
    match bias {
        Some(b) => {
            for ((c, &sc), &bb) in s.choice.iter_mut().zip(&s.scores).zip(b) {
                *c = sc + bb;
            }
        }
        None => s.choice.copy_from_slice(&s.scores),
    }
    // 3. group limit: groups outside the best topk_group get the masked value (0.0 or -inf).
    if let Some(g) = &cfg.group_limit {
        let size = s.choice.len() / g.n_group;
        for (gi, chunk) in s.choice.chunks_exact(size).enumerate() {
            s.groups[gi] = match g.group_score {
                GroupScore::Max => chunk.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                GroupScore::Top2Sum => {
                    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
                    for &v in chunk {
                        if v > a {
                            b = a;
                            a = v;
                        } else if v > b {
                            b = v;
                        }
                    }
                    a + b
                }
            };
        }
        top_k_into(&s.groups, g.topk_group, &mut s.group_order);
        for gi in 0..g.n_group {
            if !s.group_order.contains(&(gi as u32)) {
                s.choice[gi * size..(gi + 1) * size].fill(g.masked.value());
            }
        }
    }
    // 4. the top_k largest choices.
    top_k_into(&s.choice, cfg.top_k, &mut s.order);
    // 5. weights from scores (not choice), normalized with eps, then scaled.
    s.chosen.clear();
    s.chosen_w.clear();
    s.chosen.extend_from_slice(&s.order);
    s.chosen_w
        .extend(s.order.iter().map(|&i| s.scores[i as usize]));
    if cfg.norm_topk_prob {
        let sum: f32 = s.chosen_w.iter().sum();
        let denom = sum + cfg.norm_eps;
        for w in s.chosen_w.iter_mut() {
            *w /= denom;
        }
    }
    for w in s.chosen_w.iter_mut() {
        *w *= cfg.routed_scaling_factor;
    }
}

#[cfg(test)]
#[path = "routing_tests.rs"]
mod tests;
