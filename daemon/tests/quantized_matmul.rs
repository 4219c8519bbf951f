//! moed's quantized-matmul kernel against ONNX Runtime's own `MatMulNBits` on whole quantized
//! packages (int4 asymmetric, int4 symmetric with int4 attention, DeepSeek with int4 attention,
//! int8): the same logits (both quantize the activations to int8 per block the same way, so only
//! the order of float sums differs), prefill and decode, and the same greedy picks.

mod common;

use std::path::{Path, PathBuf};

use common::{argmax, copy_dir, largest_expert_and_top_k, packages_dir};
use moed::engine::{Engine, EngineOptions, Logits, MatmulKernel};
use moed::qmatmul;

/// The quantized packages tests/run.sh exports next to the fp32 fixture packages.
///
/// Only configurations that ONNX Runtime computes with int8 activations on every x86-64 CPU we
/// have met: on an AVX2-only AMD EPYC (ORT 1.32), DeepSeek's packages with int8 or symmetric int4
/// dense graphs differ from it by 1.5e-2 to 8e-2 (block 16 or 32), the size of the gap between
/// ORT's own accuracy levels 4 and 0 on the same package (8.3e-2): MLAS computes some of those
/// products in floats there, so they cannot be compared with moed's int8 arithmetic. On AVX-512
/// VNNI machines they matched within 1e-4. moed's block 16 and symmetric paths are checked
/// against its scalar reference in moed-kernels' unit tests.
const PACKAGES: [&str; 4] = [
    "qwen3_moe.int4",
    "qwen3_moe.int4-sym-dense4",
    "deepseek_v3.int4-dense4",
    "mixtral.int8",
];

fn quantized(name: &str) -> PathBuf {
    let dir = packages_dir().join("quantized").join(name);
    assert!(
        dir.join("manifest.json").is_file(),
        "quantized package {} is missing; tests/run.sh exports it",
        dir.display()
    );
    dir
}

fn load(dir: &Path, kernel: MatmulKernel) -> Engine {
    let opts = EngineOptions {
        quantized_matmul: kernel,
        // Two threads whatever the CPU count (every test here asks the same, and the first load
        // sets it for the process), so decode steps can run their experts side by side.
        intra_threads: Some(2),
        ..EngineOptions::default()
    };
    Engine::load(dir, opts).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

/// Every position's logits for `prompt`, then the last-token logits of each decode step fed
/// `feed` (the same tokens for both kernels, so a near-tie that one kernel breaks differently
/// cannot send the runs apart), and the greedy pick at each step.
fn run(engine: &Engine, prompt: &[u32], feed: &[u32]) -> (Vec<f32>, Vec<u32>) {
    let mut seq = engine.new_sequence();
    let mut all = engine
        .forward(&mut seq, prompt, Logits::All)
        .expect("prefill");
    let vocab = engine.package().vocab_size();
    let mut picks = vec![argmax(&all[all.len() - vocab..])];
    for &t in feed {
        let logits = engine
            .forward(&mut seq, &[t], Logits::Last)
            .expect("decode");
        picks.push(argmax(&logits));
        all.extend_from_slice(&logits);
    }
    (all, picks)
}

#[test]
fn moed_kernel_matches_onnxruntime_kernel() {
    if moed::engine::MatmulKernel::Moed
        .describe()
        .starts_with("onnxruntime")
    {
        eprintln!("this CPU has no fast path for moed's kernel: both runs would be ONNX Runtime's");
        return;
    }
    for name in PACKAGES {
        let dir = quantized(name);
        let ours = load(&dir, MatmulKernel::Moed);
        let theirs = load(&dir, MatmulKernel::OnnxRuntime);
        assert!(ours.quantized_matmul().starts_with("moed"), "{name}");
        assert_eq!(theirs.quantized_matmul(), "onnxruntime");
        let vocab = ours.package().vocab_size() as u32;
        let prompt: Vec<u32> = (0..9).map(|i| (i * 37 + 5) % vocab).collect();
        let (_, greedy) = run(&theirs, &prompt, &[]);
        let mut feed = greedy.clone();
        for _ in 0..10 {
            let (_, picks) = run(&theirs, &prompt, &feed);
            feed.push(picks[picks.len() - 1]);
        }
        let before = qmatmul::moed_kernel_calls();
        let (b, tb) = run(&theirs, &prompt, &feed);
        assert_eq!(
            qmatmul::moed_kernel_calls(),
            before,
            "{name}: ONNX Runtime's run used moed's kernel"
        );
        let (a, ta) = run(&ours, &prompt, &feed);
        assert!(
            qmatmul::moed_kernel_calls() > before,
            "{name}: moed's kernel never ran"
        );
        if qmatmul::packs_weights() {
            // Every matmul of moed's run read weights packed on its first run.
            assert!(
                qmatmul::packed_bytes() > 0,
                "{name}: no weights were repacked"
            );
        }
        assert_eq!(a.len(), b.len());
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        eprintln!("{name}: max |Δlogit| {worst:.2e} of max |logit| {scale:.3}; tokens {ta:?}");
        assert!(
            worst <= 1e-4 * scale.max(1.0),
            "{name}: logits differ by {worst} (max |logit| {scale})"
        );
        assert_eq!(ta, tb, "{name}: the greedy picks differ");
        side_by_side_matches_one_at_a_time(name, &ours, &prompt, &feed);
    }
    reloaded_experts_give_the_same_floats();
}

/// Steps with the routed experts side by side (each expert's matmuls on its own thread) give the
/// same logits, bit for bit, as one after another (each matmul split across the pool): the
/// outputs are summed in expert order either way. Called from the test above, not a test of its
/// own: its kernel calls would race that test's count of them.
fn side_by_side_matches_one_at_a_time(name: &str, engine: &Engine, prompt: &[u32], feed: &[u32]) {
    assert_eq!(engine.intra_threads(), 2, "{name}");
    engine.set_experts_side_by_side(false);
    assert!(!engine.experts_side_by_side());
    let (one, picks_one) = run(engine, prompt, feed);
    engine.set_experts_side_by_side(true);
    assert!(engine.experts_side_by_side(), "{name}: CPU, no spinning");
    let (side, picks_side) = run(engine, prompt, feed);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(
        bits(&one) == bits(&side),
        "{name}: side by side changed the logits"
    );
    assert_eq!(picks_one, picks_side, "{name}");
}

/// A graph whose MatMulNBits says N is one more than its weights hold: moed's kernel reads the
/// weights through raw pointers, so the lie must be an error naming the graph, not a read past
/// the buffer.
#[test]
fn a_matmul_whose_attributes_disagree_with_its_weights_is_an_error() {
    if MatmulKernel::Moed.describe().starts_with("onnxruntime") {
        eprintln!("this CPU has no fast path for moed's kernel");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("pkg");
    copy_dir(&quantized("qwen3_moe.int4"), &dir);
    let mut patched = 0;
    for entry in std::fs::read_dir(dir.join("graphs")).expect("graphs") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !(name.starts_with("layer.1.expert.") && name.ends_with(".onnx")) {
            continue;
        }
        let mut bytes = std::fs::read(&path).expect("read");
        // AttributeProto { name: "N", i: <one-byte varint> }: N + 1 keeps every length as it was.
        let at = bytes
            .windows(4)
            .position(|w| w == b"\x0a\x01N\x18")
            .expect("an N attribute");
        assert!(bytes[at + 4] < 0x7f, "N fits one varint byte");
        bytes[at + 4] += 1;
        std::fs::write(&path, bytes).expect("write");
        patched += 1;
    }
    assert!(patched > 0);
    let engine = load(&dir, MatmulKernel::Moed);
    let mut seq = engine.new_sequence();
    let err = engine
        .forward(&mut seq, &[1, 2, 3], Logits::Last)
        .expect_err("the lying expert cannot run");
    let msg = err.to_string();
    eprintln!("error: {msg}");
    assert!(msg.contains("graphs/layer.1.expert."), "{msg}");
    assert!(msg.contains("MatMulNBits (moed kernel)"), "{msg}");
    assert!(msg.contains("expected"), "{msg}");
    assert_eq!(
        seq.len(),
        0,
        "a failed forward leaves the sequence as it was"
    );
}

/// With moed's kernel, an expert loaded again after the budget evicted it gives the same floats,
/// bit for bit, as one that stayed resident: greedy output cannot depend on what the expert cache
/// held (where the CPU packs weights, every run of a node reads its packed copy, the first too).
/// Called from `moed_kernel_matches_onnxruntime_kernel`, not a test of its own: its kernel calls
/// would race that test's count of them.
fn reloaded_experts_give_the_same_floats() {
    let dir = quantized("qwen3_moe.int4");
    let unlimited = load(&dir, MatmulKernel::Moed);
    let (largest, top_k) = largest_expert_and_top_k(&unlimited);
    let tight = Engine::load(
        &dir,
        EngineOptions {
            quantized_matmul: MatmulKernel::Moed,
            intra_threads: Some(2),
            expert_memory_budget: Some(largest * top_k),
            ..EngineOptions::default()
        },
    )
    .expect("load with a budget");
    let vocab = unlimited.package().vocab_size() as u32;
    let prompt: Vec<u32> = (0..9).map(|i| (i * 53 + 11) % vocab).collect();
    let feed: Vec<u32> = (0..12).map(|i| (i * 29 + 3) % vocab).collect();
    // Twice on the unlimited engine: its second pass runs sessions that all stayed resident.
    let _ = run(&unlimited, &prompt, &feed);
    let (a, ta) = run(&unlimited, &prompt, &feed);
    let (b, tb) = run(&tight, &prompt, &feed);
    let s = tight.stats();
    assert!(s.cache_evictions > 0, "the budget never evicted: {s:?}");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(bits(&a) == bits(&b), "reloaded experts changed the logits");
    assert_eq!(ta, tb);
}
