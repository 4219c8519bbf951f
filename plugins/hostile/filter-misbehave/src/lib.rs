//! Hostile fixture: a filter that misbehaves as `mode` says, on both the prompt and the answer.

use moed_plugin_sdk::config;
use moed_plugin_sdk::filter::{Guest, InputVerdict, OutputStep, OutputVerdict};

#[derive(serde::Deserialize)]
struct Config {
    mode: String,
}

fn mode() -> Result<String, String> {
    Ok(config::get::<Config>()?.mode)
}

fn misbehave(mode: &str, text: &str) -> Result<(String, u32), String> {
    match mode {
        "oversized" => Ok(("x".repeat(10 << 20), 0)),
        "hold-all" => Ok((String::new(), text.len() as u32 + 1)),
        "split-char" => {
            // Hold back the last byte of a multi-byte character if there is one.
            Ok((String::new(), 1))
        }
        "trap" => panic!("filter-misbehave: deliberate panic"),
        "loop" => {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        other => Err(format!("unknown mode {other}")),
    }
}

struct Misbehave;

impl Guest for Misbehave {
    fn filter_input(prompt: String, _: Vec<(String, String)>) -> Result<InputVerdict, String> {
        let (text, _) = misbehave(&mode()?, &prompt)?;
        Ok(InputVerdict::Redact(text))
    }

    fn filter_output(
        pending: String,
        _: bool,
        _: Vec<(String, String)>,
    ) -> Result<OutputVerdict, String> {
        let (emit, hold) = misbehave(&mode()?, &pending)?;
        Ok(OutputVerdict::Pass(OutputStep { emit, hold }))
    }
}

moed_plugin_sdk::export_filter!(Misbehave);
