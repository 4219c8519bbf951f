//! Latency per call of each plugin kind: the gate next to the native rule on the same input, the
//! filters on a realistic prompt and on streamed tokens, retrieval over 500 documents.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use moed_plugins::{FilterPlugin, MemoryDocuments, PluginHost, RetrievalPlugin};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{BenchError, Latency, PluginBenchConfig};
use crate::bench::measure::{median, percentile};
use crate::engine::{Gate, RouterInput, Routing};
use crate::plugins::{WasmGate, load_path};

/// Times each of `calls` calls of `f`, in microseconds.
fn time_calls(calls: usize, mut f: impl FnMut() -> Result<(), String>) -> Result<Vec<f64>, String> {
    let mut t = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed().as_secs_f64() * 1e6);
    }
    Ok(t)
}

pub(super) fn gate_latency(
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
        let n = time(native.as_ref()).map_err(|message| BenchError::Call {
            plugin: "native".into(),
            message,
        })?;
        let before = wasm.fallbacks();
        let w = time(wasm.as_ref()).map_err(|message| BenchError::Call {
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
            median_us: median(&w),
            p99_us: percentile(&w, 0.99),
            native_median_us: Some(median(&n)),
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

pub(super) fn other_latency(
    host: &PluginHost,
    dir: &Path,
    cfg: &PluginBenchConfig,
) -> Result<Vec<Latency>, BenchError> {
    let mut rows = Vec::new();
    let row = |what: &str, plugin: &str, t: Vec<f64>| Latency {
        what: what.into(),
        plugin: plugin.into(),
        median_us: median(&t),
        p99_us: percentile(&t, 0.99),
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
