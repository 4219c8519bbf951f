//! `input-check`: finds likely mistakes in a prompt and raises an alert for each (or rejects the
//! request, for the codes configured so): empty or blank, over-long, control or invisible
//! characters, unbalanced brackets or quotes, an unclosed code fence, a paste repeated twice, a
//! template placeholder left in, broken text encoding. The answer side passes text through.

pub mod checks;

use moed_plugin_sdk::filter::{Guest, InputVerdict, OutputStep, OutputVerdict};
use moed_plugin_sdk::{alerts, config};

#[derive(serde::Deserialize)]
struct Config {
    max_chars: usize,
    min_repeat: usize,
    reject: Vec<String>,
}

struct InputCheck;

impl Guest for InputCheck {
    fn filter_input(
        prompt: String,
        _params: Vec<(String, String)>,
    ) -> Result<InputVerdict, String> {
        let c: Config = config::get()?;
        let findings = checks::check(&prompt, c.max_chars, c.min_repeat);
        let mut rejected = Vec::new();
        for f in &findings {
            alerts::warning(f.code, &f.message);
            if c.reject.iter().any(|r| r == f.code) {
                rejected.push(f.message.clone());
            }
        }
        if rejected.is_empty() {
            Ok(InputVerdict::Allow)
        } else {
            Ok(InputVerdict::Reject(rejected.join("; ")))
        }
    }

    fn filter_output(
        pending: String,
        _last: bool,
        _params: Vec<(String, String)>,
    ) -> Result<OutputVerdict, String> {
        Ok(OutputVerdict::Pass(OutputStep {
            emit: pending,
            hold: 0,
        }))
    }
}

moed_plugin_sdk::export_filter!(InputCheck);
