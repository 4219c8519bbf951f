//! `moed bench-plugins`: decode speed with a WASM gate plugin against native routing, side by
//! side on one engine, and the latency per call of each plugin kind.

use std::path::PathBuf;

use anyhow::Context;

use super::score::EngineArgs;
use crate::bench::plugins::{self as bench, PluginBenchConfig, PluginBenchReport};
use crate::engine::{Engine, ExecMode};

#[derive(clap::Args, Debug)]
pub struct BenchPluginsArgs {
    /// Model package directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Directory of built plugins (NAME.wasm with NAME.toml, as plugins/build.sh leaves them).
    #[arg(long, default_value = "target/plugins")]
    pub plugins: PathBuf,
    /// Gate plugin to compare with native routing.
    #[arg(long, default_value = "topk")]
    pub gate: String,
    #[arg(long, default_value_t = 64)]
    pub prompt_tokens: usize,
    #[arg(long, default_value_t = 32)]
    pub decode_tokens: usize,
    /// Timed runs per gate; medians are reported.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Calls per latency figure.
    #[arg(long, default_value_t = 2000)]
    pub calls: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also run the expert-budget plugin at these experts-per-token budgets (comma-separated),
    /// printing speed against logprob drift.
    #[arg(long, value_delimiter = ',')]
    pub budget: Vec<usize>,
    /// Compiled-plugin cache directory (default: none, compile on load).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub fn run(args: BenchPluginsArgs) -> anyhow::Result<()> {
    let mut engine = Engine::load(&args.model, args.engine.options(ExecMode::Sparse)?)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let sources = std::sync::Arc::new(moed_plugins::Sources::default());
    let host = moed_plugins::PluginHost::new(
        moed_plugins::HostOptions {
            cache_dir: args.cache_dir.clone(),
            ..Default::default()
        },
        moed_plugins::Services {
            sources,
            ..Default::default()
        },
    )?;
    let cfg = PluginBenchConfig {
        prompt_tokens: args.prompt_tokens,
        decode_tokens: args.decode_tokens,
        repeat: args.repeat,
        seed: args.seed,
        calls: args.calls,
        budgets: args.budget.clone(),
    };
    let report = bench::run(&mut engine, &host, &args.plugins, &args.gate, &cfg)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

fn table(r: &PluginBenchReport) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "moed bench-plugins: {} ({}), {} thread(s); prompt {} tokens, decode {} tokens, medians of {} (gates alternate per repeat)",
        r.model, r.architecture, r.threads, r.prompt_tokens, r.decode_tokens, r.repeat
    ));
    line(format!(
        "{:<22} {:>12} {:>12}",
        "routing", "prefill tok/s", "decode tok/s"
    ));
    line(format!(
        "{:<22} {:>12.1} {:>12.1}",
        "native", r.native.prefill_tok_s, r.native.decode_tok_s
    ));
    line(format!(
        "{:<22} {:>12.1} {:>12.1}",
        format!("wasm {}", r.gate_plugin),
        r.wasm.prefill_tok_s,
        r.wasm.decode_tok_s
    ));
    line(format!(
        "wasm/native: decode {:.3} ({:+.1}%), prefill {:.3}; {} gate call(s) per token; same tokens and logits: {}; fallbacks: {}",
        r.decode_ratio,
        (r.decode_ratio - 1.0) * 100.0,
        r.prefill_ratio,
        r.gate_calls_per_token,
        if r.identical { "yes" } else { "NO" },
        r.fallbacks
    ));
    line(format!(
        "paired steps (gate switched every decoded token, one sequence): native {:.1} tok/s, wasm {:.1} tok/s, wasm/native {:.3} ({:+.1}%)",
        r.paired_decode_tok_s[0],
        r.paired_decode_tok_s[1],
        r.paired_decode_ratio,
        (r.paired_decode_ratio - 1.0) * 100.0
    ));
    line(format!(
        "predicted from the per-call latencies below: decode {:+.2}% ({} call(s) per token x extra latency of one call)",
        -r.predicted_decode_overhead * 100.0,
        r.gate_calls_per_token
    ));
    line(format!(
        "decode tok/s per run: native {:?}, wasm {:?}",
        r.native
            .runs_decode_tok_s
            .iter()
            .map(|x| (x * 10.0).round() / 10.0)
            .collect::<Vec<_>>(),
        r.wasm
            .runs_decode_tok_s
            .iter()
            .map(|x| (x * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    ));
    if !r.budgets.is_empty() {
        line(
            "expert-budget (speed against quality; drift of the native continuation's logprobs):"
                .into(),
        );
        line(format!(
            "  {:>3} {:>12} {:>8} {:>14} {:>14} {:>8}",
            "k", "decode tok/s", "speedup", "mean |dlogp|", "max |dlogp|", "greedy="
        ));
        for b in &r.budgets {
            line(format!(
                "  {:>3} {:>12.1} {:>8.3} {:>14.4} {:>14.4} {:>7.0}%",
                b.k,
                b.decode_tok_s,
                b.speedup,
                b.mean_abs_logprob_drift,
                b.max_abs_logprob_drift,
                b.greedy_agreement * 100.0
            ));
        }
    }
    line("latency per call (microseconds):".into());
    line(format!(
        "  {:<36} {:<20} {:>9} {:>9} {:>12}",
        "call", "plugin", "median", "p99", "native gate"
    ));
    for l in &r.latency {
        line(format!(
            "  {:<36} {:<20} {:>9.2} {:>9.2} {:>12}",
            l.what,
            l.plugin,
            l.median_us,
            l.p99_us,
            l.native_median_us
                .map_or(String::new(), |n| format!("{n:.2}"))
        ));
    }
    out
}
