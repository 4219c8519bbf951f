//! `moed generate` runs through the daemon's service pipeline: given the daemon's configuration,
//! its filter plugins redact the prompt (with their alerts in the JSON and on stderr) and reject
//! what they reject, as `moed serve` does; without it, nothing filters the prompt.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{package, plugins_dir};
use serde_json::Value;

const PII: &str = "Write to jane.doe@example.com and charge card 4111 1111 1111 1111.";
const BY_HAND: &str = "Write to [REDACTED:email] and charge card [REDACTED:card].";

/// A configuration whose `[plugins] filters` are the built test plugins `names`.
fn config_with_filters(dir: &Path, names: &[&str]) -> std::path::PathBuf {
    let plugins = plugins_dir();
    let list: Vec<String> = names
        .iter()
        .map(|n| format!("\"{}\"", plugins.join(format!("{n}.wasm")).display()))
        .collect();
    let path = dir.join("moed.toml");
    let text = format!("[plugins]\nfilters = [{}]\n", list.join(", "));
    std::fs::write(&path, text).expect("write moed.toml");
    path
}

fn moed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moed"))
        .args(args)
        .output()
        .expect("moed runs")
}

fn generate(extra: &[&str], prompt: &str) -> Output {
    let pkg = package("deepseek_v3");
    let pkg = pkg.to_string_lossy();
    let mut args = vec![
        "generate",
        "--model",
        &pkg,
        "--temperature",
        "0",
        "--max-tokens",
        "4",
    ];
    args.extend_from_slice(extra);
    args.push(prompt);
    moed(&args)
}

fn json(out: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "moed generate failed: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("moed printed no JSON ({e}): {stderr}"))
}

fn alert_codes(report: &Value) -> Vec<(String, String)> {
    report["alerts"]
        .as_array()
        .map(|alerts| {
            alerts
                .iter()
                .map(|a| {
                    let s = |k: &str| a[k].as_str().unwrap_or_default().to_string();
                    (s("code"), s("plugin"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_configured_filters_redact_the_prompt() {
    let work = tempfile::tempdir().expect("tempdir");
    let config = config_with_filters(work.path(), &["input-check", "pii-redact"]);
    let config = config.to_string_lossy();

    let filtered = json(&generate(&["--json", "--config", &config], PII));
    assert_eq!(
        alert_codes(&filtered),
        [
            ("pii.card".to_string(), "pii-redact".to_string()),
            ("pii.email".to_string(), "pii-redact".to_string())
        ],
        "{filtered}"
    );
    // The model saw the redacted prompt: the markers written by hand give the same prompt.
    let by_hand = json(&generate(&["--json"], BY_HAND));
    assert_eq!(filtered["prompt_token_ids"], by_hand["prompt_token_ids"]);
    assert_eq!(filtered["token_ids"], by_hand["token_ids"]);
    assert!(by_hand.get("alerts").is_none(), "{by_hand}");

    // Without the configuration nothing filters it.
    let plain = json(&generate(&["--json"], PII));
    assert_ne!(plain["prompt_token_ids"], by_hand["prompt_token_ids"]);
    assert!(plain.get("alerts").is_none(), "{plain}");

    // Streaming: the alerts are notes on stderr, the answer on stdout.
    let out = generate(&["--config", &config], PII);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("pii.email from pii-redact") && stderr.contains("pii.card from pii-redact"),
        "{stderr}"
    );
}

#[test]
fn a_filter_rejects_as_in_the_daemon() {
    let work = tempfile::tempdir().expect("tempdir");
    let config = config_with_filters(work.path(), &["input-check"]);
    let out = generate(&["--config", &config.to_string_lossy()], "   ");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a blank prompt was accepted: {stderr}"
    );
    assert!(
        stderr.contains("input-check") && stderr.contains("blank"),
        "{stderr}"
    );
}

#[test]
fn a_missing_configuration_is_a_clear_error() {
    let work = tempfile::tempdir().expect("tempdir");
    let missing = work.path().join("nope.toml");
    let out = generate(&["--config", &missing.to_string_lossy()], "hello");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("nope.toml") && stderr.contains("no such file"),
        "{stderr}"
    );
}
