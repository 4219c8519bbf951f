//! Hostile fixture: a retrieval plugin that misbehaves as `mode` says.

use moed_plugin_sdk::config;
use moed_plugin_sdk::retrieval::{Document, Guest, search};

#[derive(serde::Deserialize)]
struct Config {
    mode: String,
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
        _: Vec<(String, String)>,
    ) -> Result<Vec<Document>, String> {
        let c: Config = config::get()?;
        match c.mode.as_str() {
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
            "denied" => search("payroll", &query, limit).map_err(|e| format!("{e:?}")),
            other => Err(format!("unknown mode {other}")),
        }
    }
}

moed_plugin_sdk::export_retrieval!(Misbehave);
