//! The architectures' native routing rule (models/FORMAT.md, "Routing rule"), written to make the
//! same floating-point operations in the same order as the engine's native gate, so that a plugin
//! using it decides bit-identically. Exposed in steps so that plugins can change one of them
//! (mask experts, pin experts, choose fewer).

use crate::gate::{GroupScore, MaskedChoice, ModelRouting, Scoring};

/// Buffers for one layer call (allocated once per call, reused per token).
pub struct Scratch {
    pub scores: Vec<f32>,
    pub choice: Vec<f32>,
    pub order: Vec<u32>,
    groups: Vec<f32>,
    group_order: Vec<u32>,
    pub chosen: Vec<u32>,
    pub chosen_w: Vec<f32>,
}

impl Scratch {
    pub fn new(model: &ModelRouting) -> Scratch {
        let e = model.num_experts as usize;
        let n_group = model.group_limit.as_ref().map_or(0, |g| g.n_group as usize);
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

/// Indices of the `k` largest values, largest first; ties go to the lower index.
pub fn top_k_into(values: &[f32], k: usize, order: &mut Vec<u32>) {
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

/// Steps 1-3: `scores` and `choice` (bias added, groups outside the best ones masked).
pub fn scores_and_choice(
    model: &ModelRouting,
    bias: Option<&[f32]>,
    logits: &[f32],
    s: &mut Scratch,
) {
    match model.scoring {
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
    match bias {
        Some(b) => {
            for ((c, &sc), &bb) in s.choice.iter_mut().zip(&s.scores).zip(b) {
                *c = sc + bb;
            }
        }
        None => s.choice.copy_from_slice(&s.scores),
    }
    if let Some(g) = &model.group_limit {
        let n_group = g.n_group as usize;
        let size = s.choice.len() / n_group;
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
        top_k_into(&s.groups, g.topk_group as usize, &mut s.group_order);
        let masked = match g.masked {
            MaskedChoice::Zero => 0.0,
            MaskedChoice::NegInf => f32::NEG_INFINITY,
        };
        for gi in 0..n_group {
            if !s.group_order.contains(&(gi as u32)) {
                s.choice[gi * size..(gi + 1) * size].fill(masked);
            }
        }
    }
}

/// Step 5 for the experts in `s.chosen`: weights from `scores`, normalized with eps when the model
/// says so, then scaled.
pub fn weights(model: &ModelRouting, s: &mut Scratch) {
    s.chosen_w.clear();
    s.chosen_w
        .extend(s.chosen.iter().map(|&i| s.scores[i as usize]));
    if model.norm_topk_prob {
        let sum: f32 = s.chosen_w.iter().sum();
        let denom = sum + model.norm_eps;
        for w in s.chosen_w.iter_mut() {
            *w /= denom;
        }
    }
    for w in s.chosen_w.iter_mut() {
        *w *= model.routed_scaling_factor;
    }
}

/// The whole native rule for one token: `s.chosen` and `s.chosen_w` hold the answer.
pub fn route_token(model: &ModelRouting, bias: Option<&[f32]>, logits: &[f32], s: &mut Scratch) {
    scores_and_choice(model, bias, logits, s);
    top_k_into(&s.choice, model.top_k as usize, &mut s.order);
    s.chosen.clear();
    s.chosen.extend_from_slice(&s.order);
    weights(model, s);
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
