//! `retrieval-embedded`: documents for the query from data sources by label (the embedded
//! document store by default), best first, weak matches left out, long texts cut. A request's
//! `retrieval.sources` parameter (a JSON list of labels) restricts the search to those labels
//! this plugin was granted; `retrieval.source` (one label) picks another granted label.

use moed_plugin_sdk::retrieval::{Document, Guest, SourceError, labels, search};
use moed_plugin_sdk::{config, param_json};

#[derive(serde::Deserialize)]
struct Config {
    source: String,
    min_score: f32,
    max_chars: usize,
}

fn search_one(label: &str, query: &str, limit: u32) -> Result<Vec<Document>, String> {
    search(label, query, limit).map_err(|e| match e {
        SourceError::AccessDenied(m) => format!("access denied: {m}"),
        SourceError::NotFound(m) => format!("not found: {m}"),
        SourceError::Unavailable(m) => format!("source '{label}' unavailable: {m}"),
        SourceError::InvalidQuery(m) => format!("invalid query: {m}"),
    })
}

struct Embedded;

impl Guest for Embedded {
    fn retrieve(
        query: String,
        limit: u32,
        params: Vec<(String, String)>,
    ) -> Result<Vec<Document>, String> {
        let c: Config = config::get()?;
        let chosen = match param_json::<Vec<String>>(&params, "retrieval.sources")? {
            // Only the requested labels this plugin may search; none of them: no documents.
            Some(wanted) => {
                let granted = labels();
                wanted.into_iter().filter(|l| granted.contains(l)).collect()
            }
            None => vec![param_json::<String>(&params, "retrieval.source")?.unwrap_or(c.source)],
        };
        let mut docs = Vec::new();
        for label in &chosen {
            docs.extend(search_one(label, &query, limit)?);
        }
        docs.sort_by(|a, b| b.score.total_cmp(&a.score));
        docs.truncate(limit as usize);
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
