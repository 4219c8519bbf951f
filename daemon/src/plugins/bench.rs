//! `moed bench-plugins`: prefill and decode speed with a WASM gate plugin against the native
//! routing rule on one engine, side by side (alternating per repeat, medians), checking that both
//! produce the same tokens and logits; then the latency per call of each plugin kind, with the
//! native gate on the same input next to the gate's.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use moed_plugins::{FilterPlugin, MemoryDocuments, PluginHost, RetrievalPlugin};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::{PluginsError, WasmGate, load_path, model_routing};
use crate::engine::{Engine, EngineError, Gate, Logits, RouterInput, Routing};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Plugins(#[from] PluginsError),
    #[error(transparent)]
    Load(#[from] moed_plugins::LoadError),
    #[error("{0}")]
    Options(String),
    #[error("plugin '{plugin}' failed during the benchmark: {message}")]
    Call { plugin: String, message: String },
}

#[derive(Debug, Clone)]
pub struct PluginBenchConfig {
    pub prompt_tokens: usize,
    pub decode_tokens: usize,
    pub repeat: usize,
    pub seed: u64,
    /// Calls per latency figure.
    pub calls: usize,
    /// Expert budgets (experts per token) to run with the `expert-budget` plugin.
    pub budgets: Vec<usize>,
}

/// `expert-budget` at one budget: speed against quality.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetRow {
    pub k: usize,
    pub decode_tok_s: f64,
    /// Decode tokens/s over native routing's, same run.
    pub speedup: f64,
    /// |logprob under the budget - logprob under native routing| of the native continuation's
    /// tokens (teacher-forced over prompt + continuation), mean and max.
    pub mean_abs_logprob_drift: f64,
    pub max_abs_logprob_drift: f64,
    /// Share of positions where the budget's greedy token equals native routing's.
    pub greedy_agreement: f64,
}

/// Medians of one gate's runs.
#[derive(Debug, Clone, Serialize)]
pub struct GateSpeed {
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    pub runs_decode_tok_s: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub what: String,
    pub plugin: String,
    pub median_us: f64,
    pub p99_us: f64,
    /// The native gate on the same input (gate rows only).
    pub native_median_us: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PluginBenchReport {
    pub model: String,
    pub architecture: String,
    pub threads: usize,
    pub prompt_tokens: usize,
    pub decode_tokens: usize,
    pub repeat: usize,
    pub gate_plugin: String,
    pub native: GateSpeed,
    pub wasm: GateSpeed,
    /// WASM / native decode tokens per second, whole runs.
    pub decode_ratio: f64,
    /// Decode tokens/s of [native, WASM] from steps that alternate the gate within one sequence
    /// (both gates decide the same, so the sequence is the same): machine load that drifts
    /// between runs cancels out.
    pub paired_decode_tok_s: [f64; 2],
    pub paired_decode_ratio: f64,
    pub prefill_ratio: f64,
    /// Every run's tokens and final logits equal bit for bit between the two gates.
    pub identical: bool,
    /// Layer calls the WASM gate left to the native rule (plugin failures).
    pub fallbacks: u64,
    /// Gate calls per decoded token (MoE layers).
    pub gate_calls_per_token: usize,
    /// Decode slowdown the per-call latencies predict: calls per token x (WASM - native median
    /// for one token) x native decode tokens/s. Less noisy than the measured ratio on a busy
    /// machine.
    pub predicted_decode_overhead: f64,
    pub latency: Vec<Latency>,
    pub budgets: Vec<BudgetRow>,
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn p99(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * 0.99) as usize).min(v.len() - 1)]
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

struct Run {
    prefill_tok_s: f64,
    decode_tok_s: f64,
    tokens: Vec<u32>,
    last_logits: Vec<u32>,
}

fn run_once(engine: &Engine, prompt: &[u32], decode: usize) -> Result<Run, EngineError> {
    let mut seq = engine.new_sequence();
    let start = Instant::now();
    let mut logits = engine.forward(&mut seq, prompt, Logits::Last)?;
    let prefill = start.elapsed().as_secs_f64();
    let mut tokens = vec![argmax(&logits)];
    let start = Instant::now();
    for _ in 0..decode {
        let next = tokens[tokens.len() - 1];
        logits = engine.forward(&mut seq, &[next], Logits::Last)?;
        tokens.push(argmax(&logits));
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Run {
        prefill_tok_s: prompt.len() as f64 / prefill,
        decode_tok_s: decode as f64 / secs,
        tokens,
        last_logits: logits.iter().map(|x| x.to_bits()).collect(),
    })
}

/// Decodes `2 * steps` tokens after `prompt` in one sequence, switching the gate every step
/// (`wasm_first` picks which goes first in each pair); returns each gate's step times, seconds.
fn paired_steps(
    engine: &mut Engine,
    gates: [&Arc<dyn Gate>; 2],
    prompt: &[u32],
    steps: usize,
    wasm_first: bool,
) -> Result<[Vec<f64>; 2], EngineError> {
    let mut seq = engine.new_sequence();
    engine.set_gate(gates[0].clone());
    let logits = engine.forward(&mut seq, prompt, Logits::Last)?;
    let mut next = argmax(&logits);
    let mut times = [Vec::with_capacity(steps), Vec::with_capacity(steps)];
    let ctx = engine.package().context_length();
    for i in 0..2 * steps {
        if prompt.len() + i + 1 >= ctx {
            break;
        }
        let g = (i % 2) ^ usize::from(wasm_first);
        engine.set_gate(gates[g].clone());
        let start = Instant::now();
        let logits = engine.forward(&mut seq, &[next], Logits::Last)?;
        times[g].push(start.elapsed().as_secs_f64());
        next = argmax(&logits);
    }
    Ok(times)
}

fn time_calls(calls: usize, mut f: impl FnMut() -> Result<(), String>) -> Result<Vec<f64>, String> {
    let mut t = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(t)
}

/// Runs the benchmark. `engine`'s gate is replaced during the runs and set back to the native rule.
pub fn run(
    engine: &mut Engine,
    host: &PluginHost,
    plugins_dir: &Path,
    gate_name: &str,
    cfg: &PluginBenchConfig,
) -> Result<PluginBenchReport, BenchError> {
    let ctx = engine.package().context_length();
    if cfg.prompt_tokens == 0
        || cfg.decode_tokens == 0
        || cfg.prompt_tokens + cfg.decode_tokens + 1 > ctx
    {
        return Err(BenchError::Options(format!(
            "prompt ({}) and decode ({}) tokens must be at least 1 and fit the context length {ctx}",
            cfg.prompt_tokens, cfg.decode_tokens
        )));
    }
    let manifest = engine.package().manifest().clone();
    let gate_plugin = load_path(host, &plugins_dir.join(format!("{gate_name}.wasm")))?;
    let wasm = Arc::new(WasmGate::new(&gate_plugin, &manifest, Vec::new())?);
    let (_, native) = model_routing(&manifest)?;
    let native: Arc<dyn Gate> = Arc::new(native);
    engine.preload_experts()?;

    let vocab = engine.package().vocab_size() as u32;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let prompt: Vec<u32> = (0..cfg.prompt_tokens)
        .map(|_| rng.random_range(0..vocab))
        .collect();
    // Warm-up: first runs allocate and plan; the plugin instantiates.
    for g in [native.clone(), wasm.clone() as Arc<dyn Gate>] {
        engine.set_gate(g);
        run_once(engine, &prompt[..prompt.len().min(8)], 2)?;
    }
    let (mut n_runs, mut w_runs) = (Vec::new(), Vec::new());
    let mut steps: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut identical = true;
    for r in 0..cfg.repeat.max(1) {
        let wasm_first = r % 2 == 1;
        let mut pair = [None, None];
        for i in 0..2 {
            let use_wasm = (i == 0) == wasm_first;
            engine.set_gate(if use_wasm {
                wasm.clone()
            } else {
                native.clone()
            });
            pair[usize::from(use_wasm)] = Some(run_once(engine, &prompt, cfg.decode_tokens)?);
        }
        let [Some(n), Some(w)] = pair else {
            return Err(BenchError::Options("internal: a run is missing".into()));
        };
        identical &= n.tokens == w.tokens && n.last_logits == w.last_logits;
        n_runs.push(n);
        w_runs.push(w);
        let [a, b] = paired_steps(
            engine,
            [&native, &(wasm.clone() as Arc<dyn Gate>)],
            &prompt,
            cfg.decode_tokens,
            wasm_first,
        )?;
        steps[0].extend(a);
        steps[1].extend(b);
    }
    engine.set_gate(native.clone());
    let step_tok_s = |v: &mut Vec<f64>| {
        let m = median(v);
        if m > 0.0 { 1.0 / m } else { 0.0 }
    };
    let paired = [step_tok_s(&mut steps[0]), step_tok_s(&mut steps[1])];
    let speed = |runs: &[Run]| {
        let mut d: Vec<f64> = runs.iter().map(|r| r.decode_tok_s).collect();
        let mut p: Vec<f64> = runs.iter().map(|r| r.prefill_tok_s).collect();
        GateSpeed {
            prefill_tok_s: median(&mut p),
            decode_tok_s: median(&mut d.clone()),
            runs_decode_tok_s: {
                d.sort_by(f64::total_cmp);
                d
            },
        }
    };
    let (ns, ws) = (speed(&n_runs), speed(&w_runs));

    let budgets = budget_rows(engine, host, plugins_dir, &native, &prompt, &n_runs, cfg)?;
    engine.set_gate(native.clone());
    let mut latency = gate_latency(&manifest, &native, &wasm, gate_name, cfg)?;
    let calls_per_token = manifest
        .layers
        .iter()
        .filter(|l| matches!(l, crate::package::LayerSpec::Moe { .. }))
        .count();
    let predicted = latency.first().map_or(0.0, |l| {
        calls_per_token as f64
            * (l.median_us - l.native_median_us.unwrap_or(0.0))
            * 1e-6
            * ns.decode_tok_s
    });
    latency.extend(other_latency(host, plugins_dir, cfg)?);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    Ok(PluginBenchReport {
        model: manifest.name.clone(),
        architecture: manifest.architecture.clone(),
        threads: engine.intra_threads(),
        prompt_tokens: cfg.prompt_tokens,
        decode_tokens: cfg.decode_tokens,
        repeat: cfg.repeat.max(1),
        gate_plugin: gate_name.to_owned(),
        decode_ratio: ratio(ws.decode_tok_s, ns.decode_tok_s),
        paired_decode_tok_s: paired,
        paired_decode_ratio: ratio(paired[1], paired[0]),
        prefill_ratio: ratio(ws.prefill_tok_s, ns.prefill_tok_s),
        native: ns,
        wasm: ws,
        identical,
        fallbacks: wasm.fallbacks(),
        gate_calls_per_token: calls_per_token,
        predicted_decode_overhead: predicted,
        latency,
        budgets,
    })
}

/// Speed and logprob drift of `expert-budget` at each budget, against native routing.
fn budget_rows(
    engine: &mut Engine,
    host: &PluginHost,
    dir: &Path,
    native: &Arc<dyn Gate>,
    prompt: &[u32],
    native_runs: &[Run],
    cfg: &PluginBenchConfig,
) -> Result<Vec<BudgetRow>, BenchError> {
    if cfg.budgets.is_empty() {
        return Ok(Vec::new());
    }
    let manifest = engine.package().manifest().clone();
    let top_k = manifest.routing.as_ref().map_or(0, |r| r.top_k);
    let Some(reference) = native_runs.first() else {
        return Ok(Vec::new());
    };
    // Prompt + native continuation, scored teacher-forced.
    let mut ids = prompt.to_vec();
    ids.extend_from_slice(&reference.tokens[..reference.tokens.len() - 1]);
    let score = |engine: &Engine| -> Result<(Vec<f64>, Vec<u32>), EngineError> {
        let mut seq = engine.new_sequence();
        let all = engine.forward(&mut seq, &ids, Logits::All)?;
        let vocab = engine.package().vocab_size();
        let mut lp = Vec::new();
        let mut greedy = Vec::new();
        for i in prompt.len() - 1..ids.len() - 1 {
            let row = &all[i * vocab..(i + 1) * vocab];
            lp.push(crate::engine::log_softmax_at(row, ids[i + 1] as usize));
            greedy.push(argmax(row));
        }
        Ok((lp, greedy))
    };
    engine.set_gate(native.clone());
    let (native_lp, native_greedy) = score(engine)?;
    let mut native_speed: Vec<f64> = native_runs.iter().map(|r| r.decode_tok_s).collect();
    let native_tok_s = median(&mut native_speed);
    let mut rows = Vec::new();
    for &k in &cfg.budgets {
        if k == 0 || k > top_k {
            return Err(BenchError::Options(format!(
                "budget {k}: experts per token must be 1 to {top_k}"
            )));
        }
        let mut spec = super::spec_from_path(&dir.join("expert-budget.wasm"))?;
        spec.config.insert("k".into(), serde_json::Value::from(k));
        let plugin = host.load(&spec)?;
        let gate = Arc::new(WasmGate::new(&plugin, &manifest, Vec::new())?);
        engine.set_gate(gate.clone());
        let (lp, greedy) = score(engine)?;
        let mut speeds = Vec::new();
        for _ in 0..cfg.repeat.max(1) {
            speeds.push(run_once(engine, prompt, cfg.decode_tokens)?.decode_tok_s);
        }
        if gate.fallbacks() > 0 {
            return Err(BenchError::Call {
                plugin: "expert-budget".into(),
                message: gate.last_failure().unwrap_or_default(),
            });
        }
        let drift: Vec<f64> = lp
            .iter()
            .zip(&native_lp)
            .map(|(a, b)| (a - b).abs())
            .collect();
        let agree = greedy
            .iter()
            .zip(&native_greedy)
            .filter(|(a, b)| a == b)
            .count();
        let tok_s = median(&mut speeds);
        rows.push(BudgetRow {
            k,
            decode_tok_s: tok_s,
            speedup: if native_tok_s > 0.0 {
                tok_s / native_tok_s
            } else {
                0.0
            },
            mean_abs_logprob_drift: drift.iter().sum::<f64>() / drift.len().max(1) as f64,
            max_abs_logprob_drift: drift.iter().copied().fold(0.0, f64::max),
            greedy_agreement: agree as f64 / greedy.len().max(1) as f64,
        });
    }
    Ok(rows)
}

fn gate_latency(
    manifest: &crate::package::Manifest,
    native: &Arc<dyn Gate>,
    wasm: &Arc<WasmGate>,
    gate_name: &str,
    cfg: &PluginBenchConfig,
) -> Result<Vec<Latency>, BenchError> {
    let Some(r) = manifest.routing.as_ref() else {
        return Ok(Vec::new());
    };
    let layer = manifest
        .layers
        .iter()
        .position(|l| matches!(l, crate::package::LayerSpec::Moe { .. }))
        .unwrap_or(0);
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x5eed);
    let mut rows = Vec::new();
    for tokens in [1, cfg.prompt_tokens] {
        let logits: Vec<f32> = (0..tokens * r.num_experts)
            .map(|_| rng.random_range(-4.0..4.0))
            .collect();
        let input = RouterInput {
            logits: &logits,
            num_tokens: tokens,
            num_experts: r.num_experts,
            top_k: r.top_k,
        };
        let mut out = Routing::default();
        let mut time = |g: &dyn Gate| {
            time_calls(cfg.calls, || {
                out.reset(r.top_k);
                g.route(layer, &input, &mut out).map_err(|e| e.to_string())
            })
        };
        let mut n = time(native.as_ref()).map_err(|message| BenchError::Call {
            plugin: "native".into(),
            message,
        })?;
        let before = wasm.fallbacks();
        let mut w = time(wasm.as_ref()).map_err(|message| BenchError::Call {
            plugin: gate_name.into(),
            message,
        })?;
        if wasm.fallbacks() != before {
            return Err(BenchError::Call {
                plugin: gate_name.into(),
                message: wasm.last_failure().unwrap_or_default(),
            });
        }
        rows.push(Latency {
            what: format!("gate, {tokens} token(s) x {} experts", r.num_experts),
            plugin: gate_name.into(),
            median_us: median(&mut w.clone()),
            p99_us: p99(&mut w),
            native_median_us: Some(median(&mut n)),
        });
    }
    Ok(rows)
}

/// A prompt of about 1 KiB with some personal data in it.
const PROMPT: &str = "Hello, I need help with a refund. My name is Jane Doe and I ordered a standing desk \
(order 88231) on March 3rd. It arrived with a cracked leg. You can reach me at jane.doe@example.com or \
+44 20 7946 0958 between 9 and 5. I paid with my Visa card 4111 1111 1111 1111 and would like the money \
back on the same card, or to my IBAN GB82 WEST 1234 5698 7654 32 if that is easier. The delivery driver \
said the warehouse in Leeds had a water leak last month, which might explain the damage. Could you also \
tell me whether the replacement would ship from the same warehouse? I would rather wait a week than get \
another damaged desk. Our office IT says the order portal logged my login from 203.0.113.42, in case you \
need it to find the order. Thank you for your help, and please let me know what photos you need.";

fn documents(n: usize, seed: u64) -> MemoryDocuments {
    const WORDS: &[&str] = &[
        "vacation",
        "policy",
        "invoice",
        "server",
        "password",
        "office",
        "travel",
        "expense",
        "holiday",
        "contract",
        "security",
        "laptop",
        "payroll",
        "meeting",
        "budget",
        "customer",
        "refund",
        "warehouse",
        "delivery",
        "report",
    ];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut d = MemoryDocuments::default();
    for i in 0..n {
        let text: Vec<&str> = (0..120)
            .map(|_| WORDS[rng.random_range(0..WORDS.len())])
            .collect();
        d.add(
            &format!("doc-{i}"),
            &format!("handbook/{i}.md"),
            &text.join(" "),
        );
    }
    d
}

fn other_latency(
    host: &PluginHost,
    dir: &Path,
    cfg: &PluginBenchConfig,
) -> Result<Vec<Latency>, BenchError> {
    let mut rows = Vec::new();
    let row = |what: &str, plugin: &str, mut t: Vec<f64>| Latency {
        what: what.into(),
        plugin: plugin.into(),
        median_us: median(&mut t.clone()),
        p99_us: p99(&mut t),
        native_median_us: None,
    };
    let fail = |plugin: &str| {
        let plugin = plugin.to_owned();
        move |message: String| BenchError::Call { plugin, message }
    };
    for name in ["pii-redact", "input-check"] {
        let p = load_path(host, &dir.join(format!("{name}.wasm")))?;
        let f = FilterPlugin::new(&p)
            .ok_or_else(|| BenchError::Options(format!("{name} is not a filter")))?;
        let t = time_calls(cfg.calls, || {
            f.check_input(PROMPT, &[])
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .map_err(fail(name))?;
        rows.push(row(
            &format!("filter, prompt of {} bytes", PROMPT.len()),
            name,
            t,
        ));
        let mut stream = f.output(&[]);
        let pieces: Vec<&str> = PROMPT.split_inclusive(' ').collect();
        let mut i = 0;
        let t = time_calls(cfg.calls, || {
            i += 1;
            stream
                .push(pieces[i % pieces.len()])
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .map_err(fail(name))?;
        rows.push(row("filter, one streamed token", name, t));
    }
    let name = "retrieval-embedded";
    host.services()
        .sources
        .register("documents", Arc::new(documents(500, cfg.seed)));
    let p = load_path(host, &dir.join(format!("{name}.wasm")))?;
    let r = RetrievalPlugin::new(&p)
        .ok_or_else(|| BenchError::Options(format!("{name} is not a retrieval plugin")))?;
    let t = time_calls(cfg.calls.min(500), || {
        match r
            .retrieve("refund policy for a damaged delivery", 4, &[])
            .failure
        {
            None => Ok(()),
            Some(f) => Err(f.to_string()),
        }
    })
    .map_err(fail(name))?;
    rows.push(row("retrieval, 4 of 500 documents", name, t));
    Ok(rows)
}
