//! `sql-retrieval`: documents for the query from several data sources by label — company
//! databases (PostgreSQL, SQLite) behind the administrator's query templates, or the embedded
//! store — merged into one ranking. The host holds connections and credentials; this plugin only
//! names labels. A source that fails (not granted, down, too slow) becomes an alert and the other
//! sources still answer.
//!
//! Ranking: scores of different sources are on different scales (ts_rank, FTS5 bm25, BM25), so
//! each document's score becomes its share of its source's best score (by position, 1/rank, when
//! a source's scores are not positive), and documents are ranked by that share. Ids are prefixed
//! with the label (`company:42`), so the answer can say where each passage came from.

use moed_plugin_sdk::retrieval::{Document, Guest, SourceError, labels, search};
use moed_plugin_sdk::{alerts, config, param_json};

#[derive(serde::Deserialize)]
struct Config {
    sources: Vec<String>,
    limit_per_source: u32,
    max_chars: usize,
}

/// The request parameter the host sets from the request option `sources`.
const REQUEST_SOURCES: &str = "retrieval.sources";

/// Documents of several sources ranked by their share of their own source's best score; each
/// keeps its score as that share, so the merged list's scores agree with its order.
fn merge(found: Vec<(String, Vec<Document>)>, limit: usize) -> Vec<Document> {
    moed_shared::merge::merge(found, limit, |d| d.score)
        .into_iter()
        .map(|(share, label, mut d)| {
            d.id = format!("{label}:{}", d.id);
            d.score = share;
            d
        })
        .collect()
}

fn alert_for(label: &str, e: SourceError) {
    match e {
        SourceError::AccessDenied(m) => alerts::warning(
            "retrieval.access_denied",
            &format!("data source '{label}' was skipped: {m}"),
        ),
        SourceError::Unavailable(m) => alerts::warning(
            "retrieval.source_unavailable",
            &format!("data source '{label}' was skipped: {m}"),
        ),
        SourceError::NotFound(m) | SourceError::InvalidQuery(m) => alerts::warning(
            "retrieval.source_error",
            &format!("data source '{label}' was skipped: {m}"),
        ),
    }
}

struct SqlRetrieval;

impl Guest for SqlRetrieval {
    fn retrieve(
        query: String,
        limit: u32,
        params: Vec<(String, String)>,
    ) -> Result<Vec<Document>, String> {
        let c: Config = config::get()?;
        let chosen = match param_json::<Vec<String>>(&params, REQUEST_SOURCES)? {
            Some(wanted) => wanted,
            None if c.sources.is_empty() => labels(),
            None => c.sources,
        };
        let per_source = c.limit_per_source.min(limit);
        let mut found = Vec::new();
        for label in chosen {
            match search(&label, &query, per_source) {
                Ok(docs) => found.push((label, docs)),
                Err(e) => alert_for(&label, e),
            }
        }
        Ok(merge(found, limit as usize)
            .into_iter()
            .map(|mut d| {
                if let Some((cut, _)) = d.text.char_indices().nth(c.max_chars) {
                    d.text.truncate(cut);
                }
                d
            })
            .collect())
    }
}

moed_plugin_sdk::export_retrieval!(SqlRetrieval);

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: &str, score: f32) -> Document {
        Document {
            id: id.into(),
            source: id.into(),
            text: String::new(),
            score,
        }
    }

    #[test]
    fn sources_are_ranked_by_share_of_their_best() {
        let found = vec![
            ("company".to_string(), vec![d("7", 0.5), d("9", 0.1)]),
            ("wiki".to_string(), vec![d("a", -1.0), d("b", -2.0)]),
            ("documents".to_string(), vec![d("x", 9.0), d("y", 6.0)]),
        ];
        let got: Vec<(String, f32)> = merge(found, 5)
            .into_iter()
            .map(|d| (d.id, d.score))
            .collect();
        let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
        // Shares: company 1, 0.2; wiki by position 1, 0.5; documents 1, 2/3.
        assert_eq!(
            ids,
            [
                "company:7",
                "documents:x",
                "wiki:a",
                "documents:y",
                "wiki:b"
            ]
        );
        assert!(got.windows(2).all(|w| w[0].1 >= w[1].1));
    }
}
