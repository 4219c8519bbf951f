//! `/metrics`: moed's counters (`Engine.Metrics`) as OpenMetrics text, for Prometheus and the
//! like.

use std::fmt::Write;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use moed_dbus::EngineMetrics;
use moed_dbus::proxy::EngineProxy;

use crate::api::{App, admit};
use crate::error::ApiError;
use crate::listen::PeerAddr;

/// OpenMetrics 1.0's media type.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn metrics(
    State(app): State<App>,
    client: ConnectInfo<PeerAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admit(&app, &client, &headers)?;
    let m = EngineProxy::new(&app.conn)
        .await
        .map_err(moed_dbus::MoedError::from)?
        .metrics()
        .await?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&m)).into_response())
}

/// A number as OpenMetrics writes it (`+Inf` for the last bucket).
fn number(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else {
        format!("{v}")
    }
}

pub fn render(m: &EngineMetrics) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_all(&mut out, m);
    out
}

fn write_all(out: &mut String, m: &EngineMetrics) -> std::fmt::Result {
    writeln!(out, "# TYPE moed_requests counter")?;
    writeln!(
        out,
        "# HELP moed_requests Requests since moed started, by outcome."
    )?;
    let mut outcomes: Vec<(&String, &u64)> = m.requests.iter().collect();
    outcomes.sort();
    for (outcome, n) in outcomes {
        // Outcome names are moed's fixed words; anything else would not be a valid label value.
        if outcome.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            writeln!(out, "moed_requests_total{{outcome=\"{outcome}\"}} {n}")?;
        }
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
        writeln!(out, "# TYPE {name} counter")?;
        writeln!(out, "# HELP {name} {help}")?;
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
        writeln!(out, "# TYPE {name} gauge")?;
        writeln!(out, "# HELP {name} {help}")?;
        writeln!(out, "{name} {v}")?;
    }
    let h = "moed_time_to_first_token_seconds";
    writeln!(out, "# TYPE {h} histogram")?;
    writeln!(out, "# UNIT {h} seconds")?;
    writeln!(
        out,
        "# HELP {h} From the start of execution to the first generated token."
    )?;
    for (bound, n) in &m.first_token_buckets {
        writeln!(out, "{h}_bucket{{le=\"{}\"}} {n}", number(*bound))?;
    }
    if m.first_token_buckets
        .last()
        .is_none_or(|(b, _)| *b != f64::INFINITY)
    {
        writeln!(out, "{h}_bucket{{le=\"+Inf\"}} {}", m.first_token_count)?;
    }
    writeln!(out, "{h}_sum {}", number(m.first_token_sum_seconds))?;
    writeln!(out, "{h}_count {}", m.first_token_count)?;
    writeln!(out, "# EOF")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_and_ends_with_eof() {
        let m = EngineMetrics {
            requests: [("stop".to_string(), 2), ("bad label\"".to_string(), 1)].into(),
            prompt_tokens: 10,
            completion_tokens: 4,
            first_token_buckets: vec![(0.5, 1), (f64::INFINITY, 2)],
            first_token_sum_seconds: 1.25,
            first_token_count: 2,
            active_requests: 1,
            queued_requests: 0,
        };
        let text = render(&m);
        assert!(
            text.contains("moed_requests_total{outcome=\"stop\"} 2\n"),
            "{text}"
        );
        assert!(!text.contains("bad label"), "{text}");
        assert!(text.contains("moed_time_to_first_token_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("moed_time_to_first_token_seconds_sum 1.25\n"));
        assert!(text.ends_with("# EOF\n"));
    }
}
