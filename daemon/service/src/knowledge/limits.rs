//! Per-call limits of a source (rows, bytes, statement timeout), the one place results are cut to
//! them, and the column mapping shared by the database sources (`id`, `source`, `text`, `score`).

use std::time::Duration;

use moed_plugins::Document;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
use moed_plugins::SourceError;

#[cfg(any(feature = "postgres", feature = "sqlite"))]
use crate::config::QueryTransform;
use crate::config::SourceLimits;

/// The result columns a template must name (with `AS` where the table's differ).
pub const COLUMNS: [&str; 4] = ["id", "source", "text", "score"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Option<Duration>,
    pub max_rows: usize,
    pub max_bytes: usize,
}

impl From<&SourceLimits> for Limits {
    fn from(l: &SourceLimits) -> Self {
        Limits {
            timeout: l.timeout_ms.map(Duration::from_millis),
            max_rows: l.max_rows as usize,
            max_bytes: l.max_bytes as usize,
        }
    }
}

impl Limits {
    /// Rows to fetch for a call asking for `limit`.
    pub fn rows(&self, limit: usize) -> usize {
        limit.min(self.max_rows)
    }

    /// The statement timeout in milliseconds (databases always have one).
    pub fn timeout_ms(&self) -> u64 {
        self.timeout
            .map_or(super::concurrent::max_timeout_ms(), |t| {
                t.as_millis() as u64
            })
    }

    /// Keeps documents, in order, while their bytes (id + source + text) fit in `max_bytes`; the
    /// document that crosses the limit keeps the part of its text that fits, the rest are dropped.
    pub fn cap(&self, docs: Vec<Document>) -> Vec<Document> {
        let mut used = 0usize;
        let mut out = Vec::with_capacity(docs.len().min(self.max_rows));
        for mut d in docs.into_iter().take(self.max_rows) {
            let size = d.id.len() + d.source.len() + d.text.len();
            if used + size <= self.max_bytes {
                used += size;
                out.push(d);
                continue;
            }
            let room = self.max_bytes - used;
            let head = d.id.len() + d.source.len();
            if room > head {
                let mut cut = room - head;
                while !d.text.is_char_boundary(cut) {
                    cut -= 1;
                }
                d.text.truncate(cut);
                out.push(d);
            }
            break;
        }
        out
    }
}

/// The user's query as bound to `$1`: as typed, or its words quoted and joined with OR
/// (`or_word` is `OR` for FTS5, `or` for PostgreSQL's websearch_to_tsquery).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub fn transform_query(
    transform: QueryTransform,
    query: &str,
    or_word: &str,
) -> Result<String, SourceError> {
    match transform {
        QueryTransform::AsIs => Ok(query.to_string()),
        QueryTransform::AnyWord => {
            let words: Vec<String> = query
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(|w| format!("\"{w}\""))
                .collect();
            if words.is_empty() {
                return Err(SourceError::InvalidQuery("the query has no words".into()));
            }
            Ok(words.join(&format!(" {or_word} ")))
        }
    }
}

/// Where each of [`COLUMNS`] is among a statement's result columns.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub fn column_positions(label: &str, names: &[String]) -> Result<[usize; 4], SourceError> {
    let mut pos = [0usize; 4];
    for (i, want) in COLUMNS.iter().enumerate() {
        pos[i] = names.iter().position(|n| n == want).ok_or_else(|| {
            SourceError::InvalidQuery(format!(
                "the template of data source '{label}' (knowledge.sources.{label}.template) returns \
                 no column '{want}' (it returns {}); name the columns id, source, text and score, \
                 with AS where needed",
                names.join(", ")
            ))
        })?;
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, text: &str) -> Document {
        Document {
            id: id.into(),
            source: "s".into(),
            text: text.into(),
            score: 1.0,
        }
    }

    #[test]
    fn rows_and_bytes_are_capped() {
        let l = Limits {
            timeout: None,
            max_rows: 3,
            max_bytes: 20,
        };
        let docs = vec![doc("1", "aaaaaaaa"), doc("2", "bbbbbbbbbb"), doc("3", "c")];
        let out = l.cap(docs);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].text, "aaaaaaaa");
        // 10 bytes used, 10 left: id and source take 2, so 8 bytes of text.
        assert_eq!(out[1].text, "bbbbbbbb");
        let total: usize = out
            .iter()
            .map(|d| d.id.len() + d.source.len() + d.text.len())
            .sum();
        assert!(total <= 20);
        let many: Vec<Document> = (0..10).map(|i| doc(&i.to_string(), "")).collect();
        assert_eq!(l.cap(many).len(), 3);
        // A cut never splits a character.
        let l = Limits { max_bytes: 5, ..l };
        assert_eq!(l.cap(vec![doc("1", "ééé")])[0].text, "é");
    }

    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    #[test]
    fn any_word_quotes_every_word() {
        let q = transform_query(QueryTransform::AnyWord, "refund? ') OR 1=1 --", "OR").expect("q");
        assert_eq!(q, "\"refund\" OR \"OR\" OR \"1\" OR \"1\"");
        assert!(transform_query(QueryTransform::AnyWord, "?!", "or").is_err());
        assert_eq!(
            transform_query(QueryTransform::AsIs, "a b", "or").expect("q"),
            "a b"
        );
    }
}
