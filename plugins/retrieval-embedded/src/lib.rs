//! `retrieval-embedded`: documents for the query from a data source by label (the embedded
//! document store by default), best first, weak matches left out, long texts cut.

use moed_plugin_sdk::retrieval::{Document, Guest, SourceError, search};
use moed_plugin_sdk::{config, param_json};

#[derive(serde::Deserialize)]
struct Config {
    source: String,
    min_score: f32,
    max_chars: usize,
}

struct Embedded;

impl Guest for Embedded {
    fn retrieve(
        query: String,
        limit: u32,
        params: Vec<(String, String)>,
    ) -> Result<Vec<Document>, String> {
        let c: Config = config::get()?;
        let label = param_json::<String>(&params, "retrieval.source")?.unwrap_or(c.source);
        let docs = search(&label, &query, limit).map_err(|e| match e {
            SourceError::AccessDenied(m) => format!("access denied: {m}"),
            SourceError::NotFound(m) => format!("not found: {m}"),
            SourceError::Unavailable(m) => format!("source unavailable: {m}"),
            SourceError::InvalidQuery(m) => format!("invalid query: {m}"),
        })?;
        Ok(docs
            .into_iter()
            .filter(|d| d.score >= c.min_score)
            .map(|mut d| {
                if let Some((cut, _)) = d.text.char_indices().nth(c.max_chars) {
                    d.text.truncate(cut);
                }
                d
            })
            .collect())
    }
}

moed_plugin_sdk::export_retrieval!(Embedded);
