//! Unit tests of the sampler against hand-computed distributions.

use super::*;

fn params(temperature: f32) -> SamplingParams {
    SamplingParams {
        temperature,
        ..SamplingParams::greedy()
    }
}

fn dist(p: SamplingParams, logits: &[f32], context: &[u32]) -> Vec<(u32, f64)> {
    Sampler::new(p, 0)
        .expect("valid")
        .distribution(logits, context)
        .expect("distribution")
}

fn assert_dist(got: &[(u32, f64)], want: &[(u32, f64)]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.0, w.0, "{got:?} vs {want:?}");
        assert!((g.1 - w.1).abs() < 1e-6, "{got:?} vs {want:?}");
    }
}

/// Logits ln(p) give the distribution p at temperature 1.
fn ln(ps: &[f64]) -> Vec<f32> {
    ps.iter().map(|p| p.ln() as f32).collect()
}

#[test]
fn greedy_takes_the_first_maximum() {
    let mut s = Sampler::new(SamplingParams::greedy(), 1).expect("valid");
    assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0], &[]), Ok(1));
}

#[test]
fn temperature_one_is_softmax() {
    let d = dist(params(1.0), &ln(&[0.1, 0.6, 0.3]), &[]);
    assert_dist(&d, &[(1, 0.6), (2, 0.3), (0, 0.1)]);
}

#[test]
fn temperature_sharpens() {
    // Logits [0, ln 2] at T=0.5 are [0, 2 ln 2]: probabilities 1/5 and 4/5.
    let d = dist(params(0.5), &[0.0, 2f32.ln()], &[]);
    assert_dist(&d, &[(1, 0.8), (0, 0.2)]);
}

#[test]
fn top_k_keeps_ties() {
    let p = SamplingParams {
        top_k: 2,
        ..params(1.0)
    };
    assert_dist(
        &dist(p, &ln(&[0.1, 0.5, 0.2, 0.2]), &[]),
        &[(1, 5.0 / 9.0), (2, 2.0 / 9.0), (3, 2.0 / 9.0)],
    );
    let p = SamplingParams {
        top_k: 1,
        ..params(1.0)
    };
    assert_dist(&dist(p, &ln(&[0.1, 0.5, 0.4]), &[]), &[(1, 1.0)]);
}

#[test]
fn top_p_keeps_the_smallest_set_reaching_p() {
    // 0.5 + 0.3 = 0.8 >= 0.75: two tokens, renormalized.
    let p = SamplingParams {
        top_p: 0.75,
        ..params(1.0)
    };
    assert_dist(
        &dist(p, &ln(&[0.3, 0.5, 0.15, 0.05]), &[]),
        &[(1, 0.625), (0, 0.375)],
    );
    // The top token alone exceeds top_p.
    let p = SamplingParams {
        top_p: 0.4,
        ..params(1.0)
    };
    assert_dist(&dist(p, &ln(&[0.3, 0.5, 0.2]), &[]), &[(1, 1.0)]);
}

#[test]
fn min_p_is_relative_to_the_top_token() {
    // Threshold 0.45 * 0.4 = 0.18: 0.4, 0.3 and 0.2 stay, 0.1 goes.
    let p = SamplingParams {
        min_p: 0.45,
        ..params(1.0)
    };
    assert_dist(
        &dist(p, &ln(&[0.1, 0.4, 0.2, 0.3]), &[]),
        &[(1, 4.0 / 9.0), (3, 3.0 / 9.0), (2, 2.0 / 9.0)],
    );
}

#[test]
fn repetition_penalty_divides_positive_and_multiplies_negative() {
    let p = SamplingParams {
        repetition_penalty: 2.0,
        ..params(1.0)
    };
    // Token 0 (logit 2 -> 1) and token 2 (logit -1 -> -2) were seen; twice counts once.
    let d = dist(p, &[2.0, 1.0, -1.0], &[0, 2, 0]);
    let z = 1f64.exp() * 2.0 + (-2f64).exp();
    let (p0, p2) = (1f64.exp() / z, (-2f64).exp() / z);
    assert_dist(&d, &[(0, p0), (1, p0), (2, p2)]);
    // Greedy with a penalty: the repeated favourite loses to the next token.
    let greedy = SamplingParams {
        repetition_penalty: 3.0,
        ..SamplingParams::greedy()
    };
    assert_eq!(
        Sampler::new(greedy, 0)
            .expect("valid")
            .sample(&[3.0, 2.0], &[0]),
        Ok(1)
    );
}

#[test]
fn filters_compose_in_transformers_order() {
    // T=1, top_k=3 drops 0.05; softmax over the rest: 0.5/0.95, 0.3/0.95, 0.15/0.95;
    // top_p=0.8: 0.526 < 0.8 keeps the second, 0.842 >= 0.8 stops: {0.5, 0.3} -> 0.625/0.375.
    let p = SamplingParams {
        top_k: 3,
        top_p: 0.8,
        ..params(1.0)
    };
    assert_dist(
        &dist(p, &ln(&[0.05, 0.15, 0.3, 0.5]), &[]),
        &[(3, 0.625), (2, 0.375)],
    );
}

#[test]
fn same_seed_same_tokens_and_frequencies_follow_the_distribution() {
    let logits = ln(&[0.2, 0.5, 0.3]);
    let draw = |seed| {
        let mut s = Sampler::new(params(1.0), seed).expect("valid");
        (0..4000)
            .map(|_| s.sample(&logits, &[]).expect("sample"))
            .collect::<Vec<_>>()
    };
    let a = draw(7);
    assert_eq!(a, draw(7));
    assert_ne!(a, draw(8));
    for (id, p) in [(0u32, 0.2), (1, 0.5), (2, 0.3)] {
        let freq = a.iter().filter(|&&t| t == id).count() as f64 / a.len() as f64;
        // 4000 draws: the standard error is below 0.008; 0.04 is five of them.
        assert!((freq - p).abs() < 0.04, "token {id}: {freq} vs {p}");
    }
}

#[test]
fn nan_and_infinite_logits_do_not_panic() {
    let mut s = Sampler::new(params(0.7), 3).expect("valid");
    assert_eq!(s.sample(&[f32::NAN, f32::NEG_INFINITY, 1.0], &[]), Ok(2));
    assert_eq!(s.sample(&[0.0, f32::INFINITY, f32::NAN], &[]), Ok(1));
    let err = s
        .sample(&[f32::NAN, f32::NEG_INFINITY], &[])
        .expect_err("nothing finite");
    assert_eq!(err, SamplerError::NoFiniteLogits(2));
    assert_eq!(s.sample(&[], &[]), Err(SamplerError::EmptyLogits));
    let mut g = Sampler::new(SamplingParams::greedy(), 0).expect("valid");
    assert_eq!(g.sample(&[f32::NAN, -5.0, f32::INFINITY], &[]), Ok(2));
    assert_eq!(
        g.sample(&[f32::NAN], &[]),
        Err(SamplerError::NoFiniteLogits(1))
    );
    // Context ids outside the vocabulary are ignored by the penalty.
    let rp = SamplingParams {
        repetition_penalty: 1.3,
        ..params(1.0)
    };
    assert!(
        Sampler::new(rp, 0)
            .expect("valid")
            .sample(&[1.0, 2.0], &[99])
            .is_ok()
    );
}

#[test]
fn bad_parameters_are_rejected() {
    let base = params(1.0);
    let bad = [
        (
            SamplingParams {
                temperature: -0.1,
                ..base
            },
            "temperature",
        ),
        (
            SamplingParams {
                temperature: f32::NAN,
                ..base
            },
            "temperature",
        ),
        (SamplingParams { top_p: 0.0, ..base }, "top_p"),
        (SamplingParams { top_p: 1.5, ..base }, "top_p"),
        (
            SamplingParams {
                min_p: -0.5,
                ..base
            },
            "min_p",
        ),
        (
            SamplingParams {
                repetition_penalty: 0.0,
                ..base
            },
            "repetition_penalty",
        ),
        (
            SamplingParams {
                repetition_penalty: f32::INFINITY,
                ..base
            },
            "repetition_penalty",
        ),
    ];
    for (p, name) in bad {
        let err = Sampler::new(p, 0).expect_err("invalid");
        assert!(err.to_string().contains(name), "{err}");
    }
}
