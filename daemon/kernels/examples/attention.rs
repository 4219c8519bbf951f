//! Times the attention kernel on one decode step of a Qwen3-like layer (4 KV heads, 8 query heads
//! each, head_dim 128) at several cache lengths, as bytes of cache read per second.
//!
//! `cargo run --release -p moed-kernels --example attention [PAST...]`

use std::time::Instant;

use moed_kernels::{AttentionInput, AttentionShape, Serial, attention};

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
    let (kv, groups, d) = (4usize, 8usize, 128usize);
    for past in pasts {
        let capacity = past + 256;
        let s = AttentionShape {
            heads: kv * groups,
            kv_heads: kv,
            head_dim: d,
            tokens: 1,
            past,
            capacity,
            scale: 0.088,
        };
        let cache: Vec<f32> = (0..kv * capacity * d)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
            .collect();
        let q: Vec<f32> = (0..kv * groups * d)
            .map(|i| (i % 13) as f32 * 0.1)
            .collect();
        let new = vec![0.1f32; kv * d];
        let x = AttentionInput {
            q: &q,
            k_new: &new,
            v_new: &new,
            past_k: &cache,
            past_v: &cache,
        };
        let mut out = vec![0f32; q.len()];
        let runs = (200_000 / past.max(1)).clamp(20, 2000);
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..runs {
                if let Err(e) = attention(&s, &x, &mut out, &Serial) {
                    eprintln!("attention: {e}");
                    return;
                }
            }
            best = best.min(t.elapsed().as_secs_f64() / runs as f64);
        }
        let bytes = 2.0 * (kv * past * d * 4) as f64;
        println!(
            "past {past:5}: {:8.1} us per call, {:5.1} GB/s of cache",
            best * 1e6,
            bytes / best / 1e9
        );
    }
}
