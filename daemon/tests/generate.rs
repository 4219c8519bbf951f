//! `moed generate` on the fixture packages: greedy continuations equal transformers' (golden.json),
//! streamed text, chat template tokenization, stop strings, seeds, cancellation and clear errors.
//!
//! The packages are made from models/fixtures by the exporter (see `missing_package_hint`); a missing
//! package fails the test rather than skipping it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use moed::engine::{Engine, EngineOptions};
use moed::generate::{Event, FinishReason, GenerateRequest, Prompt, SamplingOverrides, generate};
use moed::text::model::TextModel;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixtures_dir() -> PathBuf {
    root().join("models/fixtures")
}

/// Every fixture architecture (a folder of models/fixtures with a golden.json).
fn archs() -> Vec<String> {
    let entries = std::fs::read_dir(fixtures_dir()).expect("models/fixtures is readable");
    let mut archs: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("golden.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    archs.sort();
    assert!(
        !archs.is_empty(),
        "no fixtures with golden.json under {}",
        fixtures_dir().display()
    );
    archs
}

fn package(arch: &str) -> PathBuf {
    let dir = std::env::var_os("MOE_FIXTURE_PACKAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/fixture-packages"));
    let pkg = dir.join(arch);
    assert!(
        pkg.join("manifest.json").is_file(),
        "the fixture package {} is missing; make it with:\n  \
         PYTHONPATH=models/export python3 -m moe_export models/fixtures/{arch} target/fixture-packages/{arch}\n\
         (run from the repository root; MOE_FIXTURE_PACKAGES points elsewhere)",
        pkg.display()
    );
    pkg
}

fn golden(arch: &str) -> Value {
    let path = fixtures_dir().join(arch).join("golden.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an id list: {v}"))
        .iter()
        .filter_map(Value::as_u64)
        .collect()
}

/// Ids of the tokens marked special in the package's tokenizer.json.
fn special_ids(pkg: &Path) -> HashSet<u64> {
    let text = std::fs::read_to_string(pkg.join("tokenizer.json")).expect("tokenizer.json");
    let tok: Value = serde_json::from_str(&text).expect("tokenizer.json parses");
    tok["added_tokens"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|t| t["special"] == Value::Bool(true))
                .filter_map(|t| t["id"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

fn moed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moed"))
        .args(args)
        .output()
        .expect("moed runs")
}

/// Runs `moed generate --json` and returns its object, failing with moed's stderr.
fn generate_json(pkg: &Path, args: &[&str], prompt: &str) -> Value {
    let pkg = pkg.to_string_lossy();
    let mut all = vec!["generate", "--model", &pkg, "--json"];
    all.extend_from_slice(args);
    all.push(prompt);
    let out = moed(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "moed {all:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("moed printed no JSON ({e}): {stderr}"))
}

#[test]
fn greedy_continuations_match_transformers() {
    for arch in archs() {
        let pkg = package(&arch);
        let specials = special_ids(&pkg);
        let golden = golden(&arch);
        let cases = golden["cases"].as_array().expect("cases");
        assert!(!cases.is_empty(), "{arch}: golden.json has no cases");
        for case in cases {
            let text = case["text"].as_str().expect("case text");
            let want = ids(&case["greedy"]["ids"]);
            let n = want.len().to_string();
            let out = generate_json(
                &pkg,
                &[
                    "--raw",
                    "--temperature",
                    "0",
                    "--max-tokens",
                    &n,
                    "--ignore-eos",
                ],
                text,
            );
            assert_eq!(
                ids(&out["prompt_token_ids"]),
                ids(&case["ids"]),
                "{arch}: prompt ids of {text:?}"
            );
            assert_eq!(
                ids(&out["token_ids"]),
                want,
                "{arch}: greedy continuation of {text:?}"
            );
            assert_eq!(out["stats"]["finish_reason"], "max_tokens", "{arch}");
            assert_eq!(
                out["stats"]["generated_tokens"].as_u64(),
                Some(want.len() as u64),
                "{arch}"
            );
            if text.ends_with("<think>") {
                // The prompt opened the thinking section: what follows is thinking, not answer,
                // unless the model closed it.
                let closes = thinking_end_id(&pkg).is_some_and(|end| want.contains(&end));
                if !closes {
                    assert_eq!(out["text"], "", "{arch}: {out}");
                }
            } else if !want.iter().any(|id| specials.contains(id)) {
                // Streamed text, assembled from UTF-8-safe deltas, equals decoding all ids at once.
                assert_eq!(
                    out["text"], case["greedy"]["text"],
                    "{arch}: text of {text:?}"
                );
                assert!(out.get("thinking").is_none(), "{arch}: {out}");
            }
        }
    }
}

fn thinking_end_id(pkg: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(pkg.join("tokenizer.json")).ok()?;
    let tok: Value = serde_json::from_str(&text).ok()?;
    tok["added_tokens"]
        .as_array()?
        .iter()
        .find(|t| t["content"] == "</think>")
        .and_then(|t| t["id"].as_u64())
}

#[test]
fn chat_prompt_is_tokenized_like_transformers() {
    for arch in archs() {
        let pkg = package(&arch);
        let golden = golden(&arch);
        // The golden chat case is `<|user|>\n{question}<|end_of_text|>\n<|assistant|>\n<think>`,
        // tokenized with BOS: the chat template's rendering of the question, plus `<think>`.
        let Some(case) = golden["cases"].as_array().and_then(|c| {
            c.iter().find(|c| {
                c["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("<|user|>\n"))
            })
        }) else {
            panic!("{arch}: golden.json has no chat-formatted case");
        };
        let text = case["text"].as_str().unwrap_or_default();
        let question = text
            .strip_prefix("<|user|>\n")
            .and_then(|t| t.split("<|end_of_text|>").next())
            .expect("chat case layout");
        let mut want = ids(&case["ids"]);
        assert!(
            text.ends_with("<think>"),
            "{arch}: chat case layout changed: {text:?}"
        );
        want.pop();
        let out = generate_json(&pkg, &["--temperature", "0", "--max-tokens", "2"], question);
        assert_eq!(
            ids(&out["prompt_token_ids"]),
            want,
            "{arch}: chat prompt of {question:?}"
        );
    }
}

#[test]
fn streamed_output_equals_the_json_text() {
    let pkg = package("deepseek_v3");
    let prompt = "The river ran slowly past the old mill, and";
    let args = [
        "--raw",
        "--temperature",
        "0",
        "--max-tokens",
        "12",
        "--ignore-eos",
    ];
    let json = generate_json(&pkg, &args, prompt);
    let pkg_s = pkg.to_string_lossy();
    let mut all = vec!["generate", "--model", &pkg_s];
    all.extend_from_slice(&args);
    all.push(prompt);
    let out = moed(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n", json["text"].as_str().expect("text"))
    );
    assert!(
        stderr.contains("12 generated, finished by max_tokens"),
        "{stderr}"
    );
    assert!(stderr.contains("tok/s"), "{stderr}");
}

#[test]
fn stop_string_ends_generation_before_it() {
    let pkg = package("deepseek_v3");
    let prompt = "The river ran slowly past the old mill, and";
    let base = [
        "--raw",
        "--temperature",
        "0",
        "--max-tokens",
        "12",
        "--ignore-eos",
    ];
    let full = generate_json(&pkg, &base, prompt);
    let text = full["text"].as_str().expect("text").to_string();
    // A stop string taken from the middle of the greedy text: a few characters after the start.
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 8, "greedy text too short to cut: {text:?}");
    let stop: String = chars[4..7].iter().collect();
    let before = &text[..text.find(&stop).expect("stop occurs")];
    let mut args = base.to_vec();
    args.extend(["--stop", &stop]);
    let out = generate_json(&pkg, &args, prompt);
    assert_eq!(out["text"], before, "stop {stop:?} in {text:?}");
    assert_eq!(out["stats"]["finish_reason"], "stop");
    assert_eq!(out["stats"]["stop"], stop.as_str());
    let got = ids(&out["token_ids"]);
    assert!(
        got.len() < 12 && ids(&full["token_ids"]).starts_with(&got),
        "{out}"
    );
}

#[test]
fn sampling_with_a_seed_is_reproducible() {
    let pkg = package("mixtral");
    let args = [
        "--raw",
        "--temperature",
        "1.0",
        "--top-p",
        "0.9",
        "--seed",
        "42",
        "--max-tokens",
        "10",
        "--ignore-eos",
    ];
    let a = generate_json(&pkg, &args, "Machines that read text");
    let b = generate_json(&pkg, &args, "Machines that read text");
    assert_eq!(a["token_ids"], b["token_ids"]);
    assert_eq!(a["stats"]["seed"], 42);
    assert_eq!(ids(&a["token_ids"]).len(), 10);
}

#[test]
fn prompt_over_the_context_length_is_a_clear_error() {
    let pkg = package("deepseek_v3");
    let prompt = "river mill ".repeat(300);
    let pkg_s = pkg.to_string_lossy();
    let out = moed(&["generate", "--model", &pkg_s, "--raw", &prompt]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("context length is 256 tokens") && stderr.contains("the prompt is"),
        "{stderr}"
    );
}

#[test]
fn generation_stops_at_the_context_length() {
    let pkg = package("deepseek_v3");
    let prompt = "river mill ".repeat(60);
    let probe = generate_json(
        &pkg,
        &["--raw", "--temperature", "0", "--max-tokens", "1"],
        &prompt,
    );
    let prompt_tokens = probe["stats"]["prompt_tokens"]
        .as_u64()
        .expect("prompt_tokens");
    assert!(
        prompt_tokens < 250,
        "prompt too long for this test: {prompt_tokens}"
    );
    // No --max-tokens and EOS banned: only the context (256) ends generation.
    let out = generate_json(
        &pkg,
        &["--raw", "--temperature", "0", "--ignore-eos"],
        &prompt,
    );
    assert_eq!(out["stats"]["finish_reason"], "length", "{}", out["stats"]);
    assert_eq!(ids(&out["token_ids"]).len() as u64, 256 - prompt_tokens);
}

#[test]
fn bad_sampling_parameters_are_clear_errors() {
    let pkg = package("deepseek_v3");
    let pkg_s = pkg.to_string_lossy();
    for (flag, name) in [
        ("--top-p=0", "top_p"),
        ("--temperature=-1", "temperature"),
        ("--min-p=2", "min_p"),
    ] {
        let out = moed(&["generate", "--model", &pkg_s, "--raw", flag, "hello"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} accepted");
        assert!(stderr.contains(name), "{stderr}");
    }
}

#[test]
fn cancellation_stops_at_the_next_token() {
    let pkg = package("deepseek_v3");
    let engine = Engine::load(&pkg, EngineOptions::default()).expect("engine loads");
    let text = TextModel::load(engine.package()).expect("text model loads");
    let mut req = GenerateRequest::new(Prompt::Raw(
        "The river ran slowly past the old mill, and".into(),
    ));
    req.sampling = SamplingOverrides {
        temperature: Some(0.0),
        ..SamplingOverrides::default()
    };
    req.max_tokens = Some(12);
    req.ignore_eos = true;
    let never = AtomicBool::new(false);
    let full = generate(&engine, &text, &req, &never, &mut |_| {}).expect("generates");

    let cancel = AtomicBool::new(false);
    let mut events = Vec::new();
    let cut = generate(&engine, &text, &req, &cancel, &mut |e| {
        if matches!(e, Event::Text(_)) {
            cancel.store(true, Ordering::Relaxed);
        }
        events.push(e);
    })
    .expect("generates");
    assert_eq!(cut.stats.finish_reason, FinishReason::Cancelled);
    assert!(
        cut.token_ids.len() < full.token_ids.len(),
        "{:?}",
        cut.token_ids
    );
    assert!(full.token_ids.starts_with(&cut.token_ids));
    assert_eq!(
        events.last(),
        Some(&Event::Finished(FinishReason::Cancelled))
    );
    // A new sequence per request: the cancelled run left nothing behind.
    let again = generate(&engine, &text, &req, &never, &mut |_| {}).expect("generates");
    assert_eq!(again.token_ids, full.token_ids);
}
