//! `expert-budget` at several budgets: decode speed against the drift of the native
//! continuation's logprobs.

use std::path::Path;
use std::sync::Arc;

use moed_plugins::PluginHost;

use super::{BenchError, BudgetRow, PluginBenchConfig, run_once};
use crate::bench::measure::{GreedyRun, median, teacher_forced};
use crate::engine::{Engine, Gate};
use crate::plugins::WasmGate;

/// Speed and logprob drift of `expert-budget` at each budget, against native routing.
pub(super) fn budget_rows(
    engine: &mut Engine,
    host: &PluginHost,
    dir: &Path,
    native: &Arc<dyn Gate>,
    prompt: &[u32],
    native_runs: &[GreedyRun],
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
    let score =
        |engine: &Engine| teacher_forced(engine, &mut engine.new_sequence(), &ids, prompt.len());
    engine.set_gate(native.clone());
    let (native_lp, native_greedy) = score(engine)?;
    let native_speed: Vec<f64> = native_runs.iter().map(GreedyRun::decode_tok_s).collect();
    let native_tok_s = median(&native_speed);
    let mut rows = Vec::new();
    for &k in &cfg.budgets {
        if k == 0 || k > top_k {
            return Err(BenchError::Options(format!(
                "budget {k}: experts per token must be 1 to {top_k}"
            )));
        }
        let mut spec = crate::plugins::spec_from_path(&dir.join("expert-budget.wasm"))?;
        spec.config.insert("k".into(), serde_json::Value::from(k));
        let plugin = host.load(&spec)?;
        let gate = Arc::new(WasmGate::new(&plugin, &manifest, Vec::new())?);
        engine.set_gate(gate.clone());
        let (lp, greedy) = score(engine)?;
        let mut speeds = Vec::new();
        for _ in 0..cfg.repeat.max(1) {
            speeds.push(run_once(engine, prompt, cfg.decode_tokens)?.decode_tok_s());
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
        let tok_s = median(&speeds);
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
