//! The attention kernel against an exact (f64, two-pass) softmax over the same rows.

use super::Rng;
use super::parallel::Threads;
use crate::attention::exp;
use crate::{AttentionInput, AttentionShape, KernelError, Serial, attention, f16};

struct Case {
    s: AttentionShape,
    q: Vec<f32>,
    k_new: Vec<f32>,
    v_new: Vec<f32>,
    past_k: Vec<f32>,
    past_v: Vec<f32>,
}

impl Case {
    fn random(
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        tokens: usize,
        past: usize,
        spare: usize,
        seed: u64,
    ) -> Case {
        let capacity = past + spare;
        let mut r = Rng(seed);
        let mut past_k = r.f32s(kv_heads * capacity * head_dim);
        let past_v = r.f32s(kv_heads * capacity * head_dim);
        // Spare rows are not read: make any use of them visible.
        for h in 0..kv_heads {
            past_k[(h * capacity + past) * head_dim..(h + 1) * capacity * head_dim].fill(1e6);
        }
        Case {
            s: AttentionShape {
                heads,
                kv_heads,
                head_dim,
                tokens,
                past,
                capacity,
                scale: 0.7,
            },
            q: r.f32s(tokens * heads * head_dim)
                .iter()
                .map(|v| v * 3.0)
                .collect(),
            k_new: r.f32s(tokens * kv_heads * head_dim),
            v_new: r.f32s(tokens * kv_heads * head_dim),
            past_k,
            past_v,
        }
    }

    fn input(&self) -> AttentionInput<'_> {
        AttentionInput {
            q: &self.q,
            k_new: &self.k_new,
            v_new: &self.v_new,
            past_k: &self.past_k,
            past_v: &self.past_v,
        }
    }

    fn exact(&self) -> Vec<f64> {
        let s = &self.s;
        let (d, groups) = (s.head_dim, s.heads / s.kv_heads);
        let mut out = vec![0f64; s.tokens * s.heads * d];
        for t in 0..s.tokens {
            for h in 0..s.heads {
                let j = h / groups;
                let rows: Vec<(&[f32], &[f32])> = (0..s.past)
                    .map(|r| {
                        (
                            &self.past_k[(j * s.capacity + r) * d..][..d],
                            &self.past_v[(j * s.capacity + r) * d..][..d],
                        )
                    })
                    .chain((0..=t).map(|r| {
                        (
                            &self.k_new[(r * s.kv_heads + j) * d..][..d],
                            &self.v_new[(r * s.kv_heads + j) * d..][..d],
                        )
                    }))
                    .collect();
                let q = &self.q[(t * s.heads + h) * d..][..d];
                let scores: Vec<f64> = rows
                    .iter()
                    .map(|(k, _)| {
                        q.iter()
                            .zip(*k)
                            .map(|(a, b)| f64::from(*a) * f64::from(*b))
                            .sum::<f64>()
                            * f64::from(s.scale)
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|v| (v - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for ((_, v), p) in rows.iter().zip(&e) {
                    for (o, x) in out[(t * s.heads + h) * d..][..d].iter_mut().zip(*v) {
                        *o += p / total * f64::from(*x);
                    }
                }
            }
        }
        out
    }
}

fn max_error(c: &Case, par: &dyn crate::Parallel) -> f64 {
    let mut out = vec![f32::NAN; c.q.len()];
    assert!(attention(&c.s, &c.input(), &mut out, par).is_ok());
    out.iter()
        .zip(c.exact())
        .map(|(a, b)| (f64::from(*a) - b).abs())
        .fold(0.0, f64::max)
}

#[test]
fn decode_and_prefill_equal_the_exact_softmax() {
    // (heads, kv heads, head dim, tokens, past, spare): decode, prefill without a past, chunks
    // after a past, head dims with and without a tail of 16, blocks crossed mid-token.
    for (i, &(h, kv, d, t, p, spare)) in [
        (8, 2, 16, 1, 37, 5),
        (8, 2, 128, 1, 200, 56),
        (4, 4, 20, 6, 0, 6),
        (6, 2, 64, 5, 70, 9),
        (32, 4, 128, 3, 65, 3),
        (2, 1, 8, 40, 31, 40),
    ]
    .iter()
    .enumerate()
    {
        let c = Case::random(h, kv, d, t, p, spare, 100 + i as u64);
        let err = max_error(&c, &Serial);
        assert!(err < 2e-5, "case {i}: max error {err}");
    }
}

/// Rounds every cached and new key and value to f16, so one case can run with either cache type.
fn halves(c: &mut Case) -> [Vec<f16>; 4] {
    let out = [&mut c.k_new, &mut c.v_new, &mut c.past_k, &mut c.past_v].map(|v| {
        let h: Vec<f16> = v.iter().map(|&x| f16::from_f32(x)).collect();
        for (x, y) in v.iter_mut().zip(&h) {
            *x = y.to_f32();
        }
        h
    });
    // Spare rows of 1e6 overflow f16 to infinity: still visible if read.
    out
}

#[test]
fn an_f16_cache_gives_the_f32_output_of_its_rounded_values() {
    for (i, &(h, kv, d, t, p, spare)) in [
        (8, 2, 128, 1, 200, 56),
        (6, 2, 64, 5, 70, 9),
        (4, 4, 20, 6, 0, 6),
        (2, 1, 8, 40, 31, 40),
    ]
    .iter()
    .enumerate()
    {
        let mut c = Case::random(h, kv, d, t, p, spare, 300 + i as u64);
        let [k_new, v_new, past_k, past_v] = halves(&mut c);
        let x = AttentionInput {
            q: &c.q,
            k_new: &k_new,
            v_new: &v_new,
            past_k: &past_k,
            past_v: &past_v,
        };
        let mut half = vec![f32::NAN; c.q.len()];
        assert!(attention(&c.s, &x, &mut half, &Threads(2)).is_ok());
        let mut full = vec![f32::NAN; c.q.len()];
        assert!(attention(&c.s, &c.input(), &mut full, &Serial).is_ok());
        assert_eq!(half, full, "case {i}");
        let err = half
            .iter()
            .zip(c.exact())
            .map(|(a, b)| (f64::from(*a) - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 2e-5, "case {i}: max error {err}");
    }
}

#[test]
fn tasks_on_several_threads_give_the_serial_output() {
    let c = Case::random(16, 4, 64, 7, 90, 10, 7);
    let (mut a, mut b) = (vec![0f32; c.q.len()], vec![0f32; c.q.len()]);
    assert!(attention(&c.s, &c.input(), &mut a, &Serial).is_ok());
    assert!(attention(&c.s, &c.input(), &mut b, &Threads(3)).is_ok());
    assert_eq!(a, b);
}

#[test]
fn wrong_sizes_are_refused_by_name() {
    let c = Case::random(8, 2, 16, 2, 10, 4, 3);
    let mut out = vec![0f32; c.q.len()];
    let mut s = c.s;
    s.past = 15;
    assert!(matches!(
        attention(&s, &c.input(), &mut out, &Serial),
        Err(KernelError::Mismatch {
            what: "cached rows",
            ..
        })
    ));
    let mut s = c.s;
    s.kv_heads = 3;
    assert!(matches!(
        attention(&s, &c.input(), &mut out, &Serial),
        Err(KernelError::Mismatch { .. })
    ));
    let mut s = c.s;
    s.tokens = 3;
    assert!(matches!(
        attention(&s, &c.input(), &mut out, &Serial),
        Err(KernelError::Length { what: "query", .. })
    ));
    let short = AttentionInput {
        past_v: &c.past_v[1..],
        ..c.input()
    };
    assert!(matches!(
        attention(&c.s, &short, &mut out, &Serial),
        Err(KernelError::Length {
            what: "cached values",
            ..
        })
    ));
    let mut s = c.s;
    s.capacity = usize::MAX / 2;
    assert!(matches!(
        attention(&s, &c.input(), &mut out, &Serial),
        Err(KernelError::TooLarge { .. })
    ));
}

#[test]
fn exp_is_close_to_the_exact_one_where_softmax_uses_it() {
    let mut x = 0.0f32;
    while x > -90.0 {
        let (got, want) = (f64::from(exp(x)), f64::from(x).exp());
        assert!(
            (got - want).abs() <= want * 1e-6 + 1e-37,
            "exp({x}) = {got}, exact {want}"
        );
        x -= 0.0137;
    }
    assert_eq!(exp(0.0), 1.0);
    assert!(exp(f32::NAN).is_nan());
}
