//! Shared by the integration tests: where the fixtures and their exported packages live.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::canonicalize(&p).unwrap_or(p)
}

pub fn fixtures_dir() -> PathBuf {
    repo().join("models/fixtures")
}

/// `MOE_FIXTURE_PACKAGES`, else `<repo>/target/fixture-packages`.
pub fn packages_dir() -> PathBuf {
    match std::env::var_os("MOE_FIXTURE_PACKAGES") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo().join("target/fixture-packages"),
    }
}

/// The command that (re)creates the fixture packages, for failure messages.
pub fn export_command(arch: &str) -> String {
    format!(
        "cd {} && PYTHONPATH=models/export python3 -m moe_export models/fixtures/{arch} {}/{arch}",
        repo().display(),
        packages_dir().display()
    )
}

/// Every fixture architecture with a golden.json, sorted.
pub fn fixture_archs() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(fixtures_dir())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join("golden.json").is_file())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The exported package of `arch`; panics with the command that creates it when missing.
pub fn package(arch: &str) -> PathBuf {
    let dir = packages_dir();
    assert!(
        dir.is_dir(),
        "fixture packages directory {} is missing; create the packages with:\n  cd {} && for a in $(ls models/fixtures/*/golden.json | xargs -n1 dirname | xargs -n1 basename); do PYTHONPATH=models/export python3 -m moe_export models/fixtures/$a {}/$a; done\n(MOE_FIXTURE_PACKAGES overrides the directory)",
        dir.display(),
        repo().display(),
        dir.display()
    );
    let p = dir.join(arch);
    assert!(
        p.join("manifest.json").is_file(),
        "fixture package {} is missing; create it with:\n  {}",
        p.display(),
        export_command(arch)
    );
    p
}

/// log-softmax of `row` at `id`, in f64.
pub fn logprob(row: &[f32], id: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    row[id] as f64 - max - sum.ln()
}

/// The first index of the largest value (what torch's argmax picks).
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

#[allow(unused_imports)] // not every test binary that includes this module builds plugins
pub use moed_test_harness::plugins_dir;

/// A recursive copy of `src` into `dst` (a package to damage in a test).
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for entry in std::fs::read_dir(src).expect("read_dir") {
        let entry = entry.expect("entry");
        let to = dst.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).expect("copy");
        }
    }
}

/// `n` greedy tokens after `prompt` on a fresh sequence, one `Engine::forward` per step.
pub fn greedy(engine: &moed::engine::Engine, prompt: &[u32], n: usize) -> Vec<u32> {
    use moed::engine::Logits;
    let mut seq = engine.new_sequence();
    let mut logits = engine
        .forward(&mut seq, prompt, Logits::Last)
        .expect("prefill");
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let next = argmax(&logits);
        out.push(next);
        logits = engine
            .forward(&mut seq, &[next], Logits::Last)
            .expect("decode");
    }
    out
}

/// The file bytes of the largest routed expert of the engine's package, and the package's top-k:
/// a budget of `largest * top_k` holds one token's experts of a layer and must evict.
pub fn largest_expert_and_top_k(engine: &moed::engine::Engine) -> (u64, u64) {
    let m = engine.package().manifest();
    let largest = m
        .layers
        .iter()
        .filter_map(|l| match l {
            moed::package::LayerSpec::Moe { experts, .. } => experts
                .iter()
                .map(|e| engine.package().graph_bytes(e))
                .max(),
            _ => None,
        })
        .max()
        .expect("an MoE layer");
    let top_k = m.routing.as_ref().expect("routing").top_k as u64;
    (largest, top_k)
}
