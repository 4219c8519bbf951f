//! Hostile fixture: a retrieval plugin that misbehaves as `mode` says (the request's parameter
//! `misbehave.mode` overrides the configuration).

use moed_plugin_sdk::retrieval::{Document, Guest, search};
use moed_plugin_sdk::{alerts, config, log, param_json};

#[derive(serde::Deserialize)]
struct Config {
    mode: String,
    size: usize,
}

/// A string with NUL bytes, a newline that would start a forged log line and a terminal escape,
/// `size` bytes long (roughly).
fn payload(size: usize) -> String {
    // One allocation: the plugin's memory limit must hold the string, not a doubled buffer.
    let mut s = String::with_capacity(size + 64);
    s.push_str("hostile\0payload\n[forged] log line\x1b[2J");
    // In 64 KiB copies: fast enough for a filter's time limit even at 40 MiB.
    let chunk = "x".repeat(64 << 10);
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        s.push_str(&chunk[..n]);
        left -= n;
    }
    s.push_str("\0end");
    s
}

fn doc(i: usize, text: String, score: f32) -> Document {
    Document {
        id: format!("d{i}"),
        source: "fixture".into(),
        text,
        score,
    }
}

struct Misbehave;

impl Guest for Misbehave {
    fn retrieve(
        query: String,
        limit: u32,
        params: Vec<(String, String)>,
    ) -> Result<Vec<Document>, String> {
        let c: Config = config::get()?;
        let mode = param_json::<String>(&params, "misbehave.mode")?.unwrap_or(c.mode);
        let size = param_json::<usize>(&params, "misbehave.size")?.unwrap_or(c.size);
        match mode.as_str() {
            "nan-score" => Ok(vec![doc(0, "text".into(), f32::NAN)]),
            "too-many" => Ok((0..limit as usize + 5)
                .map(|i| doc(i, "text".into(), 1.0))
                .collect()),
            "huge" => Ok(vec![doc(0, "y".repeat(4 << 20), 1.0)]),
            "loop" => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            // Every field of a document: within the host's total for documents when `size` is
            // under a third of it (so the fields themselves are clipped), over it otherwise.
            "doc-strings" => Ok(vec![Document {
                id: payload(size),
                source: payload(size),
                text: payload(size),
                score: 1.0,
            }]),
            "nan-huge-id" => Ok(vec![Document {
                id: payload(size),
                source: "fixture".into(),
                text: "text".into(),
                score: f32::NAN,
            }]),
            "error-huge" => Err(payload(size)),
            "stderr-huge" => {
                eprint!("{}", payload(size));
                panic!("retrieval-misbehave: deliberate panic after a huge stderr");
            }
            "alert-huge" => {
                alerts::error(&payload(size), &payload(size));
                log::warn(&payload(size));
                Ok(vec![doc(0, "text".into(), 1.0)])
            }
            "denied" => search("payroll", &query, limit).map_err(|e| format!("{e:?}")),
            other => Err(format!("unknown mode {other}")),
        }
    }
}

moed_plugin_sdk::export_retrieval!(Misbehave);
