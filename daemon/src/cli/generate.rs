//! `moed generate`: runs one prompt through a model package, streaming the text (llama-cli style),
//! through the same service pipeline as the daemon: filter plugins, retrieval, gate, engine.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use moed_service::runner::{PromptInput, StreamEvent};
use moed_service::service::{Finished, GenerateParams};
use moed_wire::terminal;

use super::local::{self, EngineOverrides, LocalService, ServiceArgs};
use crate::engine::{EngineOptions, Provider};
use crate::generate::SamplingOverrides;

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Model package directory.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// The prompt; `-` reads it from standard input.
    #[arg(value_name = "PROMPT")]
    pub prompt: String,
    /// Give the prompt to the model as it stands, without the chat template.
    #[arg(long)]
    pub raw: bool,
    /// System message put before the prompt in the chat template (not with --raw).
    #[arg(long, value_name = "TEXT", conflicts_with = "raw")]
    pub system: Option<String>,
    /// Sampling temperature; 0 is greedy. Default: the package's, else greedy.
    #[arg(long, value_name = "T")]
    pub temperature: Option<f32>,
    /// Nucleus sampling threshold in (0, 1]. Default: the package's, else 1 (off).
    #[arg(long, value_name = "P")]
    pub top_p: Option<f32>,
    /// Sample among the K most likely tokens; 0 is off. Default: the package's, else off.
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// Drop tokens less likely than P times the most likely one. Default: the package's, else 0.
    #[arg(long, value_name = "P")]
    pub min_p: Option<f32>,
    /// Penalty (> 0, 1 is off) on tokens already in the prompt or output. Default: the package's, else 1.
    #[arg(long, value_name = "R")]
    pub repetition_penalty: Option<f32>,
    /// Random seed for sampling. Default: random (printed in the stats).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Most tokens to generate. Default: the package's max_new_tokens, else until EOS or the context is full.
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<usize>,
    /// Stop before this text (repeatable).
    #[arg(long, value_name = "S")]
    pub stop: Vec<String>,
    /// Never choose an end-of-sequence token (as llama.cpp's --ignore-eos): run to --max-tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print one JSON object (text, thinking, token_ids, stats) at the end instead of streaming.
    #[arg(long)]
    pub json: bool,
    /// Execution providers in order of preference (tensorrt, cuda, cpu), comma-separated.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "cpu"
    )]
    pub provider: Vec<String>,
    /// Upper bound in bytes on resident expert weights (least recently used experts are evicted);
    /// suffixes as in moed.toml (K, M, G: powers of 1000; KiB, MiB, GiB: of 1024).
    #[arg(long, value_name = "BYTES", value_parser = super::score::parse_bytes)]
    pub expert_memory_budget: Option<u64>,
    /// ONNX Runtime intra-op threads (one pool shared by every graph).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// A plugin for this request, by name (repeatable): a gate routes it, filters run after
    /// those of the configuration, retrieval plugins replace the configured ones. Installed in
    /// the state directory or named in the configuration.
    #[arg(long, value_name = "NAME")]
    pub plugin: Vec<String>,
    #[command(flatten)]
    pub service: ServiceArgs,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let prompt = if args.prompt == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the prompt from standard input")?;
        s
    } else {
        args.prompt.clone()
    };
    let providers = args
        .provider
        .iter()
        .map(|p| p.parse::<Provider>())
        .collect::<Result<Vec<_>, _>>()
        .context("--provider")?;
    let overrides = EngineOverrides {
        providers,
        expert_memory_budget: args.expert_memory_budget,
        ort_library: None,
        base: EngineOptions {
            intra_threads: args.threads,
            ..EngineOptions::default()
        },
    };
    let params = GenerateParams {
        input: PromptInput::Text(prompt),
        raw: args.raw,
        system: args.system.clone(),
        sampling: SamplingOverrides {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repetition_penalty: args.repetition_penalty,
        },
        max_tokens: args.max_tokens,
        stop: args.stop.clone(),
        seed: args.seed,
        ignore_eos: args.ignore_eos,
        model: None,
        plugins: args.plugin.clone(),
        plugin_params: Vec::new(),
        retrieval: true,
        sources: Vec::new(),
        constraint: None,
        tools: None,
        tool_choice: None,
    };
    // Nothing cancels a command-line run but the user's Ctrl-C, which ends the process.
    local::runtime()?.block_on(async {
        let local = LocalService::open(&args.service, overrides)?;
        local.load(&args.model).await?;
        let provider = local
            .service
            .registry
            .for_request(None)
            .map(|m| m.engine.execution_provider().to_string())
            .unwrap_or_default();
        let client = local::client("generate");
        if args.json {
            let finished = local.service.generate(&client, params, |_| {}).await?;
            let json = json_report(&finished, &provider);
            println!(
                "{}",
                serde_json::to_string(&json).context("cannot serialize the result")?
            );
            return Ok(());
        }
        let printer = Arc::new(Mutex::new(StreamPrinter::default()));
        let sink_printer = printer.clone();
        let sink = move |event: StreamEvent| {
            sink_printer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .print(event)
        };
        let finished = local.service.generate(&client, params, sink).await?;
        let mut printer = printer.lock().unwrap_or_else(|p| p.into_inner());
        printer.end();
        if let Some(err) = printer.error.take() {
            return Err(err).context("cannot write the generated text");
        }
        let outcome = &finished.generation.outcome;
        let s = &outcome.stats;
        eprintln!(
            "\n[{} prompt tokens, {} generated, finished by {}{}; time to first token {:.3} s; \
             prefill {:.1} tok/s; decode {:.1} tok/s; seed {}; provider {provider}]",
            s.prompt_tokens,
            s.generated_tokens,
            s.finish_reason.as_str(),
            outcome
                .stop
                .as_deref()
                .map(|st| format!(" {st:?}"))
                .unwrap_or_default(),
            s.time_to_first_token_s,
            s.prefill_tokens_per_s,
            s.decode_tokens_per_s,
            s.seed,
        );
        Ok(())
    })
}

/// The `--json` object: text, thinking (when there was any), generated ids, prompt ids and
/// stats; the plugins' alerts and retrieved sources when there were any.
fn json_report(finished: &Finished, provider: &str) -> serde_json::Value {
    let outcome = &finished.generation.outcome;
    let mut stats = serde_json::to_value(&outcome.stats).unwrap_or(serde_json::Value::Null);
    if let Some(map) = stats.as_object_mut() {
        map.insert("execution_provider".into(), provider.into());
        if let Some(stop) = &outcome.stop {
            map.insert("stop".into(), stop.as_str().into());
        }
    }
    let mut obj = serde_json::json!({
        "text": outcome.text,
        "token_ids": outcome.token_ids,
        "prompt_token_ids": outcome.prompt_token_ids,
        "stats": stats,
    });
    if !outcome.thinking.is_empty()
        && let Some(map) = obj.as_object_mut()
    {
        map.insert("thinking".into(), outcome.thinking.as_str().into());
    }
    if let Some(map) = obj.as_object_mut() {
        if !finished.alerts.is_empty() {
            let alerts = finished.alerts.iter().map(|a| {
                serde_json::json!({
                    "severity": a.severity.as_str(),
                    "code": a.code,
                    "message": a.message,
                    "plugin": a.plugin,
                })
            });
            map.insert("alerts".into(), alerts.collect());
        }
        if !finished.generation.sources.is_empty() {
            let sources = finished
                .generation
                .sources
                .iter()
                .map(|(source, id)| serde_json::json!({"source": source, "id": id}));
            map.insert("sources".into(), sources.collect());
        }
    }
    obj
}

/// Streams the answer to stdout and the thinking section to stderr, as they come.
#[derive(Default)]
struct StreamPrinter {
    in_thinking: bool,
    error: Option<std::io::Error>,
}

impl StreamPrinter {
    fn print(&mut self, event: StreamEvent) {
        if self.error.is_some() {
            return;
        }
        let result = match event {
            StreamEvent::Text {
                text,
                thinking: true,
            } => {
                let mut err = std::io::stderr().lock();
                let header = if self.in_thinking { "" } else { "[thinking]\n" };
                self.in_thinking = true;
                write!(err, "{header}{text}").and_then(|()| err.flush())
            }
            StreamEvent::Text { text, .. } => {
                if self.in_thinking {
                    self.in_thinking = false;
                    eprintln!("\n[/thinking]");
                }
                let mut out = std::io::stdout().lock();
                write!(out, "{text}").and_then(|()| out.flush())
            }
            // A plugin's words: shown terminal-safe, on stderr with the other notes.
            StreamEvent::Alert(alert) => writeln!(
                std::io::stderr().lock(),
                "[{} {} from {}: {}]",
                terminal(alert.severity.as_str()),
                terminal(&alert.code),
                terminal(&alert.plugin),
                terminal(&alert.message)
            ),
        };
        if let Err(e) = result {
            self.error = Some(e);
        }
    }

    /// Ends the answer's line.
    fn end(&mut self) {
        if self.error.is_some() {
            return;
        }
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out).and_then(|()| out.flush()) {
            self.error = Some(e);
        }
    }
}
