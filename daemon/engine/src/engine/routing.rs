//! Expert selection: the gating interface (native rule or a plugin), and the one place where any
//! gate's answer is checked before the engine acts on it.

use moed_shared::routing::{self as rule, RoutingParams, Rule};

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
            moed_shared::routing::check_choice(tok, ex, w, e)?;
        }
        Ok(())
    }
}

/// The largest weight a gate may give an expert. Finite is not enough: the expert outputs are
/// summed times their weights in f32, and a weight of `f32::MAX` turns the hidden state into
/// infinities. The plugin host checks the same bound (`moed_plugins::gate::MAX_WEIGHT`) on WASM
/// answers; this check covers every gate.
pub const MAX_WEIGHT: f32 = moed_shared::routing::MAX_WEIGHT;

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
/// transformers) describes it; the rule itself is `moed_shared::routing`, shared with the plugin SDK.
#[derive(Debug, Clone)]
pub struct NativeGate {
    cfg: RoutingConfig,
    rule: Rule,
    /// `correction_bias` per layer (None for dense layers and layers without one).
    bias: Vec<Option<Vec<f32>>>,
}

impl NativeGate {
    pub fn new(cfg: RoutingConfig, bias: Vec<Option<Vec<f32>>>) -> NativeGate {
        let rule = cfg.rule();
        NativeGate { cfg, rule, bias }
    }
}

/// The manifest's routing section as the shared rule's parameters.
impl RoutingParams for RoutingConfig {
    fn num_experts(&self) -> usize {
        self.num_experts
    }

    fn rule(&self) -> Rule {
        Rule {
            top_k: self.top_k,
            scoring: match self.scoring {
                Scoring::Softmax => rule::Scoring::Softmax,
                Scoring::Sigmoid => rule::Scoring::Sigmoid,
            },
            group_limit: self.group_limit.as_ref().map(|g| rule::GroupLimit {
                n_group: g.n_group,
                topk_group: g.topk_group,
                group_score: match g.group_score {
                    GroupScore::Max => rule::GroupScore::Max,
                    GroupScore::Top2Sum => rule::GroupScore::Top2Sum,
                },
                masked: g.masked.value(),
            }),
            norm_topk_prob: self.norm_topk_prob,
            norm_eps: self.norm_eps,
            routed_scaling_factor: self.routed_scaling_factor,
        }
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
        let mut scratch = rule::Scratch::new(&self.cfg);
        for t in 0..input.num_tokens {
            rule::route_token(&self.rule, bias, input.row(t), &mut scratch);
            out.push(&scratch.chosen, &scratch.chosen_w);
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "routing_tests.rs"]
mod tests;
