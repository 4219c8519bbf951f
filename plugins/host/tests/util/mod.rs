//! Shared by the plugin host's tests: builds the plugins once (plugins/build.sh), loads their
//! manifests, makes hosts and model routings.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use moed_plugins::kv::MemoryKv;
use moed_plugins::{
    GroupLimit, GroupScore, HostOptions, Manifest, MaskedChoice, MemoryDocuments, ModelRouting,
    PluginHost, PluginSpec, Scoring, Services, Sources,
};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[allow(unused_imports)] // not every test binary that includes this module builds plugins
pub use moed_test_harness::plugins_dir;

/// The plugin `name` (e.g. `topk`, `hostile-gate-misbehave`) granted what it asks for.
pub fn spec(name: &str) -> PluginSpec {
    let dir = plugins_dir();
    let manifest = Manifest::from_file(&dir.join(format!("{name}.toml"))).expect("manifest");
    PluginSpec::as_requested(manifest, dir.join(format!("{name}.wasm")))
}

/// `spec` with configuration `key = value` entries.
pub fn spec_with(name: &str, config: &[(&str, serde_json::Value)]) -> PluginSpec {
    let mut s = spec(name);
    for (k, v) in config {
        s.config.insert((*k).to_owned(), v.clone());
    }
    s
}

pub fn documents() -> Arc<MemoryDocuments> {
    let mut d = MemoryDocuments::default();
    d.add("vac-1", "handbook/vacation.md", "Every employee has 25 vacation days per calendar year. Unused vacation days expire on March 31.");
    d.add(
        "it-1",
        "it/passwords.md",
        "Passwords are reset at the IT portal; the help desk never asks for your password.",
    );
    d.add(
        "off-1",
        "office/hours.md",
        "The Berlin office opens at 8:00 and closes at 18:00 on weekdays.",
    );
    Arc::new(d)
}

pub fn services() -> Services {
    let sources = Arc::new(Sources::default());
    sources.register("documents", documents());
    Services {
        kv: Some(Arc::new(MemoryKv::default())),
        sources,
        ..Services::default()
    }
}

pub fn host() -> PluginHost {
    host_with(HostOptions {
        cache_dir: Some(test_cache()),
        ..HostOptions::default()
    })
}

pub fn host_with(options: HostOptions) -> PluginHost {
    PluginHost::new(options, services()).expect("plugin host")
}

/// Compiled plugins shared by all test processes (keyed by content and engine, written
/// atomically), so each plugin is compiled once per change.
pub fn test_cache() -> PathBuf {
    root().join("target/plugin-cache-test")
}

/// Routing rules of the architectures (models/FORMAT.md table), with `layers` layers.
pub fn qwen3(e: usize, k: usize, layers: usize) -> ModelRouting {
    ModelRouting {
        num_layers: layers,
        num_experts: e,
        top_k: k,
        scoring: Scoring::Softmax,
        group_limit: None,
        norm_topk_prob: false,
        norm_eps: 0.0,
        routed_scaling_factor: 1.0,
        correction_bias: vec![None; layers],
    }
}

pub fn mixtral(e: usize, k: usize, layers: usize) -> ModelRouting {
    ModelRouting {
        norm_topk_prob: true,
        ..qwen3(e, k, layers)
    }
}

pub fn deepseek_v3(e: usize, k: usize, layers: usize, seed: u64) -> ModelRouting {
    let mut rng = Lcg(seed);
    ModelRouting {
        scoring: Scoring::Sigmoid,
        group_limit: Some(GroupLimit {
            n_group: 4,
            topk_group: 2,
            group_score: GroupScore::Top2Sum,
            masked: MaskedChoice::NegInf,
        }),
        norm_topk_prob: true,
        norm_eps: 1e-20,
        routed_scaling_factor: 2.5,
        correction_bias: (0..layers)
            .map(|l| (l > 0).then(|| (0..e).map(|_| rng.next() * 0.2 - 0.1).collect()))
            .collect(),
        ..qwen3(e, k, layers)
    }
}

pub fn deepseek_v2(e: usize, k: usize, layers: usize) -> ModelRouting {
    ModelRouting {
        group_limit: Some(GroupLimit {
            n_group: 4,
            topk_group: 2,
            group_score: GroupScore::Max,
            masked: MaskedChoice::Zero,
        }),
        routed_scaling_factor: 16.0,
        ..qwen3(e, k, layers)
    }
}

/// A small deterministic generator (no dependency for test data).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32) / ((1u64 << 24) as f32)
    }

    pub fn logits(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next() * 8.0 - 4.0).collect()
    }
}

/// Records events (alerts, failures) for assertions.
#[derive(Default)]
pub struct Recorder {
    pub alerts: std::sync::Mutex<Vec<moed_plugins::Alert>>,
    pub failures: std::sync::Mutex<Vec<moed_plugins::Failure>>,
}

impl moed_plugins::HostEvents for Recorder {
    fn alert(&self, a: &moed_plugins::Alert) {
        self.alerts.lock().expect("lock").push(a.clone());
    }
    fn failure(&self, f: &moed_plugins::Failure) {
        self.failures.lock().expect("lock").push(f.clone());
    }
}

/// Options for tests: generous time limits (the machine may be loaded; runaway plugins still
/// stop), no automatic disable unless a test sets it.
pub fn test_options() -> HostOptions {
    let mut o = HostOptions::default();
    o.gate.time = std::time::Duration::from_millis(200);
    o.filter.time = std::time::Duration::from_millis(300);
    o.retrieval.time = std::time::Duration::from_millis(500);
    o.max_consecutive_failures = 0;
    o.cache_dir = Some(test_cache());
    o
}

pub fn host_recording(options: HostOptions) -> (PluginHost, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let services = Services {
        events: rec.clone(),
        ..services()
    };
    (
        PluginHost::new(options, services).expect("plugin host"),
        rec,
    )
}

/// Normal `topk` calls on other threads while `f` runs; returns how many succeeded and panics if
/// any failed.
pub fn with_normal_traffic<R>(host: &PluginHost, f: impl FnOnce() -> R) -> (R, u64) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let plugin = host.load(&spec("topk")).expect("load topk");
    let gate = moed_plugins::GatePlugin::bind(&plugin, qwen3(16, 4, 2)).expect("bind");
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (gate, stop, ok) = (gate.clone(), stop.clone(), ok.clone());
            std::thread::spawn(move || {
                let mut rng = Lcg(w);
                let mut out = moed_plugins::GateAnswer::default();
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) || ok.load(Ordering::Relaxed) == 0 {
                    let logits = rng.logits(2 * 16);
                    let call = moed_plugins::GateCall {
                        layer: 0,
                        num_tokens: 2,
                        num_experts: 16,
                        top_k: 4,
                        logits: &logits,
                        params: &[],
                    };
                    match gate.route(&call, &mut out) {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.push(e.to_string()),
                    }
                    std::thread::yield_now();
                }
                failures
            })
        })
        .collect();
    let r = f();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let failures = w.join().expect("worker");
        assert!(
            failures.is_empty(),
            "normal calls failed meanwhile: {failures:?}"
        );
    }
    (r, ok.load(Ordering::Relaxed))
}
