//! `moed bench --gate`: a gate plugin against the model's own routing on one engine, side by side:
//! prefill and decode speed (runs alternate between the two, which goes first alternates too,
//! medians), experts run per token, and quality as the drift of logprobs: the native greedy
//! continuation of the prompt is scored teacher-forced under both, in the same run.

use std::sync::Arc;

use serde::Serialize;

use super::measure::{self, Arm, greedy_run, median, paired, ratio, teacher_forced};
use crate::engine::{Engine, EngineError, Gate};
use crate::plugins::WasmGate;

#[derive(Debug, thiserror::Error)]
pub enum GateBenchError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Options(String),
    #[error(
        "gate plugin '{plugin}' failed on {calls} layer call(s), which were routed natively, so its figures would be wrong: {message}"
    )]
    Fallback {
        plugin: String,
        calls: u64,
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct GateBenchConfig {
    pub prompt_tokens: usize,
    pub decode_tokens: usize,
    pub repeat: usize,
    pub seed: u64,
}

/// One routing's medians.
#[derive(Debug, Clone, Serialize)]
pub struct RoutingSpeed {
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    pub runs_decode_tok_s: Vec<f64>,
    /// Routed experts run per token and MoE layer while decoding.
    pub experts_per_token: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GateBenchReport {
    pub model: String,
    pub architecture: String,
    pub execution_provider: String,
    pub threads: usize,
    pub top_k: usize,
    pub gate_plugin: String,
    pub gate_params: Vec<(String, String)>,
    pub prompt_tokens: usize,
    pub decode_tokens: usize,
    pub repeat: usize,
    pub native: RoutingSpeed,
    pub gate: RoutingSpeed,
    /// Gate / native decode tokens per second.
    pub decode_ratio: f64,
    pub prefill_ratio: f64,
    /// Tokens of the native continuation scored for the drift.
    pub drift_tokens: usize,
    /// |logprob under the gate - logprob natively| of the native continuation's tokens.
    pub mean_abs_logprob_drift: f64,
    pub max_abs_logprob_drift: f64,
    /// Mean logprob of those tokens under each routing (quality: higher is better).
    pub native_mean_logprob: f64,
    pub gate_mean_logprob: f64,
    /// Share of positions where the gate's most likely token is native routing's.
    pub greedy_agreement: f64,
}

struct Run {
    prefill_tok_s: f64,
    decode_tok_s: f64,
    experts_per_token: f64,
    tokens: Vec<u32>,
}

fn run_once(
    engine: &Engine,
    gate: Option<Arc<dyn Gate>>,
    prompt: &[u32],
    decode: usize,
) -> Result<Run, EngineError> {
    let mut seq = engine.new_sequence();
    seq.set_gate(gate);
    let run = greedy_run(engine, &mut seq, prompt, decode, engine.mode())?;
    let delta = &run.decode_stats;
    let moe_layers = delta.activations.iter().filter(|r| !r.is_empty()).count();
    let routed: u64 = delta.activations.iter().flatten().sum();
    Ok(Run {
        prefill_tok_s: run.prefill_tok_s(),
        decode_tok_s: run.decode_tok_s(),
        experts_per_token: routed as f64 / (decode * moe_layers.max(1)) as f64,
        tokens: run.tokens,
    })
}

/// [`teacher_forced`] under `gate` (None: native).
fn score(
    engine: &Engine,
    gate: Option<Arc<dyn Gate>>,
    ids: &[u32],
    from: usize,
) -> Result<(Vec<f64>, Vec<u32>), EngineError> {
    let mut seq = engine.new_sequence();
    seq.set_gate(gate);
    teacher_forced(engine, &mut seq, ids, from)
}

/// Runs the comparison. `gate` must be bound to `engine`'s package.
pub fn run(
    engine: &Engine,
    gate: Arc<WasmGate>,
    params: Vec<(String, String)>,
    cfg: &GateBenchConfig,
) -> Result<GateBenchReport, GateBenchError> {
    let lengths = (cfg.prompt_tokens, cfg.decode_tokens);
    let prompt =
        measure::random_prompt(engine, lengths, cfg.seed).map_err(GateBenchError::Options)?;
    let manifest = engine.package().manifest();
    let top_k = manifest.routing.as_ref().map_or(0, |r| r.top_k);
    engine.preload_experts()?;
    let as_gate = || Some(gate.clone() as Arc<dyn Gate>);
    // Warm-up: first runs allocate and plan; the plugin instantiates.
    run_once(engine, None, &prompt[..prompt.len().min(8)], 2)?;
    run_once(engine, as_gate(), &prompt[..prompt.len().min(8)], 2)?;

    let (native, gated) = paired(cfg.repeat, |arm, _| match arm {
        Arm::A => run_once(engine, None, &prompt, cfg.decode_tokens),
        Arm::B => run_once(engine, as_gate(), &prompt, cfg.decode_tokens),
    })?;
    // Quality: the native continuation, scored teacher-forced under both routings.
    let reference = &native[0].tokens;
    let mut ids = prompt.clone();
    ids.extend_from_slice(&reference[..reference.len() - 1]);
    let (native_lp, native_greedy) = score(engine, None, &ids, prompt.len())?;
    let (gate_lp, gate_greedy) = score(engine, as_gate(), &ids, prompt.len())?;
    if gate.fallbacks() > 0 {
        return Err(GateBenchError::Fallback {
            plugin: gate.plugin().name().to_owned(),
            calls: gate.fallbacks(),
            message: gate.last_failure().unwrap_or_default(),
        });
    }
    let drift: Vec<f64> = gate_lp
        .iter()
        .zip(&native_lp)
        .map(|(a, b)| (a - b).abs())
        .collect();
    let n = drift.len().max(1) as f64;
    let agree = gate_greedy
        .iter()
        .zip(&native_greedy)
        .filter(|(a, b)| a == b)
        .count();
    let speed = |runs: &[Run]| RoutingSpeed {
        prefill_tok_s: median(&runs.iter().map(|r| r.prefill_tok_s).collect::<Vec<_>>()),
        decode_tok_s: median(&runs.iter().map(|r| r.decode_tok_s).collect::<Vec<_>>()),
        runs_decode_tok_s: runs.iter().map(|r| r.decode_tok_s).collect(),
        experts_per_token: median(&runs.iter().map(|r| r.experts_per_token).collect::<Vec<_>>()),
    };
    let (ns, gs) = (speed(&native), speed(&gated));
    Ok(GateBenchReport {
        model: manifest.name.clone(),
        architecture: manifest.architecture.clone(),
        execution_provider: engine.execution_provider().to_owned(),
        threads: engine.intra_threads(),
        top_k,
        gate_plugin: gate.plugin().name().to_owned(),
        gate_params: params,
        prompt_tokens: cfg.prompt_tokens,
        decode_tokens: cfg.decode_tokens,
        repeat: cfg.repeat.max(1),
        decode_ratio: ratio(gs.decode_tok_s, ns.decode_tok_s),
        prefill_ratio: ratio(gs.prefill_tok_s, ns.prefill_tok_s),
        native: ns,
        gate: gs,
        drift_tokens: drift.len(),
        mean_abs_logprob_drift: drift.iter().sum::<f64>() / n,
        max_abs_logprob_drift: drift.iter().copied().fold(0.0, f64::max),
        native_mean_logprob: native_lp.iter().sum::<f64>() / n,
        gate_mean_logprob: gate_lp.iter().sum::<f64>() / n,
        greedy_agreement: agree as f64 / gate_greedy.len().max(1) as f64,
    })
}

/// The report as the table `moed bench --gate` prints.
pub fn table(r: &GateBenchReport) -> String {
    let params = if r.gate_params.is_empty() {
        String::new()
    } else {
        let p: Vec<String> = r
            .gate_params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(" ({})", p.join(", "))
    };
    let name = format!("gate {}", r.gate_plugin);
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "moed bench --gate: {}{params} against native top-{} routing on {} ({}), {} with {} thread(s); prompt {} tokens, decode {} tokens, medians of {} (alternating)",
        r.gate_plugin,
        r.top_k,
        r.model,
        r.architecture,
        r.execution_provider,
        r.threads,
        r.prompt_tokens,
        r.decode_tokens,
        r.repeat
    ));
    line(String::new());
    line(format!(
        "{:<34}{:>12}{:>22}{:>14}",
        "", "native", name, "gate/native"
    ));
    line(format!(
        "{:<34}{:>12.1}{:>22.1}{:>13.3}x",
        "prefill tok/s", r.native.prefill_tok_s, r.gate.prefill_tok_s, r.prefill_ratio
    ));
    line(format!(
        "{:<34}{:>12.1}{:>22.1}{:>13.3}x",
        "decode tok/s", r.native.decode_tok_s, r.gate.decode_tok_s, r.decode_ratio
    ));
    line(format!(
        "{:<34}{:>12.2}{:>22.2}",
        "experts run / token / MoE layer", r.native.experts_per_token, r.gate.experts_per_token
    ));
    line(format!(
        "{:<34}{:>12.4}{:>22.4}",
        "mean logprob (native continuation)", r.native_mean_logprob, r.gate_mean_logprob
    ));
    line(String::new());
    line(format!(
        "logprob drift against native over the native greedy continuation ({} tokens, teacher-forced, same run): mean |dlogp| {:.4}, max |dlogp| {:.4}; greedy token agreement {:.1}%",
        r.drift_tokens,
        r.mean_abs_logprob_drift,
        r.max_abs_logprob_drift,
        r.greedy_agreement * 100.0
    ));
    let runs = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    line(format!(
        "decode tok/s per run: native [{}], gate [{}]",
        runs(&r.native.runs_decode_tok_s),
        runs(&r.gate.runs_decode_tok_s)
    ));
    out
}
