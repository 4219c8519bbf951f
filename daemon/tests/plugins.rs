//! WASM gate plugins in the engine: the `topk` plugin decides bit-identically to the native rule
//! on every fixture architecture (and on wider routing shapes), generation with it equals native
//! generation bit for bit, and a failing gate plugin falls back to native routing.

mod common;

use std::sync::Arc;

use common::{argmax, fixture_archs, package, plugins_dir};
use moed::engine::{Engine, EngineOptions, Gate, Logits, RouterInput, Routing};
use moed::generate::{self as generation, Event, GenerateRequest, Prompt};
use moed::package::{GroupLimit, GroupScore, LayerSpec, Manifest, MaskedChoice, Package, Scoring};
use moed::plugins::{FilteredEvents, RequestFilters, WasmGate, model_routing};
use moed::text::model::TextModel;
use moed::text::template::ChatMessage;
use moed_plugins::{HostOptions, Plugin, PluginHost, PluginSpec, Services};
use std::sync::atomic::{AtomicBool, Ordering};

fn host() -> PluginHost {
    let options = HostOptions {
        cache_dir: Some(common::repo().join("target/plugin-cache-test")),
        ..HostOptions::default()
    };
    PluginHost::new(options, Services::default()).expect("plugin host")
}

fn load(host: &PluginHost, name: &str, config: &[(&str, serde_json::Value)]) -> Plugin {
    let dir = plugins_dir();
    let mut spec: PluginSpec =
        moed::plugins::spec_from_path(&dir.join(format!("{name}.wasm"))).expect("spec");
    for (k, v) in config {
        spec.config.insert((*k).to_owned(), v.clone());
    }
    host.load(&spec).expect("load plugin")
}

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32) / ((1u64 << 24) as f32)
    }
}

/// Router logits of several kinds: ordinary, large (saturating sigmoid), with ties.
fn logits(rng: &mut Lcg, n: usize, kind: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match kind {
            0 => rng.next() * 8.0 - 4.0,
            1 => rng.next() * 60.0 - 30.0,
            _ => ((rng.next() * 4.0).floor() - 2.0) * 0.5 + if i % 7 == 0 { 0.25 } else { 0.0 },
        })
        .collect()
}

/// The fixture manifest, and a wider variant (64 experts, top-8, 8 groups keep 4 where the
/// architecture has groups, random correction bias where it has one).
fn manifests(arch: &str) -> Vec<Manifest> {
    let m = Package::open(&package(arch))
        .expect("package")
        .manifest()
        .clone();
    let mut wide = m.clone();
    let mut rng = Lcg(99);
    if let Some(r) = wide.routing.as_mut() {
        r.num_experts = 64;
        r.top_k = 8;
        if let Some(g) = r.group_limit.as_mut() {
            *g = GroupLimit {
                n_group: 8,
                topk_group: 4,
                group_score: g.group_score,
                masked: g.masked,
            };
        }
    }
    for l in wide.layers.iter_mut() {
        if let LayerSpec::Moe {
            correction_bias: Some(b),
            ..
        } = l
        {
            *b = (0..64).map(|_| rng.next() * 0.4 - 0.2).collect();
        }
    }
    vec![m, wide]
}

fn assert_same(arch: &str, gate: &WasmGate, native: &dyn Gate, m: &Manifest) {
    let r = m.routing.as_ref().expect("routing");
    let mut rng = Lcg(7);
    for (layer, spec) in m.layers.iter().enumerate() {
        if !matches!(spec, LayerSpec::Moe { .. }) {
            continue;
        }
        for tokens in [1, 7, 64] {
            for kind in 0..3 {
                let l = logits(&mut rng, tokens * r.num_experts, kind);
                let input = RouterInput {
                    logits: &l,
                    num_tokens: tokens,
                    num_experts: r.num_experts,
                    top_k: r.top_k,
                };
                let (mut a, mut b) = (Routing::default(), Routing::default());
                a.reset(r.top_k);
                b.reset(r.top_k);
                gate.route(layer, &input, &mut a).expect("wasm");
                native.route(layer, &input, &mut b).expect("native");
                let bits = |w: &[f32]| w.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    a.experts, b.experts,
                    "{arch} ({} experts) layer {layer}, {tokens} tokens, kind {kind}",
                    r.num_experts
                );
                assert_eq!(
                    bits(&a.weights),
                    bits(&b.weights),
                    "{arch} layer {layer} weights"
                );
            }
        }
    }
    assert_eq!(gate.fallbacks(), 0, "{arch}: {:?}", gate.last_failure());
}

#[test]
fn topk_plugin_decides_bit_identically_to_the_native_gate() {
    let host = host();
    let topk = load(&host, "topk", &[]);
    let mut covered = Vec::new();
    for arch in fixture_archs() {
        for m in manifests(&arch) {
            let gate = WasmGate::new(&topk, &m, Vec::new()).expect("bind");
            let (_, native) = model_routing(&m).expect("routing");
            assert_same(&arch, &gate, &native, &m);
            let r = m.routing.as_ref().expect("routing");
            covered.push((
                r.scoring,
                r.group_limit.as_ref().map(|g| (g.group_score, g.masked)),
            ));
        }
    }
    // The fixtures cover both scorings, both group scores and both masked values.
    assert!(covered.iter().any(|c| c.0 == Scoring::Sigmoid));
    assert!(covered.contains(&(
        Scoring::Sigmoid,
        Some((GroupScore::Top2Sum, MaskedChoice::NegInf))
    )));
}

/// Prompt then greedy decoding; every step's logits as bits.
fn generate(engine: &Engine, prompt: &[u32], steps: usize) -> Vec<Vec<u32>> {
    let mut seq = engine.new_sequence();
    let mut out = Vec::new();
    let mut logits = engine
        .forward(&mut seq, prompt, Logits::All)
        .expect("prefill");
    out.push(logits.iter().map(|x| x.to_bits()).collect());
    let vocab = engine.package().vocab_size();
    let mut next = argmax(&logits[logits.len() - vocab..]);
    for _ in 0..steps {
        logits = engine
            .forward(&mut seq, &[next], Logits::Last)
            .expect("decode");
        out.push(logits.iter().map(|x| x.to_bits()).collect());
        next = argmax(&logits);
    }
    out
}

#[test]
fn generation_with_the_topk_plugin_equals_native_generation() {
    let host = host();
    let topk = load(&host, "topk", &[]);
    for arch in fixture_archs() {
        let mut engine = Engine::load(&package(&arch), EngineOptions::default()).expect("engine");
        let prompt: Vec<u32> = (0..12).map(|i| 9 + (i * 37) % 400).collect();
        let native = generate(&engine, &prompt, 6);
        let gate = Arc::new(
            WasmGate::new(&topk, &engine.package().manifest().clone(), Vec::new()).expect("bind"),
        );
        engine.set_gate(gate.clone());
        let wasm = generate(&engine, &prompt, 6);
        assert_eq!(gate.fallbacks(), 0, "{arch}: {:?}", gate.last_failure());
        assert!(
            native == wasm,
            "{arch}: logits differ between native and topk plugin routing"
        );
        assert!(topk.status().calls > 0);
    }
}

#[test]
fn a_failing_gate_plugin_falls_back_to_native_routing() {
    let host = host();
    let arch = "qwen3_moe";
    let mut engine = Engine::load(&package(arch), EngineOptions::default()).expect("engine");
    let prompt: Vec<u32> = (0..10).map(|i| 20 + i * 3).collect();
    let native = generate(&engine, &prompt, 4);
    let manifest = engine.package().manifest().clone();
    for mode in ["trap", "nan", "out-of-range", "loop"] {
        let bad = load(
            &host,
            "hostile-gate-misbehave",
            &[("mode", serde_json::json!(mode))],
        );
        let gate = Arc::new(WasmGate::new(&bad, &manifest, Vec::new()).expect("bind"));
        engine.set_gate(gate.clone());
        let out = generate(&engine, &prompt, 4);
        assert!(out == native, "{mode}: the fallback must route natively");
        assert!(gate.fallbacks() > 0, "{mode}");
        let why = gate.last_failure().expect("failure recorded");
        assert!(!why.is_empty(), "{mode}");
    }
}

#[test]
fn expert_budget_runs_fewer_experts_in_the_engine() {
    let host = host();
    let arch = "qwen3_moe";
    let mut engine = Engine::load(&package(arch), EngineOptions::default()).expect("engine");
    let manifest = engine.package().manifest().clone();
    let top_k = manifest.routing.as_ref().expect("routing").top_k;
    assert!(top_k >= 2, "the fixture must route more than one expert");
    let prompt: Vec<u32> = (0..10).map(|i| 30 + i * 5).collect();
    let before = engine.stats();
    let native = generate(&engine, &prompt, 3);
    let native_acts: u64 = engine
        .stats()
        .since(&before)
        .activations
        .iter()
        .flatten()
        .sum();

    let budget = load(&host, "expert-budget", &[("k", serde_json::json!(1))]);
    let gate = Arc::new(WasmGate::new(&budget, &manifest, Vec::new()).expect("bind"));
    engine.set_gate(gate.clone());
    let before = engine.stats();
    let fewer = generate(&engine, &prompt, 3);
    let fewer_acts: u64 = engine
        .stats()
        .since(&before)
        .activations
        .iter()
        .flatten()
        .sum();
    assert_eq!(gate.fallbacks(), 0, "{:?}", gate.last_failure());
    assert_eq!(
        fewer_acts * top_k as u64,
        native_acts,
        "one expert per token instead of {top_k}"
    );
    assert!(fewer != native, "fewer experts must change the numbers");
}

/// `generate` on a sequence routed by `gate` (None: the engine's rule).
fn generate_routed(
    engine: &Engine,
    gate: Option<Arc<dyn Gate>>,
    prompt: &[u32],
    steps: usize,
) -> Vec<Vec<u32>> {
    let mut seq = engine.new_sequence();
    seq.set_gate(gate);
    let mut out = Vec::new();
    let mut logits = engine
        .forward(&mut seq, prompt, Logits::All)
        .expect("prefill");
    out.push(logits.iter().map(|x| x.to_bits()).collect());
    let vocab = engine.package().vocab_size();
    let mut next = argmax(&logits[logits.len() - vocab..]);
    for _ in 0..steps {
        logits = engine
            .forward(&mut seq, &[next], Logits::Last)
            .expect("decode");
        out.push(logits.iter().map(|x| x.to_bits()).collect());
        next = argmax(&logits);
    }
    out
}

#[test]
fn concurrent_sequences_on_one_engine_route_with_their_own_gates() {
    let host = host();
    let arch = "qwen3_moe";
    let mut engine = Engine::load(&package(arch), EngineOptions::default()).expect("engine");
    let manifest = engine.package().manifest().clone();
    let prompt: Vec<u32> = (0..10).map(|i| 30 + i * 5).collect();
    let native = generate(&engine, &prompt, 3);
    // The reference for one expert per token: the whole engine routed by expert-budget k=1.
    let budget = load(&host, "expert-budget", &[]);
    let k1 = vec![("expert_budget.k".to_string(), "1".to_string())];
    let engine_wide = Arc::new(WasmGate::new(&budget, &manifest, k1.clone()).expect("bind"));
    engine.set_gate(engine_wide.clone());
    let fewer = generate(&engine, &prompt, 3);
    assert!(
        fewer != native,
        "k=1 from the request's params must change the numbers"
    );
    let (_, native_gate) = model_routing(&manifest).expect("routing");
    engine.set_gate(Arc::new(native_gate));

    // Now per sequence, concurrently: one request with the plugin at k=1, one with the plugin
    // at its configured k (the model's top-k, which equals native), one with the engine's rule.
    let bindings = moed::plugins::GateBindings::default();
    let gate_k1: Arc<dyn Gate> = Arc::new(bindings.gate(&budget, &manifest, k1).expect("bind"));
    let gate_top: Arc<dyn Gate> =
        Arc::new(bindings.gate(&budget, &manifest, Vec::new()).expect("bind"));
    let engine = &engine;
    let prompt = &prompt;
    let results: Vec<(usize, Vec<Vec<u32>>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let gate = match i % 3 {
                    0 => Some(gate_k1.clone()),
                    1 => Some(gate_top.clone()),
                    _ => None,
                };
                s.spawn(move || (i % 3, generate_routed(engine, gate, prompt, 3)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for (which, out) in results {
        let want = if which == 0 { &fewer } else { &native };
        assert!(
            out == *want,
            "request kind {which} routed with the wrong gate"
        );
    }
}

fn filters(host: &PluginHost, names: &[&str]) -> RequestFilters {
    let list = names
        .iter()
        .map(|n| moed_plugins::FilterPlugin::new(&load(host, n, &[])).expect("filter"))
        .collect();
    RequestFilters::new(list, Vec::new())
}

#[test]
fn input_filters_rewrite_or_reject_the_prompt() {
    let host = host();
    let f = filters(&host, &["input-check", "pii-redact"]);
    let mut p = Prompt::Chat(vec![
        ChatMessage::new("system", "You are a helpful assistant."),
        ChatMessage::new("user", "Write to jane.doe@example.com about (the invoice."),
        ChatMessage::new("assistant", "Earlier answer mentioning bob@example.org."),
    ]);
    let alerts = f.filter_prompt(&mut p).expect("allowed");
    let Prompt::Chat(m) = &p else {
        panic!("still a chat")
    };
    assert_eq!(
        m[1].content,
        "Write to [REDACTED:email] about (the invoice."
    );
    // The model's own earlier turn is not a person's input.
    assert!(m[2].content.contains("bob@example.org"));
    let codes: Vec<&str> = alerts.iter().map(|a| a.code.as_str()).collect();
    assert_eq!(codes, ["input.unbalanced", "pii.email"]);
    let mut blank = Prompt::Raw("  ".into());
    let e = f
        .filter_prompt(&mut blank)
        .expect_err("rejected")
        .to_string();
    assert!(e.contains("input-check") && e.contains("blank"), "{e}");
}

#[test]
fn output_filters_see_a_real_generation_stream() {
    let host = host();
    let engine = Engine::load(&package("qwen3_moe"), EngineOptions::default()).expect("engine");
    let text = TextModel::load(engine.package()).expect("text model");
    let f = filters(&host, &["pii-redact"]);
    let mut req = GenerateRequest::new(Prompt::Raw("The contact address is".into()));
    req.max_tokens = Some(40);
    req.seed = Some(3);
    req.ignore_eos = true;
    let cancel = AtomicBool::new(false);
    let mut shown = String::new();
    let mut events = FilteredEvents::new(&f, &cancel);
    let outcome = generation::generate(&engine, &text, &req, &cancel, &mut |e| {
        events.on_event(e, &mut |e| {
            if let Event::Text(t) = e {
                shown.push_str(&t);
            }
        })
    })
    .expect("generates");
    assert_eq!(shown, events.answer.released());
    events.finish().expect("no filter error");
    // Streaming through the filter gives what filtering the whole answer gives.
    let mut redacted = Prompt::Raw(outcome.text.clone());
    f.filter_prompt(&mut redacted).expect("filters");
    let Prompt::Raw(redacted) = redacted else {
        panic!("raw")
    };
    assert_eq!(shown, redacted);
    assert!(!shown.is_empty());

    // A filter that fails mid-stream ends the request (fail closed).
    let bad = moed_plugins::FilterPlugin::new(&load(
        &host,
        "hostile-filter-misbehave",
        &[("mode", serde_json::json!("trap"))],
    ))
    .expect("filter");
    let f = RequestFilters::new(vec![bad], Vec::new());
    let cancel = AtomicBool::new(false);
    let mut events = FilteredEvents::new(&f, &cancel);
    let mut forwarded = 0;
    let outcome = generation::generate(&engine, &text, &req, &cancel, &mut |e| {
        events.on_event(e, &mut |_| forwarded += 1)
    })
    .expect("generates");
    assert!(cancel.load(Ordering::Relaxed));
    assert_eq!(outcome.stats.finish_reason.as_str(), "cancelled");
    assert_eq!(forwarded, 0);
    let e = events.finish().expect_err("failed closed").to_string();
    assert!(
        e.contains("fail closed") && e.contains("deliberate panic"),
        "{e}"
    );
}
