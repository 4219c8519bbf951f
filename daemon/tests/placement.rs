//! Placement under `gpu_memory_budget` on a machine whose ONNX Runtime has no GPU provider (the
//! CPU-only library of provision.sh): every graph on the CPU with the reason said, generation as
//! without a budget, and the summary in `moed bench --json` and `moed check-config`.

mod common;

use std::process::{Command, Output};

use moed::engine::{Engine, EngineOptions, Logits, Provider};

fn moed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moed"))
        .args(args)
        .output()
        .expect("moed runs")
}

fn budgeted(arch: &str, budget: u64, providers: Vec<Provider>) -> Engine {
    let dir = common::package(arch);
    // Statistics as the service would pass them: every expert of every layer counted.
    let activations: Vec<Vec<u64>> = (0..64).map(|l| (0..256).map(|e| e + l).collect()).collect();
    Engine::load(
        &dir,
        EngineOptions {
            providers,
            gpu_memory_budget: Some(budget),
            activations,
            ..EngineOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{arch}: {e}"))
}

#[test]
fn a_budget_without_a_usable_gpu_runs_every_graph_on_the_cpu_and_says_why() {
    for arch in ["deepseek_v3", "qwen3_moe"] {
        let engine = budgeted(arch, 1 << 30, vec![Provider::Cuda, Provider::Cpu]);
        assert_eq!(engine.execution_provider(), "cpu", "{arch}");
        let p = engine.placement();
        assert_eq!(p.gpu_memory_budget, Some(1 << 30), "{arch}");
        assert_eq!(p.gpu_bytes_used, 0, "{arch}");
        assert_eq!(p.fallbacks, 0, "{arch}: no GPU session was tried");
        let why = p.gpu_unavailable.clone().unwrap_or_default();
        assert!(
            why.starts_with("cuda: ") && why.contains("CUDAExecutionProvider"),
            "{arch}: {why}"
        );
        assert!(
            p.line().contains("no GPU provider usable: cuda: "),
            "{arch}"
        );
        // Every graph, with its exact bytes, on the CPU.
        assert_eq!(p.providers.len(), 1, "{arch}: {p:?}");
        let cpu = &p.providers[0];
        assert_eq!(cpu.provider, Provider::Cpu);
        let w = engine.weight_bytes();
        let total = w.embed + w.head + w.attn + w.router + w.shared + w.dense_mlp + w.experts;
        assert_eq!(cpu.bytes, total, "{arch}");
        let m = engine.package().manifest();
        let experts: usize = (0..m.layers.len())
            .filter(|&l| engine.expert_file_bytes(l, 0) > 0)
            .map(|_| m.routing.as_ref().map_or(0, |r| r.num_experts))
            .sum();
        assert_eq!(cpu.experts, experts as u64, "{arch}");
        // Revisits have nothing to move without a GPU.
        let hot: Vec<Vec<u64>> = vec![vec![1_000_000; 256]; 64];
        assert_eq!(engine.revisit_placement(&hot), 0, "{arch}");

        // The same numbers as without a budget.
        let plain = Engine::load(&common::package(arch), EngineOptions::default()).expect("load");
        let tokens = [1u32, 5, 9, 2, 7];
        let a = engine
            .forward(&mut engine.new_sequence(), &tokens, Logits::All)
            .expect("forward");
        let b = plain
            .forward(&mut plain.new_sequence(), &tokens, Logits::All)
            .expect("forward");
        assert_eq!(a.len(), b.len());
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "{arch}: logits differ by {worst}");
    }
}

#[test]
fn a_zero_budget_places_nothing_and_needs_no_gpu_provider() {
    let engine = budgeted("deepseek_v3", 0, vec![Provider::Cpu]);
    let p = engine.placement();
    assert_eq!(p.gpu_memory_budget, Some(0));
    assert_eq!(p.gpu_bytes_used, 0);
    assert_eq!(p.gpu_unavailable, None, "nothing asked of a GPU");
    assert_eq!(p.providers.len(), 1);
    assert_eq!(engine.quantized_matmul(), {
        let plain =
            Engine::load(&common::package("deepseek_v3"), EngineOptions::default()).expect("load");
        plain.quantized_matmul()
    });
}

#[test]
fn bench_json_reports_the_placement_and_keeps_its_fields() {
    let pkg = common::package("deepseek_v3");
    let pkg = pkg.to_string_lossy();
    let out = moed(&[
        "bench",
        "--model",
        &pkg,
        "--json",
        "--provider",
        "cuda,cpu",
        "--gpu-memory-budget",
        "1MiB",
        "--prompt-tokens",
        "4",
        "--decode-tokens",
        "2",
        "--repeat",
        "1",
        "--bandwidth-mib",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    for field in [
        "execution_provider",
        "quantized_matmul",
        "weights",
        "sparse",
        "dense",
    ] {
        assert!(report.get(field).is_some(), "{field} is gone");
    }
    assert_eq!(report["execution_provider"], "cpu");
    let p = &report["placement"];
    assert_eq!(p["gpu_memory_budget"], 1 << 20);
    assert_eq!(p["gpu_bytes_used"], 0);
    assert_eq!(p["providers"][0]["provider"], "cpu");
    assert!(
        p["gpu_unavailable"]
            .as_str()
            .is_some_and(|w| w.contains("CUDAExecutionProvider")),
        "{p}"
    );
}

#[test]
fn check_config_says_how_graphs_would_be_placed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("moed.toml");
    let check = |text: &str| {
        std::fs::write(&config, text).expect("write");
        let out = moed(&["check-config", "--config", &config.to_string_lossy()]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), stdout, stderr)
    };
    let (ok, out, err) = check(
        "[engine]\nproviders = [\"tensorrt\", \"cuda\", \"cpu\"]\ngpu_memory_budget = \"2GiB\"\ntensorrt_cache_dir = \"/srv/moed/trt\"\n",
    );
    assert!(ok, "{err}");
    assert!(out.contains("gpu_memory_budget = 2147483648\n"), "{out}");
    assert!(
        out.contains("# placement: gpu_memory_budget 2147483648 bytes, but no GPU provider"),
        "{out}"
    );
    assert!(
        out.contains("# TensorRT engine cache: /srv/moed/trt\n"),
        "{out}"
    );

    let (ok, out, err) = check("");
    assert!(ok, "{err}");
    assert!(out.contains("# placement: no gpu_memory_budget;"), "{out}");

    let (ok, _, err) = check("[engine]\ngpu_memory_budget = \"4G\"\n");
    assert!(!ok);
    assert!(
        err.contains("engine.gpu_memory_budget") && err.contains("names no GPU provider"),
        "{err}"
    );
}

#[test]
fn generation_under_a_budget_without_a_gpu_is_what_it_is_without() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("moed.toml");
    std::fs::write(
        &config,
        "[engine]\nproviders = [\"cuda\", \"cpu\"]\ngpu_memory_budget = \"64MiB\"\n",
    )
    .expect("write");
    let pkg = common::package("qwen3_moe");
    let pkg = pkg.to_string_lossy();
    let config = config.to_string_lossy();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            &pkg,
            "--json",
            "--temperature",
            "0",
            "--max-tokens",
            "6",
        ];
        args.extend_from_slice(extra);
        args.push("The capital of France is");
        let out = moed(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")
    };
    let placed = run(&["--provider", "cuda,cpu", "--config", &config]);
    let plain = run(&[]);
    assert_eq!(placed["stats"]["execution_provider"], "cpu", "{placed}");
    assert_eq!(placed["token_ids"], plain["token_ids"]);
    assert!(
        placed["token_ids"]
            .as_array()
            .is_some_and(|ids| !ids.is_empty()),
        "{placed}"
    );
}
