//! `moed bench`: prefill and decode speed of sparse against dense execution of one package, with
//! the memory bandwidth measured in the same run (in the manner of llama-bench); with `--gate`, a
//! gate plugin against the model's own routing instead (speed against logprob drift).

use std::path::PathBuf;

use anyhow::Context;

use super::gate_args::GateArgs;
use super::score::EngineArgs;
use crate::bench::gate::GateBenchConfig;
use crate::bench::{self, BenchConfig, BenchReport, LoadStart, ModeResult};
use crate::engine::{Engine, ExecMode};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Model package directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt length (random token ids).
    #[arg(long, default_value_t = 64)]
    pub prompt_tokens: usize,
    /// Tokens decoded after the prompt.
    #[arg(long, default_value_t = 32)]
    pub decode_tokens: usize,
    /// Timed runs per mode; medians are reported.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Seed of the random prompts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Buffer of the memory bandwidth measurement, MiB.
    #[arg(long, default_value_t = 1024)]
    pub bandwidth_mib: usize,
    /// Also measure sparse decode speed from these context lengths (comma-separated, e.g.
    /// 128,1024,4096), each against the shortest.
    #[arg(long, value_delimiter = ',')]
    pub contexts: Vec<usize>,
    /// Also measure N sequences decoding in shared steps (continuous batching) against one
    /// sequence alone, on the same engine, arms alternating.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub batch: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// With --gate: compare the gate plugin with the model's own routing (decode speed, experts
    /// per token, logprob drift) instead of sparse with dense execution.
    #[command(flatten)]
    pub gate: GateArgs,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let load_start = LoadStart::now();
    let engine = Engine::load(&args.model, args.engine.options(ExecMode::Sparse)?)
        .with_context(|| format!("loading {}", args.model.display()))?;
    if let Some((gate, params)) = args.gate.load(&engine)? {
        if !args.contexts.is_empty() {
            anyhow::bail!(
                "--contexts measures the model's own routing; it cannot be used with --gate"
            );
        }
        let cfg = GateBenchConfig {
            prompt_tokens: args.prompt_tokens,
            decode_tokens: args.decode_tokens,
            repeat: args.repeat,
            seed: args.seed,
        };
        let report = bench::gate::run(&engine, gate, params, &cfg)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", bench::gate::table(&report));
        }
        return Ok(());
    }
    let cfg = BenchConfig {
        prompt_tokens: args.prompt_tokens,
        decode_tokens: args.decode_tokens,
        repeat: args.repeat,
        seed: args.seed,
        bandwidth_bytes: args.bandwidth_mib << 20,
        load_start: Some(load_start),
        contexts: args.contexts.clone(),
        batch: args.batch,
    };
    let report = bench::run(&engine, &cfg, args.engine.expert_memory_budget)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report, &engine));
    }
    Ok(())
}

fn mb(bytes: f64) -> String {
    format!("{:.2} MB", bytes / 1e6)
}

fn table(r: &BenchReport, engine: &Engine) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "moed bench: {} ({}, experts {}), {} with {} thread(s); prompt {} tokens, decode {} tokens, medians of {}",
        r.model,
        r.architecture,
        r.expert_precision,
        r.execution_provider,
        r.threads,
        r.prompt_tokens,
        r.decode_tokens,
        r.repeat
    ));
    for (p, why) in engine.provider_fallbacks() {
        line(format!("  ({p} not used: {why})"));
    }
    line(format!("quantized matmuls: {}", r.quantized_matmul));
    line(format!("placement: {}", r.placement.line()));
    line(format!(
        "precision: {}",
        engine.package().manifest().precision_lines().join(", ")
    ));
    let w = &r.weights;
    line(format!(
        "weights: experts {} in {} MoE layers, shared {}, attention {}, routers {}, dense MLP {}, head {}, embed {}; resident experts {}{}",
        mb(w.experts as f64),
        w.moe_layers,
        mb(w.shared as f64),
        mb(w.attn as f64),
        mb(w.router as f64),
        mb(w.dense_mlp as f64),
        mb(w.head as f64),
        mb(w.embed as f64),
        mb(r.resident_expert_bytes as f64),
        r.expert_budget
            .map_or(String::new(), |b| format!(" (budget {})", mb(b as f64)))
    ));
    line(String::new());
    line(format!(
        "{:<34}{:>14}{:>14}{:>16}",
        "", "sparse", "dense", "sparse/dense"
    ));
    let row = |name: &str, f: fn(&ModeResult) -> f64, prec: usize, ratio: Option<f64>| {
        let ratio = ratio.map_or(String::new(), |x| format!("{x:.2}x"));
        format!(
            "{name:<34}{:>14.prec$}{:>14.prec$}{ratio:>16}",
            f(&r.sparse),
            f(&r.dense)
        )
    };
    line(row(
        "prefill tok/s",
        |m| m.prefill_tok_s,
        1,
        Some(r.prefill_ratio),
    ));
    line(row(
        "decode tok/s",
        |m| m.decode_tok_s,
        2,
        Some(r.decode_ratio),
    ));
    line(row("time to first token (ms)", |m| m.ttft_ms, 1, None));
    line(row(
        "bytes read / decoded token (MB)",
        |m| m.bytes_per_token / 1e6,
        3,
        None,
    ));
    line(row(
        "  of which routed experts (MB)",
        |m| m.expert_bytes_per_token / 1e6,
        3,
        None,
    ));
    line(row("bandwidth fraction", |m| m.bandwidth_fraction, 3, None));
    if r.expert_budget.is_some() {
        line(row("expert cache hit rate", |m| m.expert_hit_rate, 3, None));
        line(row(
            "expert loads / decoded token (MB)",
            |m| m.expert_load_bytes_per_token / 1e6,
            3,
            None,
        ));
        line(row(
            "read from storage / token (MB)",
            |m| m.storage_bytes_per_token / 1e6,
            3,
            None,
        ));
        line(row(
            "expert session creation (ms)",
            |m| m.ms_per_miss,
            2,
            None,
        ));
        line(row(
            "prefetch: guesses chosen",
            |m| m.prefetch_accuracy,
            3,
            None,
        ));
        line(row(
            "prefetch: chosen guessed",
            |m| m.prefetch_coverage,
            3,
            None,
        ));
    }
    line(row(
        "decode time outside ORT (%)",
        |m| m.outside_ort_share * 100.0,
        2,
        None,
    ));
    line(row(
        "ORT runs / decoded token",
        |m| m.runs_per_token,
        1,
        None,
    ));
    line(row("wall time / ORT run (us)", |m| m.us_per_run, 1, None));
    line(row(
        "decode time in fixed run cost (%)",
        |m| m.run_overhead_share * 100.0,
        2,
        None,
    ));
    line(row(
        "expert graph time / token (ms)",
        |m| m.expert_ms_per_token,
        3,
        Some(r.expert_time_ratio),
    ));
    line(row(
        "attention graph time / token (ms)",
        |m| m.attention_ms_per_token,
        3,
        None,
    ));
    line(row(
        "head time / token (ms)",
        |m| m.head_ms_per_token,
        3,
        None,
    ));
    line(String::new());
    let of = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    line(format!(
        "ideal sparse/dense ratio of expert bytes per token (all experts vs top-k, + shared): {:.2}x",
        r.ideal_ratio
    ));
    line(format!(
        "  measured: decode {:.2}x = {:.2} of it; time inside expert graphs (dense/sparse) {:.2}x = {:.2} of it",
        r.decode_ratio,
        of(r.decode_ratio, r.ideal_ratio),
        r.expert_time_ratio,
        of(r.expert_time_ratio, r.ideal_ratio)
    ));
    line(format!(
        "ideal sparse/dense ratio of all bytes per decoded token (attention, head, KV included): {:.2}x; decode reaches {:.2} of it",
        r.ideal_ratio_all_bytes,
        of(r.decode_ratio, r.ideal_ratio_all_bytes)
    ));
    line(format!(
        "memory read bandwidth (measured before each repeat, {} thread(s), {} MiB buffer): median {:.2} GB/s",
        r.threads,
        r.bandwidth_buffer_bytes >> 20,
        r.bandwidth / 1e9
    ));
    line(format!(
        "fixed cost of one ORT run (one-node graph, median before each repeat): {:.2} us",
        r.run_overhead_us
    ));
    line(format!(
        "bandwidth fraction = bytes/token x decode tok/s / that repeat's bandwidth (median): sparse {:.3}, dense {:.3}",
        r.sparse.bandwidth_fraction, r.dense.bandwidth_fraction
    ));
    if let Some(l) = &r.load {
        line(format!(
            "load: graphs {:.0} ms, first token {:.0} ms after the start of the load, every expert session {:.0} ms",
            l.load_ms, l.load_to_first_token_ms, l.all_experts_ms
        ));
    }
    if let Some(m) = &r.memory {
        line(format!(
            "memory: peak RSS {} ({:.2}x the {} of weight files above the {} before the load); {} sessions",
            mb(m.peak_rss as f64),
            m.peak_factor,
            mb(m.weight_file_bytes as f64),
            mb(m.before_load.rss as f64),
            m.sessions
        ));
        line(format!(
            "  resident after warm-up {}: weights mapped from the package {}, sessions (anonymous: prepacked weights, session state) {}, runs (arenas) {}, other {}; of the anonymous, weights repacked 16 rows abreast {}; weights resident {:.2}x their file bytes; KV cache of {} tokens {}",
            mb(m.after_warmup.rss as f64),
            mb(m.weights_mapped as f64),
            mb(m.sessions_anonymous as f64),
            mb(m.runs_anonymous as f64),
            mb(m.other as f64),
            mb(m.weights_packed as f64),
            m.weights_factor,
            r.prompt_tokens + r.decode_tokens,
            mb(m.kv_cache as f64)
        ));
    }
    if let Some(sbs) = &r.side_by_side {
        line(format!(
            "experts of a decode step side by side on {} threads (one expert each) vs one after another (each matmul split): {:.2} vs {:.2} tok/s = {:.2}x (sparse decode, medians of {} turns each, arms alternating); same tokens and logits: {}",
            r.threads,
            sbs.side_by_side_tok_s,
            sbs.one_at_a_time_tok_s,
            sbs.ratio,
            sbs.runs_side_by_side_tok_s.len(),
            if sbs.identical { "yes" } else { "NO" }
        ));
    }
    if let Some(b) = &r.batch {
        line(format!(
            "batched decode, {} sequences in shared steps vs 1 alone: {:.2} vs {:.2} tok/s = {:.2}x (aggregate; medians, arms alternating); a step {:.2} ms vs {:.2} ms; of a batched step {:.2} ms in {:.1} expert runs, {:.2} ms attention, {:.2} ms head, {:.2} ms the other graphs; attention once per step: {}",
            b.sequences,
            b.batched_tok_s,
            b.alone_tok_s,
            b.ratio,
            b.batched_step_ms,
            b.alone_step_ms,
            b.batched_expert_ms,
            b.batched_expert_runs,
            b.batched_attention_ms,
            b.batched_head_ms,
            b.batched_other_ms,
            if b.attention_batched { "yes" } else { "no" }
        ));
    }
    if !r.contexts.is_empty() {
        line(String::new());
        line(format!(
            "sparse decode by context ({} tokens per run, medians of {}, contexts taking turns):",
            r.decode_tokens, r.repeat
        ));
        let base = r.contexts.first().map_or(0, |c| c.context);
        for c in &r.contexts {
            line(format!(
                "  context {:>6}: {:>10.2} tok/s  {:.2}x of context {base}",
                c.context, c.decode_tok_s, c.ratio
            ));
        }
    }
    out
}
