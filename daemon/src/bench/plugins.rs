//! `moed bench-plugins`: prefill and decode speed with a WASM gate plugin against the native
//! routing rule on one engine, side by side (alternating per repeat, medians), checking that both
//! produce the same tokens and logits; then the latency per call of each plugin kind, with the
//! native gate on the same input next to the gate's.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use moed_plugins::PluginHost;
use serde::Serialize;

mod budget;
mod latency;

use crate::bench::measure::{self, GreedyRun, argmax, greedy_run, median, ratio};
use crate::engine::{Engine, EngineError, Gate, Logits};
use crate::plugins::{PluginsError, WasmGate, load_path, model_routing};

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

/// One greedy run on a fresh sequence under the engine's own gate.
pub(crate) fn run_once(
    engine: &Engine,
    prompt: &[u32],
    decode: usize,
) -> Result<GreedyRun, EngineError> {
    greedy_run(
        engine,
        &mut engine.new_sequence(),
        prompt,
        decode,
        engine.mode(),
    )
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

/// Runs the benchmark. `engine`'s gate is replaced during the runs and set back to the native rule.
pub fn run(
    engine: &mut Engine,
    host: &PluginHost,
    plugins_dir: &Path,
    gate_name: &str,
    cfg: &PluginBenchConfig,
) -> Result<PluginBenchReport, BenchError> {
    let lengths = (cfg.prompt_tokens, cfg.decode_tokens);
    let prompt = measure::random_prompt(engine, lengths, cfg.seed).map_err(BenchError::Options)?;
    let manifest = engine.package().manifest().clone();
    let gate_plugin = load_path(host, &plugins_dir.join(format!("{gate_name}.wasm")))?;
    let wasm = Arc::new(WasmGate::new(&gate_plugin, &manifest, Vec::new())?);
    let (_, native) = model_routing(&manifest)?;
    let native: Arc<dyn Gate> = Arc::new(native);
    engine.preload_experts()?;

    // Warm-up: first runs allocate and plan; the plugin instantiates.
    for g in [native.clone(), wasm.clone() as Arc<dyn Gate>] {
        engine.set_gate(g);
        run_once(engine, &prompt[..prompt.len().min(8)], 2)?;
    }
    let (mut n_runs, mut w_runs) = (Vec::new(), Vec::new());
    let mut steps: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut identical = true;
    for r in 0..cfg.repeat.max(1) {
        let order = measure::order(r);
        let wasm_first = order[0] == measure::Arm::B;
        let mut pair = [None, None];
        for arm in order {
            let use_wasm = arm == measure::Arm::B;
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
    let step_tok_s = |v: &Vec<f64>| {
        let m = median(v);
        if m > 0.0 { 1.0 / m } else { 0.0 }
    };
    let paired = [step_tok_s(&steps[0]), step_tok_s(&steps[1])];
    let speed = |runs: &[GreedyRun]| {
        let mut d: Vec<f64> = runs.iter().map(GreedyRun::decode_tok_s).collect();
        let p: Vec<f64> = runs.iter().map(GreedyRun::prefill_tok_s).collect();
        GateSpeed {
            prefill_tok_s: median(&p),
            decode_tok_s: median(&d),
            runs_decode_tok_s: {
                d.sort_by(f64::total_cmp);
                d
            },
        }
    };
    let (ns, ws) = (speed(&n_runs), speed(&w_runs));

    let budgets = budget::budget_rows(engine, host, plugins_dir, &native, &prompt, &n_runs, cfg)?;
    engine.set_gate(native.clone());
    let mut latency = latency::gate_latency(&manifest, &native, &wasm, gate_name, cfg)?;
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
    latency.extend(latency::other_latency(host, plugins_dir, cfg)?);
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
