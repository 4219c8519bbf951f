//! `moed score`: the log-probability of each token of a text given all tokens before it (in the
//! manner of llama-perplexity), as a table or as JSON; with `--gate`, under a gate plugin next to
//! the model's own routing, and the drift between them. Without `--gate` it runs through the
//! same service pipeline as the daemon's `Score`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;

use super::gate_args::GateArgs;
use super::local::{self, EngineOverrides, LocalService, ServiceArgs};
use crate::bytesize::ByteSize;
use crate::engine::{
    Engine, EngineOptions, ExecMode, Gate, MatmulKernel, Provider, score_tokens, score_tokens_with,
};
use crate::text::tokenizer::TextTokenizer;
use moed_service::service::ScoreParams;

/// Engine settings shared by the offline commands.
#[derive(clap::Args, Debug, Clone)]
pub struct EngineArgs {
    /// Execution providers in order of preference, comma-separated (tensorrt, cuda, cpu).
    #[arg(long, value_delimiter = ',', default_value = "cpu")]
    pub provider: Vec<String>,
    /// ONNX Runtime intra-op threads (default: all CPUs).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Bound on resident expert weights, in bytes; suffixes K, M, G (powers of 1000) or KiB, MiB,
    /// GiB (powers of 1024) allowed, as in moed.toml; default unbounded.
    #[arg(long, value_parser = parse_bytes)]
    pub expert_memory_budget: Option<u64>,
    /// Let ONNX Runtime's idle pool threads spin between graph runs (faster on an otherwise idle
    /// machine, worse when other processes need the cores).
    #[arg(long)]
    pub ort_spinning: bool,
    /// Path of libonnxruntime.so (default: ORT_DYLIB_PATH, then the package locations).
    #[arg(long)]
    pub ort_library: Option<PathBuf>,
    /// Kernel of the block-quantized (int4/int8) matmuls on the CPU: moed's own, or ONNX
    /// Runtime's MatMulNBits (as `engine.quantized_matmul` in moed.toml).
    #[arg(long, default_value = "moed", value_parser = parse_matmul_kernel)]
    pub quantized_matmul: MatmulKernel,
    /// Bytes of graphs to place on the first usable GPU provider of --provider (attention,
    /// routers, head, then experts), the rest on the CPU, as `engine.gpu_memory_budget`; 0: all
    /// on the CPU; default: the first provider that works runs every graph.
    #[arg(long, value_parser = parse_bytes)]
    pub gpu_memory_budget: Option<u64>,
    /// Run the routed experts of a decode step one after another, each matmul split across the
    /// threads, instead of side by side, one expert per thread (as `engine.experts_side_by_side
    /// = false` in moed.toml).
    #[arg(long)]
    pub experts_one_at_a_time: bool,
    /// Under --expert-memory-budget, do not guess each MoE layer's experts while the layer before
    /// it runs (as `engine.prefetch_next_layer = false` in moed.toml).
    #[arg(long)]
    pub no_prefetch_next_layer: bool,
}

impl EngineArgs {
    pub fn options(&self, mode: ExecMode) -> anyhow::Result<EngineOptions> {
        let providers = self
            .provider
            .iter()
            .map(|p| p.parse::<Provider>())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EngineOptions {
            providers,
            expert_memory_budget: self.expert_memory_budget,
            intra_threads: self.threads,
            mode,
            ort_library: self.ort_library.clone(),
            spinning: self.ort_spinning,
            progress: None,
            quantized_matmul: self.quantized_matmul,
            gpu_memory_budget: self.gpu_memory_budget,
            activations: Vec::new(),
            tensorrt_cache_dir: None,
            experts_side_by_side: !self.experts_one_at_a_time,
            batch: Default::default(),
            prefetch_next_layer: !self.no_prefetch_next_layer,
        })
    }
}

fn parse_matmul_kernel(s: &str) -> Result<MatmulKernel, String> {
    s.parse()
        .map_err(|e: crate::engine::UnknownKernel| e.to_string())
}

/// A byte count on the command line, with the configuration's meaning ([`ByteSize`]).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    s.parse::<ByteSize>()
        .map(ByteSize::bytes)
        .map_err(|e| e.to_string())
}

#[derive(clap::Args, Debug)]
pub struct ScoreArgs {
    /// Model package directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Print `{"tokens": [{"id", "text", "logprob"}, ...]}` instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub gate: GateArgs,
    /// A plugin for the request by name (repeatable; a gate routes it), as the daemon's
    /// `Score` takes it. Not with `--gate`.
    #[arg(long, value_name = "NAME", conflicts_with = "gate")]
    pub plugin: Vec<String>,
    #[command(flatten)]
    pub service: ServiceArgs,
    /// The text to score (tokenized as is, BOS added as the package says).
    pub text: String,
}

#[derive(Serialize)]
struct TokenScore {
    id: u32,
    text: String,
    /// Under the gate plugin when `--gate` is given.
    logprob: Option<f64>,
    /// With `--gate`: under the model's own routing, same run.
    #[serde(skip_serializing_if = "Option::is_none")]
    native_logprob: Option<f64>,
}

/// With `--gate`: the plugin, its parameters and the drift from native routing.
#[derive(Serialize)]
struct GateSummary {
    plugin: String,
    params: Vec<(String, String)>,
    mean_abs_logprob_drift: f64,
    max_abs_logprob_drift: f64,
    native_mean_logprob: f64,
    gate_mean_logprob: f64,
}

#[derive(Serialize)]
struct ScoreOutput {
    tokens: Vec<TokenScore>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gate: Option<GateSummary>,
}

pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    if args.gate.gate.is_none() {
        return run_service(args);
    }
    // Against native routing in the same run: a measurement of a plugin file on the engine
    // itself, not a request to the service.
    let engine = Engine::load(&args.model, args.engine.options(ExecMode::Sparse)?)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let Some((g, params)) = args.gate.load(&engine)? else {
        anyhow::bail!("--gate names no plugin");
    };
    let pkg = engine.package();
    let tokenizer = TextTokenizer::from_file(
        &pkg.tokenizer_path(),
        pkg.special_tokens().bos.as_ref().map(|t| t.id),
        pkg.add_bos_token(),
    )?;
    let ids = tokenizer.encode_raw_prompt(&args.text)?;
    if ids.is_empty() {
        anyhow::bail!("the text has no tokens");
    }
    let native = score_tokens(&engine, &ids)?;
    let gated = score_tokens_with(&engine, &ids, Some(g.clone() as Arc<dyn Gate>))?;
    if g.fallbacks() > 0 {
        anyhow::bail!(
            "gate plugin '{}' failed on {} layer call(s) (routed natively instead): {}",
            g.plugin().name(),
            g.fallbacks(),
            g.last_failure().unwrap_or_default()
        );
    }
    let pairs: Vec<(f64, f64)> = gated
        .iter()
        .zip(&native)
        .filter_map(|(a, b)| Some(((*a)?, (*b)?)))
        .collect();
    let n = pairs.len().max(1) as f64;
    let summary = GateSummary {
        plugin: g.plugin().name().to_owned(),
        params: params.clone(),
        mean_abs_logprob_drift: pairs.iter().map(|(a, b)| (a - b).abs()).sum::<f64>() / n,
        max_abs_logprob_drift: pairs.iter().map(|(a, b)| (a - b).abs()).fold(0.0, f64::max),
        native_mean_logprob: pairs.iter().map(|p| p.1).sum::<f64>() / n,
        gate_mean_logprob: pairs.iter().map(|p| p.0).sum::<f64>() / n,
    };
    let tokens = ids
        .iter()
        .zip(gated)
        .zip(&native)
        .map(|((&id, logprob), native)| {
            Ok(TokenScore {
                id,
                text: tokenizer.decode(&[id])?,
                logprob,
                native_logprob: *native,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    print(&args, tokens, Some(summary))
}

/// Without `--gate`: the text scored as the daemon's `Score` does it, through the service
/// (its plugins by name with `--plugin`, its configuration with `--config`).
fn run_service(args: ScoreArgs) -> anyhow::Result<()> {
    let base = args.engine.options(ExecMode::Sparse)?;
    let overrides = EngineOverrides {
        providers: base.providers.clone(),
        expert_memory_budget: base.expert_memory_budget,
        ort_library: base.ort_library.clone(),
        base,
    };
    let params = ScoreParams {
        model: None,
        plugins: args.plugin.clone(),
        plugin_params: Vec::new(),
    };
    let scored = local::runtime()?.block_on(async {
        let local = LocalService::open(&args.service, overrides)?;
        local.load(&args.model).await?;
        let client = local::client("score");
        anyhow::Ok(
            local
                .service
                .score(&client, args.text.clone(), params)
                .await?,
        )
    })?;
    let tokens = scored
        .into_iter()
        .map(|t| TokenScore {
            id: t.id,
            text: t.text,
            logprob: t.logprob,
            native_logprob: None,
        })
        .collect();
    print(&args, tokens, None)
}

/// The table, or with `--json` the object.
fn print(
    args: &ScoreArgs,
    tokens: Vec<TokenScore>,
    summary: Option<GateSummary>,
) -> anyhow::Result<()> {
    let gated = summary.is_some();
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&ScoreOutput {
                tokens,
                gate: summary
            })?
        );
        return Ok(());
    }
    let lp = |l: Option<f64>| l.map_or_else(|| "-".to_string(), |l| format!("{l:.4}"));
    if gated {
        println!(
            "{:>5}  {:>7}  {:>10}  {:>10}  {:>8}  token",
            "pos", "id", "gate", "native", "|d|"
        );
    } else {
        println!("{:>5}  {:>7}  {:>10}  token", "pos", "id", "logprob");
    }
    for (i, t) in tokens.iter().enumerate() {
        if gated {
            let d = match (t.logprob, t.native_logprob) {
                (Some(a), Some(b)) => format!("{:.4}", (a - b).abs()),
                _ => "-".into(),
            };
            println!(
                "{i:>5}  {:>7}  {:>10}  {:>10}  {d:>8}  {:?}",
                t.id,
                lp(t.logprob),
                lp(t.native_logprob),
                t.text
            );
        } else {
            println!("{i:>5}  {:>7}  {:>10}  {:?}", t.id, lp(t.logprob), t.text);
        }
    }
    let scored: Vec<f64> = tokens.iter().filter_map(|t| t.logprob).collect();
    if !scored.is_empty() {
        let sum: f64 = scored.iter().sum();
        let mean = sum / scored.len() as f64;
        println!(
            "{} tokens scored{}: total logprob {sum:.4}, mean {mean:.4}, perplexity {:.3}",
            scored.len(),
            if gated { " under the gate" } else { "" },
            (-mean).exp()
        );
    }
    if let Some(s) = &summary {
        println!(
            "native routing: mean logprob {:.4}, perplexity {:.3}; drift of gate '{}' against native: mean |dlogp| {:.4}, max {:.4}",
            s.native_mean_logprob,
            (-s.native_mean_logprob).exp(),
            s.plugin,
            s.mean_abs_logprob_drift,
            s.max_abs_logprob_drift
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_sizes_parse() {
        assert_eq!(parse_bytes("123"), Ok(123));
        // The configuration file's meaning: K, M, G are powers of 1000, KiB, MiB, GiB of 1024.
        assert_eq!(parse_bytes("64K"), Ok(64_000));
        assert_eq!(parse_bytes("2G"), Ok(2_000_000_000));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert!(parse_bytes("1.5g").is_err());
        assert!(parse_bytes("12Q").is_err());
        assert!(parse_bytes("lots").is_err());
    }
}
