//! The architectures' native routing rule (models/FORMAT.md, "Routing rule") for gate plugins:
//! the engine's own native gate runs the same code (`moed_shared::routing`), so that a plugin
//! using it decides bit-identically. Exposed in steps so that plugins can change one of them
//! (mask experts, pin experts, choose fewer).

use moed_shared::routing::{self as rule, Rule};

use crate::gate::{GroupScore, MaskedChoice, ModelRouting, Scoring};

pub use moed_shared::routing::{RoutingParams, top_k_into};

/// Buffers for one layer call (allocated once per call, reused per token): `scores`, `choice`,
/// `order`, `chosen`, `chosen_w`. `Scratch::new(&model)` makes them for a model.
pub type Scratch = moed_shared::routing::Scratch;

/// The model's routing as the shared rule's parameters.
impl RoutingParams for ModelRouting {
    fn num_experts(&self) -> usize {
        self.num_experts as usize
    }

    fn rule(&self) -> Rule {
        Rule {
            top_k: self.top_k as usize,
            scoring: match self.scoring {
                Scoring::Softmax => rule::Scoring::Softmax,
                Scoring::Sigmoid => rule::Scoring::Sigmoid,
            },
            group_limit: self.group_limit.as_ref().map(|g| rule::GroupLimit {
                n_group: g.n_group as usize,
                topk_group: g.topk_group as usize,
                group_score: match g.group_score {
                    GroupScore::Max => rule::GroupScore::Max,
                    GroupScore::Top2Sum => rule::GroupScore::Top2Sum,
                },
                masked: match g.masked {
                    MaskedChoice::Zero => 0.0,
                    MaskedChoice::NegInf => f32::NEG_INFINITY,
                },
            }),
            norm_topk_prob: self.norm_topk_prob,
            norm_eps: self.norm_eps,
            routed_scaling_factor: self.routed_scaling_factor,
        }
    }
}

/// Checks what `init` receives, so that `route` can index without further checks.
pub fn check_model(model: &ModelRouting) -> Result<(), String> {
    let e = model.num_experts as usize;
    if e == 0 || model.top_k == 0 || model.top_k as usize > e {
        return Err(format!(
            "top-{} of {e} experts is not a routing rule",
            model.top_k
        ));
    }
    if let Some(g) = &model.group_limit
        && (g.n_group == 0
            || !e.is_multiple_of(g.n_group as usize)
            || g.topk_group == 0
            || g.topk_group > g.n_group)
    {
        return Err(format!(
            "group limit {} of {} groups does not divide {e} experts",
            g.topk_group, g.n_group
        ));
    }
    for (layer, bias) in model.correction_bias.iter().enumerate() {
        if let Some(b) = bias
            && b.len() != e
        {
            return Err(format!(
                "layer {layer}: correction bias has {} values for {e} experts",
                b.len()
            ));
        }
    }
    Ok(())
}

/// Steps 1-3: `scores` and `choice` (bias added, groups outside the best ones masked).
pub fn scores_and_choice(
    model: &ModelRouting,
    bias: Option<&[f32]>,
    logits: &[f32],
    s: &mut Scratch,
) {
    rule::scores_and_choice(&model.rule(), bias, logits, s);
}

/// Step 5 for the experts in `s.chosen`: weights from `scores`, normalized with eps when the model
/// says so, then scaled.
pub fn weights(model: &ModelRouting, s: &mut Scratch) {
    rule::weights(&model.rule(), s);
}

/// The whole native rule for one token: `s.chosen` and `s.chosen_w` hold the answer.
pub fn route_token(model: &ModelRouting, bias: Option<&[f32]>, logits: &[f32], s: &mut Scratch) {
    rule::route_token(&model.rule(), bias, logits, s);
}

/// Checks a request against the model given to `init`.
pub fn check_request(
    model: &ModelRouting,
    layer: u32,
    num_tokens: u32,
    num_experts: u32,
    logits: usize,
) -> Result<(), String> {
    if num_experts != model.num_experts {
        return Err(format!(
            "layer {layer}: {num_experts} experts, the model has {}",
            model.num_experts
        ));
    }
    if logits != num_tokens as usize * num_experts as usize {
        return Err(format!(
            "layer {layer}: {logits} logits for {num_tokens} tokens x {num_experts} experts"
        ));
    }
    Ok(())
}
