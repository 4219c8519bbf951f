//! A float16 KV cache (FORMAT.md "KV cache types") against the float32 cache of the same weights:
//! moed's attention kernel reads the half cache, logprobs stay within f16 rounding of the float32
//! run, the greedy picks are the same and the cache holds half the bytes.

mod common;

use std::path::PathBuf;

use common::{argmax, logprob, package, packages_dir};
use moed::engine::{Engine, EngineOptions, Logits, Sequence};

/// The package tests/run.sh exports: the qwen3_moe fixture's fp32 weights with `--kv-cache float16`.
fn half_cache_package() -> PathBuf {
    let dir = packages_dir().join("kv16").join("qwen3_moe");
    assert!(
        dir.join("manifest.json").is_file(),
        "package {} is missing; tests/run.sh exports it",
        dir.display()
    );
    dir
}

fn load(dir: &std::path::Path) -> Engine {
    Engine::load(dir, EngineOptions::default())
        .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

/// Prefill `prompt` in two chunks, then one decode step per token of `feed`; every position's
/// logits.
fn run(engine: &Engine, prompt: &[u32], feed: &[u32]) -> (Vec<Vec<f32>>, Sequence) {
    let vocab = engine.package().vocab_size();
    let mut seq = engine.new_sequence();
    let mut rows = Vec::new();
    let (a, b) = prompt.split_at(prompt.len() / 2);
    for chunk in [a, b] {
        let all = engine
            .forward(&mut seq, chunk, Logits::All)
            .expect("prefill");
        rows.extend(all.chunks(vocab).map(<[f32]>::to_vec));
    }
    for &t in feed {
        let last = engine
            .forward(&mut seq, &[t], Logits::Last)
            .expect("decode");
        rows.push(last);
    }
    (rows, seq)
}

#[test]
fn a_half_cache_stays_within_f16_rounding_of_the_float_cache() {
    let half = load(&half_cache_package());
    let full = load(&package("qwen3_moe"));
    let vocab = full.package().vocab_size() as u32;
    let prompt: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % vocab).collect();
    let (rows, _) = run(&full, &prompt, &[]);
    let mut feed = vec![argmax(&rows[rows.len() - 1])];
    for _ in 0..12 {
        let (rows, _) = run(&full, &prompt, &feed);
        feed.push(argmax(&rows[rows.len() - 1]));
    }
    feed.pop();
    let (want, seq_full) = run(&full, &prompt, &feed);
    let before = moed::qmatmul::moed_attention_calls();
    let (got, seq_half) = run(&half, &prompt, &feed);
    assert!(
        moed::qmatmul::moed_attention_calls() > before,
        "moed's attention kernel never ran on the half cache"
    );
    // Each row's logprob of the token that follows it (teacher forcing) and its greedy pick.
    let next: Vec<u32> = prompt[1..].iter().chain(&feed).copied().collect();
    let mut worst = 0f64;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        if let Some(&id) = next.get(i) {
            worst = worst.max((logprob(g, id as usize) - logprob(w, id as usize)).abs());
        }
        assert_eq!(
            argmax(g),
            argmax(w),
            "position {i}: the greedy picks differ"
        );
    }
    eprintln!("max |Δlogprob| half vs float cache: {worst:.2e}");
    // The Python reference (ONNX Runtime's float16 GroupQueryAttention) differs by 1.8e-3 here.
    assert!(
        worst < 1e-2,
        "half cache drifts {worst} from the float cache"
    );
    assert!(
        worst > 0.0,
        "no difference at all: was the cache really half?"
    );
    assert_eq!(seq_half.cache_bytes() * 2, seq_full.cache_bytes());
}

#[test]
fn a_half_cache_key_in_a_format_2_manifest_is_refused_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    common::copy_dir(&half_cache_package(), dir.path());
    let path = dir.path().join("manifest.json");
    let text = std::fs::read_to_string(&path).expect("manifest");
    let text = text.replace("\"format_version\": 3", "\"format_version\": 2");
    std::fs::write(&path, text).expect("write");
    let err = match Engine::load(dir.path(), EngineOptions::default()) {
        Ok(_) => panic!("a format 2 manifest with attention.cache_dtype loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("attention.cache_dtype"), "{err}");
    assert!(err.contains("format_version 3"), "{err}");
}
