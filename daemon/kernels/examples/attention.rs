//! Times the attention kernel on one decode step of a Qwen3-like layer (4 KV heads, 8 query heads
//! each, head_dim 128) at several cache lengths, with an f32 and an f16 cache taking turns, as
//! microseconds per call and bytes of cache read per second. Eight layers' caches are cycled so the
//! cache streams from memory, as in a model, rather than from the CPU's last-level cache.
//!
//! `cargo run --release -p moed-kernels --example attention [PAST...]`

use std::time::Instant;

use moed_kernels::{AttentionInput, AttentionShape, KvElem, Serial, attention, f16};

/// Distinct caches cycled per timed call.
const LAYERS: usize = 8;

fn main() {
    let pasts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let pasts = if pasts.is_empty() {
        vec![128, 1024, 4096]
    } else {
        pasts
    };
    for past in pasts {
        let full = Cache::<f32>::new(past, f32::from_bits);
        let half = Cache::<f16>::new(past, |b| f16::from_f32(f32::from_bits(b)));
        let (mut t32, mut t16) = (f64::MAX, f64::MAX);
        for _ in 0..5 {
            t32 = t32.min(full.time());
            t16 = t16.min(half.time());
        }
        println!(
            "past {past:5}: f32 {:8.1} us ({:5.1} GB/s)  f16 {:8.1} us ({:5.1} GB/s)  f16/f32 time {:.2}",
            t32 * 1e6,
            full.bytes() / t32 / 1e9,
            t16 * 1e6,
            half.bytes() / t16 / 1e9,
            t16 / t32
        );
    }
}

struct Cache<E: KvElem> {
    s: AttentionShape,
    keys: Vec<Vec<E>>,
    values: Vec<Vec<E>>,
    new: Vec<E>,
    q: Vec<f32>,
}

impl<E: KvElem> Cache<E> {
    fn new(past: usize, from_bits: fn(u32) -> E) -> Cache<E> {
        let (kv, groups, d) = (4usize, 8usize, 128usize);
        let capacity = past + 256;
        let fill = |seed: usize| -> Vec<E> {
            (0..kv * capacity * d)
                .map(|i| from_bits((((i * 7919 + seed) % 1000) as f32 * 1e-3).to_bits()))
                .collect()
        };
        Cache {
            s: AttentionShape {
                heads: kv * groups,
                kv_heads: kv,
                head_dim: d,
                tokens: 1,
                past,
                capacity,
                scale: 0.088,
            },
            keys: (0..LAYERS).map(fill).collect(),
            values: (0..LAYERS).map(|l| fill(l + 100)).collect(),
            new: vec![from_bits(0.1f32.to_bits()); kv * d],
            q: (0..kv * groups * d)
                .map(|i| (i % 13) as f32 * 0.1)
                .collect(),
        }
    }

    /// Cache bytes one call reads.
    fn bytes(&self) -> f64 {
        let s = &self.s;
        2.0 * (s.kv_heads * s.past * s.head_dim * std::mem::size_of::<E>()) as f64
    }

    /// Seconds per call, averaged over a batch that cycles the layers.
    fn time(&self) -> f64 {
        let runs = (400_000 / self.s.past.max(1)).clamp(LAYERS * 4, 4000);
        let mut out = vec![0f32; self.q.len()];
        let t = Instant::now();
        for r in 0..runs {
            let l = r % LAYERS;
            let x = AttentionInput {
                q: &self.q,
                k_new: &self.new,
                v_new: &self.new,
                past_k: &self.keys[l],
                past_v: &self.values[l],
            };
            if let Err(e) = attention(&self.s, &x, &mut out, &Serial) {
                eprintln!("attention: {e}");
                return f64::NAN;
            }
        }
        t.elapsed().as_secs_f64() / runs as f64
    }
}
