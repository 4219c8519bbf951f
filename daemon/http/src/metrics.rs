//! `/metrics`: moed's counters as OpenMetrics text, for Prometheus and the like: the service's
//! (`Engine.Metrics`), each loaded model's expert cache and activations (`Models.ExpertStats`)
//! and each plugin's calls (`Plugins.List`).

use std::fmt::Write;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use moed_dbus::plugins::PluginsProxy;
use moed_dbus::proxy::{EngineProxy, ModelsProxy};
use moed_dbus::{EngineMetrics, ExpertStatistics, MoedError, PluginInfo};

use crate::api::{App, admit};
use crate::error::ApiError;
use crate::listen::PeerAddr;

/// OpenMetrics 1.0's media type.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Most models whose expert statistics are read per scrape (moed holds few at once).
const MAX_MODELS: usize = 64;

/// Everything one scrape shows.
#[derive(Debug, Default)]
pub struct Scrape {
    pub engine: EngineMetrics,
    pub experts: Vec<ExpertStatistics>,
    pub plugins: Vec<PluginInfo>,
}

pub async fn metrics(
    State(app): State<App>,
    client: ConnectInfo<PeerAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admit(&app, &client, &headers)?;
    let engine = EngineProxy::new(&app.conn)
        .await
        .map_err(MoedError::from)?
        .metrics()
        .await?;
    let models = ModelsProxy::new(&app.conn).await.map_err(MoedError::from)?;
    let mut experts = Vec::new();
    for name in models
        .loaded_models()
        .await
        .map_err(MoedError::from)?
        .iter()
        .take(MAX_MODELS)
    {
        match models.expert_stats(name).await {
            Ok(stats) => experts.push(stats),
            // Unloaded between the two calls: nothing to show for it.
            Err(MoedError::ModelNotLoaded(_) | MoedError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let plugins = PluginsProxy::new(&app.conn)
        .await
        .map_err(MoedError::from)?
        .list()
        .await?;
    let scrape = Scrape {
        engine,
        experts,
        plugins,
    };
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&scrape)).into_response())
}

/// A number as OpenMetrics writes it (`+Inf` for the last bucket).
fn number(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else {
        format!("{v}")
    }
}

/// A label value as OpenMetrics quotes it: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

pub fn render(m: &Scrape) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_all(&mut out, m);
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) -> std::fmt::Result {
    writeln!(out, "# TYPE {name} {kind}")?;
    if name.ends_with("_seconds") {
        writeln!(out, "# UNIT {name} seconds")?;
    }
    writeln!(out, "# HELP {name} {help}")
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    buckets: &[(f64, u64)],
    sum: f64,
    count: u64,
) -> std::fmt::Result {
    family(out, name, "histogram", help)?;
    for (bound, n) in buckets {
        writeln!(out, "{name}_bucket{{le=\"{}\"}} {n}", number(*bound))?;
    }
    if buckets.last().is_none_or(|(b, _)| *b != f64::INFINITY) {
        writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}")?;
    }
    writeln!(out, "{name}_sum {}", number(sum))?;
    writeln!(out, "{name}_count {count}")
}

fn write_all(out: &mut String, s: &Scrape) -> std::fmt::Result {
    let m = &s.engine;
    family(
        out,
        "moed_requests",
        "counter",
        "Requests since moed started, by outcome.",
    )?;
    let mut outcomes: Vec<(&String, &u64)> = m.requests.iter().collect();
    outcomes.sort();
    for (outcome, n) in outcomes {
        writeln!(
            out,
            "moed_requests_total{{outcome=\"{}\"}} {n}",
            label(outcome)
        )?;
    }
    for (name, help, v) in [
        (
            "moed_prompt_tokens",
            "Prompt tokens of the requests that finished with an answer.",
            m.prompt_tokens,
        ),
        (
            "moed_completion_tokens",
            "Generated tokens of the requests that finished with an answer.",
            m.completion_tokens,
        ),
    ] {
        family(out, name, "counter", help)?;
        writeln!(out, "{name}_total {v}")?;
    }
    for (name, help, v) in [
        (
            "moed_active_requests",
            "Requests executing now.",
            m.active_requests,
        ),
        (
            "moed_queued_requests",
            "Requests waiting for an execution slot.",
            m.queued_requests,
        ),
    ] {
        family(out, name, "gauge", help)?;
        writeln!(out, "{name} {v}")?;
    }
    histogram(
        out,
        "moed_time_to_first_token_seconds",
        "From the start of execution to the first generated token.",
        &m.first_token_buckets,
        m.first_token_sum_seconds,
        m.first_token_count,
    )?;
    histogram(
        out,
        "moed_queue_wait_seconds",
        "How long requests waited for an execution slot.",
        &m.queue_wait_buckets,
        m.queue_wait_sum_seconds,
        m.queue_wait_count,
    )?;
    histogram(
        out,
        "moed_token_interval_seconds",
        "Time between each generated token and the next (per-token latency).",
        &m.token_interval_buckets,
        m.token_interval_sum_seconds,
        m.token_interval_count,
    )?;
    write_sources(out, m)?;
    write_experts(out, &s.experts)?;
    write_plugins(out, &s.plugins)?;
    writeln!(out, "# EOF")
}

/// A counter family: name, help, and each row's value.
type Counter<'a, T> = (&'a str, &'a str, fn(&T) -> f64);

/// Counter families over the same rows: each row's labels (already `label`-escaped and joined),
/// and per family its name, help and value.
fn counters<T>(
    out: &mut String,
    rows: &[T],
    labels: impl Fn(&T) -> String,
    families: &[Counter<'_, T>],
) -> std::fmt::Result {
    for (name, help, value) in families {
        family(out, name, "counter", help)?;
        for row in rows {
            writeln!(
                out,
                "{name}_total{{{}}} {}",
                labels(row),
                number(value(row))
            )?;
        }
    }
    Ok(())
}

type SourceRow = (String, u64, u64, f64);

fn write_sources(out: &mut String, m: &EngineMetrics) -> std::fmt::Result {
    counters(
        out,
        &m.source_searches,
        |s: &SourceRow| format!("source=\"{}\"", label(&s.0)),
        &[
            (
                "moed_source_searches",
                "Searches of each data source by retrieval plugins.",
                |s| s.1 as f64,
            ),
            (
                "moed_source_search_failures",
                "Searches of each data source that failed or came too late.",
                |s| s.2 as f64,
            ),
            (
                "moed_source_search_seconds",
                "Time retrieval plugins waited for each data source.",
                |s| s.3,
            ),
        ],
    )
}

fn write_experts(out: &mut String, experts: &[ExpertStatistics]) -> std::fmt::Result {
    counters(
        out,
        experts,
        |e: &ExpertStatistics| format!("model=\"{}\"", label(&e.model)),
        &[
            (
                "moed_expert_cache_hits",
                "Expert lookups answered from memory, per model.",
                |e| e.cache_hits as f64,
            ),
            (
                "moed_expert_cache_misses",
                "Expert lookups that loaded the expert, per model.",
                |e| e.cache_misses as f64,
            ),
            (
                "moed_expert_cache_evictions",
                "Experts dropped to stay within the expert memory budget, per model.",
                |e| e.cache_evictions as f64,
            ),
            (
                "moed_expert_load_bytes",
                "File bytes of the experts loaded on cache misses, per model.",
                |e| e.expert_load_bytes as f64,
            ),
            (
                "moed_expert_load_seconds",
                "Time spent creating the sessions of experts loaded on cache misses, per model.",
                |e| e.expert_load_nanos as f64 / 1e9,
            ),
            (
                "moed_storage_read_bytes",
                "Bytes read from storage (not the page cache) during the model's forward passes.",
                |e| e.storage_read_bytes as f64,
            ),
            (
                "moed_tokens",
                "Tokens the engine ran (prompt and generated), per model.",
                |e| e.tokens as f64,
            ),
            (
                "moed_prefetch_guessed_experts",
                "Experts predictive prefetch guessed for a layer before it ran, per model.",
                |e| e.prefetch_guessed as f64,
            ),
            (
                "moed_prefetch_guessed_right_experts",
                "Of the guessed experts, those the layer then chose, per model.",
                |e| e.prefetch_guessed_right as f64,
            ),
            (
                "moed_prefetch_chosen_experts",
                "Experts chosen by the layers that had a guess, per model.",
                |e| e.prefetch_chosen as f64,
            ),
        ],
    )?;
    family(
        out,
        "moed_expert_activations",
        "counter",
        "Tokens routed to each expert of each layer, per model (kept across restarts).",
    )?;
    for e in experts {
        let model = label(&e.model);
        for layer in &e.layers {
            for (expert, n) in layer.counts.iter().enumerate() {
                writeln!(
                    out,
                    "moed_expert_activations_total{{model=\"{model}\",layer=\"{}\",expert=\"{expert}\"}} {n}",
                    layer.layer
                )?;
            }
        }
    }
    Ok(())
}

fn write_plugins(out: &mut String, plugins: &[PluginInfo]) -> std::fmt::Result {
    counters(
        out,
        plugins,
        |p: &PluginInfo| format!("plugin=\"{}\",kind=\"{}\"", label(&p.name), label(&p.kind)),
        &[
            ("moed_plugin_calls", "Calls of each loaded plugin.", |p| {
                p.calls as f64
            }),
            (
                "moed_plugin_failures",
                "Failed calls of each loaded plugin (traps, timeouts, errors, invalid answers).",
                |p| p.failures as f64,
            ),
            (
                "moed_plugin_call_seconds",
                "Time spent in each loaded plugin's calls.",
                |p| p.mean_call_us * p.calls as f64 / 1e6,
            ),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_escapes_labels_and_ends_with_eof() {
        let engine = EngineMetrics {
            requests: [("stop".to_string(), 2)].into(),
            prompt_tokens: 10,
            completion_tokens: 4,
            first_token_buckets: vec![(0.5, 1), (f64::INFINITY, 2)],
            first_token_sum_seconds: 1.25,
            first_token_count: 2,
            queue_wait_buckets: vec![(0.001, 2), (f64::INFINITY, 2)],
            queue_wait_sum_seconds: 0.0005,
            queue_wait_count: 2,
            token_interval_buckets: vec![(0.05, 3), (f64::INFINITY, 3)],
            token_interval_sum_seconds: 0.09,
            token_interval_count: 3,
            source_searches: vec![("docs\"x\n".into(), 4, 1, 0.5)],
            active_requests: 1,
            queued_requests: 0,
        };
        let experts = vec![ExpertStatistics {
            model: "m".into(),
            layers: vec![moed_dbus::LayerActivations {
                layer: 1,
                counts: vec![5, 0],
            }],
            cache_hits: 7,
            cache_misses: 2,
            cache_evictions: 1,
            requests: 2,
            tokens: 30,
            expert_load_bytes: 4096,
            expert_load_nanos: 1_500_000_000,
            storage_read_bytes: 1024,
            prefetch_guessed: 40,
            prefetch_guessed_right: 30,
            prefetch_chosen: 36,
        }];
        let plugins = vec![PluginInfo {
            name: "pii-redact".into(),
            kind: "filter".into(),
            calls: 4,
            failures: 1,
            mean_call_us: 250.0,
            ..PluginInfo::default()
        }];
        let text = render(&Scrape {
            engine,
            experts,
            plugins,
        });
        for line in [
            "moed_requests_total{outcome=\"stop\"} 2\n",
            "moed_time_to_first_token_seconds_bucket{le=\"+Inf\"} 2\n",
            "moed_time_to_first_token_seconds_sum 1.25\n",
            "moed_queue_wait_seconds_count 2\n",
            "moed_token_interval_seconds_bucket{le=\"0.05\"} 3\n",
            "moed_source_searches_total{source=\"docs\\\"x\\n\"} 4\n",
            "moed_source_search_failures_total{source=\"docs\\\"x\\n\"} 1\n",
            "moed_expert_cache_hits_total{model=\"m\"} 7\n",
            "moed_expert_load_bytes_total{model=\"m\"} 4096\n",
            "moed_expert_load_seconds_total{model=\"m\"} 1.5\n",
            "moed_storage_read_bytes_total{model=\"m\"} 1024\n",
            "moed_tokens_total{model=\"m\"} 30\n",
            "moed_prefetch_guessed_experts_total{model=\"m\"} 40\n",
            "moed_prefetch_guessed_right_experts_total{model=\"m\"} 30\n",
            "moed_prefetch_chosen_experts_total{model=\"m\"} 36\n",
            "moed_expert_activations_total{model=\"m\",layer=\"1\",expert=\"0\"} 5\n",
            "moed_plugin_calls_total{plugin=\"pii-redact\",kind=\"filter\"} 4\n",
            "moed_plugin_call_seconds_total{plugin=\"pii-redact\",kind=\"filter\"} 0.001\n",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
