//! The architectures' native routing rule (models/FORMAT.md, "Routing rule"), in one place for the
//! engine's native gate and the plugin SDK, so that a plugin using it decides bit-identically.
//! Exposed in steps so that plugins can change one of them (mask experts, pin experts, choose
//! fewer).

/// The largest weight a gate may give an expert: the engine checks it on every gate's answer and
/// the plugin host on WASM answers (why this bound: `moed_plugins::gate::MAX_WEIGHT`).
pub const MAX_WEIGHT: f32 = 1e4;

/// Checks the choice of token `tok`: each expert below `num_experts` and chosen once, each weight
/// a number from 0 to [`MAX_WEIGHT`] (NaN is in no range, so it fails too).
pub fn check_choice(
    tok: usize,
    experts: &[u32],
    weights: &[f32],
    num_experts: usize,
) -> Result<(), String> {
    for (j, (&x, &w)) in experts.iter().zip(weights).enumerate() {
        if x as usize >= num_experts {
            return Err(format!(
                "token {tok}: expert {x} is out of range (the layer has {num_experts} experts)"
            ));
        }
        if experts[..j].contains(&x) {
            return Err(format!("token {tok}: expert {x} is chosen twice"));
        }
        if !(0.0..=MAX_WEIGHT).contains(&w) {
            return Err(format!(
                "token {tok}: weight {w} of expert {x} is not a number from 0 to {MAX_WEIGHT}"
            ));
        }
    }
    Ok(())
}

/// How router logits become scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoring {
    Softmax,
    Sigmoid,
}

/// How a group of experts is scored for the group limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupScore {
    Top2Sum,
    Max,
}

/// Only the best `topk_group` of `n_group` equal groups of experts may be chosen; the others get
/// `masked` as their choice value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupLimit {
    pub n_group: usize,
    pub topk_group: usize,
    pub group_score: GroupScore,
    pub masked: f32,
}

/// The parameters of the rule for one model. The caller has checked them: `n_group` divides the
/// number of experts and `topk_group <= n_group`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    pub top_k: usize,
    pub scoring: Scoring,
    pub group_limit: Option<GroupLimit>,
    pub norm_topk_prob: bool,
    pub norm_eps: f32,
    pub routed_scaling_factor: f32,
}

/// A model's routing as each side holds it (the engine's manifest, the plugin interface's
/// record): the number of experts and the rule's parameters.
pub trait RoutingParams {
    fn num_experts(&self) -> usize;
    fn rule(&self) -> Rule;
}

/// Buffers for one layer call (allocated once per call, reused per token).
#[derive(Debug, Clone)]
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
    pub fn new(model: &impl RoutingParams) -> Scratch {
        let num_experts = model.num_experts();
        let n_group = model.rule().group_limit.as_ref().map_or(0, |g| g.n_group);
        Scratch {
            scores: vec![0.0; num_experts],
            choice: vec![0.0; num_experts],
            order: Vec::with_capacity(num_experts),
            groups: vec![0.0; n_group],
            group_order: Vec::with_capacity(n_group),
            chosen: Vec::new(),
            chosen_w: Vec::new(),
        }
    }
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

/// Steps 1-3: `scores` in fp32, and `choice` (correction bias added, groups outside the best
/// `topk_group` masked).
pub fn scores_and_choice(rule: &Rule, bias: Option<&[f32]>, logits: &[f32], s: &mut Scratch) {
    match rule.scoring {
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
    if let Some(g) = &rule.group_limit {
        let size = s.choice.len() / g.n_group;
        for (gi, chunk) in s.choice.chunks_exact(size).enumerate() {
            s.groups[gi] = match g.group_score {
                GroupScore::Max => chunk.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                GroupScore::Top2Sum => top2_sum(chunk),
            };
        }
        top_k_into(&s.groups, g.topk_group, &mut s.group_order);
        for gi in 0..g.n_group {
            if !s.group_order.contains(&(gi as u32)) {
                s.choice[gi * size..(gi + 1) * size].fill(g.masked);
            }
        }
    }
}

fn top2_sum(values: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &v in values {
        if v > a {
            b = a;
            a = v;
        } else if v > b {
            b = v;
        }
    }
    a + b
}

/// Step 5 for the experts in `s.chosen`: weights from `scores` (not `choice`), normalized with
/// eps when the model says so, then scaled.
pub fn weights(rule: &Rule, s: &mut Scratch) {
    s.chosen_w.clear();
    s.chosen_w
        .extend(s.chosen.iter().map(|&i| s.scores[i as usize]));
    if rule.norm_topk_prob {
        let sum: f32 = s.chosen_w.iter().sum();
        let denom = sum + rule.norm_eps;
        for w in s.chosen_w.iter_mut() {
            *w /= denom;
        }
    }
    for w in s.chosen_w.iter_mut() {
        *w *= rule.routed_scaling_factor;
    }
}

/// The whole rule for one token: `s.chosen` and `s.chosen_w` hold the answer.
pub fn route_token(rule: &Rule, bias: Option<&[f32]>, logits: &[f32], s: &mut Scratch) {
    scores_and_choice(rule, bias, logits, s);
    top_k_into(&s.choice, rule.top_k, &mut s.order);
    s.chosen.clear();
    s.chosen.extend_from_slice(&s.order);
    weights(rule, s);
}
