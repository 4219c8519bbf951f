//! Routing cases checked against transformers 5.24's own router modules (the expected numbers come
//! from running DeepseekV3TopkRouter, DeepseekV2TopkRouter, MixtralTopKRouter and
//! Qwen3MoeTopKRouter on these logits with an identity weight), and the gate-answer validator.

use super::*;
use crate::package::{GroupLimit, MaskedChoice};

const LOGITS: [f32; 24] = [
    0.3, -1.2, 2.0, 0.1, -0.4, 1.5, -2.0, 0.7, //
    -0.5, 0.2, 0.9, -1.1, 1.8, -0.3, 0.4, 0.0, //
    1.0, 1.0, -1.0, 0.5, 0.2, -0.2, 2.2, -0.7,
];

fn cfg(
    scoring: Scoring,
    top_k: usize,
    group_limit: Option<GroupLimit>,
    norm: bool,
    eps: f32,
    scale: f32,
) -> RoutingConfig {
    RoutingConfig {
        num_experts: 8,
        top_k,
        scoring,
        group_limit,
        norm_topk_prob: norm,
        norm_eps: eps,
        routed_scaling_factor: scale,
    }
}

fn group(
    n_group: usize,
    topk_group: usize,
    group_score: GroupScore,
    masked: MaskedChoice,
) -> Option<GroupLimit> {
    Some(GroupLimit {
        n_group,
        topk_group,
        group_score,
        masked,
    })
}

/// Routes `logits` with layer 0 and returns each token's (expert, weight) pairs sorted by expert.
fn route(cfg: RoutingConfig, bias: Option<Vec<f32>>, logits: &[f32]) -> Vec<Vec<(u32, f32)>> {
    let e = cfg.num_experts;
    let k = cfg.top_k;
    let gate = NativeGate::new(cfg, vec![bias]);
    let input = RouterInput {
        logits,
        num_tokens: logits.len() / e,
        num_experts: e,
        top_k: k,
    };
    let mut out = Routing::default();
    out.reset(k);
    gate.route(0, &input, &mut out).expect("route");
    out.validate(&input).expect("valid answer");
    (0..input.num_tokens)
        .map(|t| {
            let (ex, w) = out.token(t);
            let mut pairs: Vec<(u32, f32)> = ex.iter().copied().zip(w.iter().copied()).collect();
            pairs.sort_by_key(|p| p.0);
            pairs
        })
        .collect()
}

fn assert_routes(got: &[Vec<(u32, f32)>], want: &[&[(u32, f32)]]) {
    assert_eq!(got.len(), want.len());
    for (t, (g, w)) in got.iter().zip(want).enumerate() {
        let ge: Vec<u32> = g.iter().map(|p| p.0).collect();
        let we: Vec<u32> = w.iter().map(|p| p.0).collect();
        assert_eq!(ge, we, "token {t} experts");
        for ((_, gw), (_, ww)) in g.iter().zip(w.iter()) {
            assert!((gw - ww).abs() < 1e-6, "token {t}: weight {gw} vs {ww}");
        }
    }
}

#[test]
fn deepseek_v3_sigmoid_bias_grouped_normalized_scaled() {
    let bias = vec![0.05, -0.1, 0.0, 0.2, -0.05, 0.1, -0.2, 0.15];
    let c = cfg(
        Scoring::Sigmoid,
        2,
        group(4, 2, GroupScore::Top2Sum, MaskedChoice::NegInf),
        true,
        1e-20,
        2.5,
    );
    let got = route(c, Some(bias), &LOGITS);
    assert_routes(
        &got,
        &[
            &[(2, 1.296_531_9), (5, 1.203_468_3)],
            &[(2, 1.132_735_7), (4, 1.367_264_3)],
            &[(0, 1.120_356_4), (6, 1.379_643_7)],
        ],
    );
}

#[test]
fn masked_value_decides_when_kept_choices_are_negative() {
    // Group 0 is kept; its second-best choice is negative (sigmoid(-3) - 0.2).
    let logits = [2.0, -3.0, -3.5, -4.0, 0.5, -3.0, -3.0, -3.0];
    let bias = vec![0.0, -0.2, -0.2, -0.2, 0.0, 0.0, 0.0, 0.0];
    let c = |m| {
        cfg(
            Scoring::Sigmoid,
            2,
            group(2, 1, GroupScore::Top2Sum, m),
            true,
            1e-20,
            1.0,
        )
    };
    // transformers' DeepSeek-V3 masks with -inf: both experts come from the kept group.
    let got = route(c(MaskedChoice::NegInf), Some(bias.clone()), &logits);
    assert_routes(&got, &[&[(0, 0.948_906_84), (1, 0.051_093_195)]]);
    // With 0.0 the first masked expert (4, a 0.0 choice) beats the negative one.
    let got = route(c(MaskedChoice::Zero), Some(bias), &logits);
    assert_eq!(got[0].iter().map(|p| p.0).collect::<Vec<_>>(), vec![0, 4]);
}

#[test]
fn deepseek_v2_group_limited_greedy() {
    let c = cfg(
        Scoring::Softmax,
        3,
        group(4, 2, GroupScore::Max, MaskedChoice::Zero),
        false,
        0.0,
        1.5,
    );
    let got = route(c, None, &LOGITS);
    assert_routes(
        &got,
        &[
            &[(2, 0.635_294_3), (3, 0.095_020_09), (5, 0.385_325_5)],
            &[(2, 0.265_373_3), (4, 0.652_712_9), (5, 0.079_928_905)],
            &[(0, 0.214_433_09), (1, 0.214_433_09), (6, 0.711_942_9)],
        ],
    );
}

#[test]
fn mixtral_softmax_top2_renormalized() {
    let got = route(
        cfg(Scoring::Softmax, 2, None, true, 0.0, 1.0),
        None,
        &LOGITS,
    );
    assert_routes(
        &got,
        &[
            &[(2, 0.622_459_3), (5, 0.377_540_7)],
            &[(2, 0.289_050_5), (4, 0.710_949_5)],
            &[(0, 0.231_475_22), (6, 0.768_524_8)],
        ],
    );
}

#[test]
fn qwen3_softmax_top2_without_normalization() {
    let got = route(
        cfg(Scoring::Softmax, 2, None, false, 0.0, 1.0),
        None,
        &LOGITS,
    );
    assert_routes(
        &got,
        &[
            &[(2, 0.423_529_57), (5, 0.256_883_7)],
            &[(2, 0.176_915_53), (4, 0.435_142)],
            &[(0, 0.142_955_4), (6, 0.474_628_63)],
        ],
    );
}

fn one_token_input(logits: &[f32]) -> RouterInput<'_> {
    RouterInput {
        logits,
        num_tokens: 1,
        num_experts: 4,
        top_k: 2,
    }
}

#[test]
fn validator_rejects_each_kind_of_bad_answer() {
    let logits = [0.0; 4];
    let input = one_token_input(&logits);
    let check = |experts: &[u32], weights: &[f32]| {
        let mut r = Routing::default();
        r.reset(2);
        r.push(experts, weights);
        r.validate(&input)
    };
    assert!(check(&[0, 3], &[0.5, 0.5]).is_ok());
    let msg = |r: Result<(), String>| r.expect_err("must be rejected");
    assert!(msg(check(&[0, 4], &[0.5, 0.5])).contains("out of range"));
    assert!(msg(check(&[1, 1], &[0.5, 0.5])).contains("twice"));
    assert!(msg(check(&[0, 1], &[f32::NAN, 0.5])).contains("from 0 to"));
    assert!(msg(check(&[0, 1], &[-0.1, 0.5])).contains("from 0 to"));
    assert!(msg(check(&[0, 1], &[f32::MAX, 0.5])).contains("from 0 to"));
    assert!(msg(check(&[0, 1], &[f32::INFINITY, 0.5])).contains("from 0 to"));
    assert!(check(&[0, 1], &[MAX_WEIGHT, 0.5]).is_ok());
    assert!(msg(check(&[0], &[0.5])).contains("expected 2"));
    let mut r = Routing::default();
    r.reset(3);
    r.push(&[0, 1, 2], &[0.1, 0.1, 0.1]);
    assert!(msg(r.validate(&input)).contains("chose 3 experts"));
}

#[test]
fn native_gate_refuses_a_question_of_another_shape() {
    let gate = NativeGate::new(cfg(Scoring::Softmax, 2, None, true, 0.0, 1.0), vec![None]);
    let logits = [0.0; 4];
    let mut out = Routing::default();
    out.reset(2);
    assert!(gate.route(0, &one_token_input(&logits), &mut out).is_err());
}
