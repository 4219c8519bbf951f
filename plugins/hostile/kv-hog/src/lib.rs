//! Test fixture: counts the prompts it sees in its key-value store (the count survives instances,
//! reloads and restarts) and, for the prompt `fill`, writes 1 KiB values until the host's quota
//! stops it. Answers with a report in place of the prompt.

use moed_plugin_sdk::filter::{Guest, InputVerdict, OutputStep, OutputVerdict};
use moed_plugin_sdk::kv;

fn count() -> Result<u64, String> {
    let n = match kv::get("count").map_err(|e| format!("{e:?}"))? {
        Some(v) => String::from_utf8_lossy(&v)
            .parse::<u64>()
            .map_err(|e| e.to_string())?,
        None => 0,
    } + 1;
    kv::set("count", n.to_string().as_bytes()).map_err(|e| format!("{e:?}"))?;
    Ok(n)
}

struct KvHog;

impl Guest for KvHog {
    fn filter_input(prompt: String, _: Vec<(String, String)>) -> Result<InputVerdict, String> {
        let n = count()?;
        let mut report = format!("count={n}");
        if prompt == "fill" {
            let mut i = 0;
            let err = loop {
                if let Err(e) = kv::set(&format!("blob{i}"), &[7u8; 1024]) {
                    break e;
                }
                i += 1;
            };
            report.push_str(&format!(
                " stored={i} then {err:?} keys={}",
                kv::keys("blob").map_err(|e| format!("{e:?}"))?.len()
            ));
        }
        Ok(InputVerdict::Redact(report))
    }

    fn filter_output(
        pending: String,
        _: bool,
        _: Vec<(String, String)>,
    ) -> Result<OutputVerdict, String> {
        Ok(OutputVerdict::Pass(OutputStep {
            emit: pending,
            hold: 0,
        }))
    }
}

moed_plugin_sdk::export_filter!(KvHog);
