//! Filter plugins in `moed serve` over a private bus: `pii-redact` redacts a prompt's e-mail
//! address and card number, `input-check` alerts on a repeated paste and rejects a blank prompt,
//! the alerts reach the client (signal and `info`), a plain request still works, and a plugin
//! that cannot be loaded stops the start with a message naming it.

mod common;
mod serve_util;

use std::time::Duration;

use common::plugins_dir;
use moed_dbus::client::{self, RequestEvent};
use moed_dbus::{GenerateOptions, MoedError};
use serve_util::*;

fn plugins_config(names: &[&str]) -> String {
    let dir = plugins_dir();
    let list: Vec<String> = names
        .iter()
        .map(|n| format!("\"{}\"", dir.join(format!("{n}.wasm")).display()))
        .collect();
    format!("\n[plugins]\nfilters = [{}]\n", list.join(", "))
}

fn greedy(max_tokens: u32) -> GenerateOptions {
    GenerateOptions {
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        seed: Some(7),
        ..GenerateOptions::default()
    }
}

type Alerts = Vec<(String, String, String, String)>;

fn codes(alerts: &Alerts) -> Vec<(&str, &str)> {
    alerts
        .iter()
        .map(|(_, code, _, source)| (code.as_str(), source.as_str()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_redact_alert_and_reject_over_dbus() {
    let bus = TestBus::start();
    let mut setup = DaemonSetup::new();
    setup.extra_config = plugins_config(&["input-check", "pii-redact"]);
    let _daemon = Daemon::start(&bus, &setup, "").await;
    let conn = bus.connect().await;
    let engine = engine(&conn).await;

    // A plain request: no alerts, an answer as before.
    let (text, info) = engine
        .complete("Hello there", greedy(6).to_dict())
        .await
        .expect("plain Complete");
    assert_eq!(info.alerts, None, "{info:?}");
    assert_eq!(info.text, text);
    assert!(info.completion_tokens > 0);

    // PII in the prompt: redacted before the model sees it, one alert per kind in the info.
    let (_, info) = engine
        .complete(
            "Write to jane.doe@example.com and charge card 4111 1111 1111 1111.",
            greedy(4).to_dict(),
        )
        .await
        .expect("Complete with PII");
    let alerts = info.alerts.expect("alerts in info");
    assert_eq!(
        codes(&alerts),
        [("pii.card", "pii-redact"), ("pii.email", "pii-redact")],
        "{alerts:?}"
    );
    // The model saw the redacted prompt: the same request with the markers written by hand
    // gives the same prompt length and the same (greedy) tokens.
    let (_, by_hand) = engine
        .complete(
            "Write to [REDACTED:email] and charge card [REDACTED:card].",
            greedy(4).to_dict(),
        )
        .await
        .expect("Complete with markers");
    assert_eq!(info.prompt_tokens, by_hand.prompt_tokens);
    assert_eq!(info.token_ids, by_hand.token_ids);

    // A repeated paste: input-check alerts, the streaming client gets the Alert signal.
    let para = "Please summarise the quarterly report for the board meeting tomorrow.";
    let mut stream = client::generate(&conn, &format!("{para}\n{para}"), &greedy(4))
        .await
        .expect("Generate");
    let mut signalled: Alerts = Vec::new();
    let finished = loop {
        match stream.next().await.expect("stream open").expect("event") {
            RequestEvent::Alert {
                severity,
                code,
                message,
                source,
            } => signalled.push((severity, code, message, source)),
            RequestEvent::Token { .. } => {}
            RequestEvent::Finished { reason, info } => break (reason, info),
        }
    };
    assert_eq!(
        codes(&signalled),
        [("input.repeated", "input-check")],
        "{signalled:?}"
    );
    assert!(!signalled[0].0.is_empty() && !signalled[0].2.is_empty());
    assert_ne!(finished.0, "error", "{:?}", finished.1);
    assert_eq!(finished.1.alerts, Some(signalled));

    // A blank prompt: input-check rejects it, the error names the plugin and its reason.
    let err = engine
        .complete("   ", greedy(4).to_dict())
        .await
        .expect_err("blank prompt rejected");
    let MoedError::InvalidArgument(message) = &err else {
        panic!("expected InvalidArgument, got {err:?}");
    };
    assert!(
        message.contains("input-check") && message.contains("blank"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_cannot_load_stops_the_start() {
    let bus = TestBus::start();
    let mut setup = DaemonSetup::new();
    let missing = plugins_dir().join("no-such-filter.wasm");
    setup.extra_config = format!("\n[plugins]\nfilters = [\"{}\"]\n", missing.display());
    setup.write_config("");
    let mut daemon = Daemon::spawn(&bus, &setup, &[]);
    let status = daemon.wait_exit(Duration::from_secs(60));
    assert!(!status.success());
    let log = daemon.log_lines().join("\n");
    assert!(
        log.contains("no-such-filter") && log.contains("plugin"),
        "{log}"
    );
}
