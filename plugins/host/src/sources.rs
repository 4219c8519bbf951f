//! Data sources by label: the daemon registers each source it holds (the embedded document store,
//! later databases) under a label; retrieval plugins name a label, never a connection. Also a
//! small in-memory BM25 store for tests and one-shot commands.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use serde::Serialize;

/// A retrieved document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Document {
    pub id: String,
    /// Where it came from, for the answer's list of sources.
    pub source: String,
    pub text: String,
    pub score: f32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    InvalidQuery(String),
}

/// One searchable source.
pub trait DataSource: Send + Sync {
    /// At most `limit` documents matching `query`, best first.
    fn search(&self, query: &str, limit: usize) -> Result<Vec<Document>, SourceError>;

    /// Starts searching `query` now, so that a later `search` of it (at most `limit` documents)
    /// takes the result: the host starts every source of a retrieval call this way, so that the
    /// sources run concurrently and a slow one costs only itself. The search is forgotten when
    /// the returned guard is dropped. Sources that answer at once need not implement it.
    fn start(&self, _query: &str, _limit: usize) -> Option<Box<dyn std::any::Any + Send>> {
        None
    }
}

/// The sources the daemon holds, by label.
#[derive(Default)]
pub struct Sources {
    map: RwLock<BTreeMap<String, Arc<dyn DataSource>>>,
}

impl Sources {
    pub fn register(&self, label: &str, source: Arc<dyn DataSource>) {
        if let Ok(mut m) = self.map.write() {
            m.insert(label.to_owned(), source);
        }
    }

    pub fn remove(&self, label: &str) {
        if let Ok(mut m) = self.map.write() {
            m.remove(label);
        }
    }

    pub fn get(&self, label: &str) -> Option<Arc<dyn DataSource>> {
        self.map.read().ok()?.get(label).cloned()
    }

    pub fn labels(&self) -> Vec<String> {
        self.map
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// Documents in memory, ranked with BM25 (k1 = 1.2, b = 0.75) over lowercased alphanumeric words.
#[derive(Default)]
pub struct MemoryDocuments {
    docs: Vec<(Document, HashMap<String, u32>, usize)>,
    df: HashMap<String, u32>,
    total_len: usize,
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

impl MemoryDocuments {
    pub fn add(&mut self, id: &str, source: &str, text: &str) {
        let mut tf: HashMap<String, u32> = HashMap::new();
        let mut len = 0;
        for w in words(text) {
            *tf.entry(w).or_default() += 1;
            len += 1;
        }
        for w in tf.keys() {
            *self.df.entry(w.clone()).or_default() += 1;
        }
        self.total_len += len;
        let doc = Document {
            id: id.to_owned(),
            source: source.to_owned(),
            text: text.to_owned(),
            score: 0.0,
        };
        self.docs.push((doc, tf, len));
    }
}

impl DataSource for MemoryDocuments {
    fn search(&self, query: &str, limit: usize) -> Result<Vec<Document>, SourceError> {
        let terms: Vec<String> = words(query).collect();
        if terms.is_empty() {
            return Err(SourceError::InvalidQuery("the query has no words".into()));
        }
        let n = self.docs.len() as f32;
        let avg = (self.total_len as f32 / n.max(1.0)).max(1.0);
        let mut scored: Vec<(f32, usize)> = self
            .docs
            .iter()
            .enumerate()
            .filter_map(|(i, (_, tf, len))| {
                let score: f32 = terms
                    .iter()
                    .filter_map(|t| {
                        let f = *tf.get(t)? as f32;
                        let df = *self.df.get(t)? as f32;
                        let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                        Some(idf * f * 2.2 / (f + 1.2 * (0.25 + 0.75 * *len as f32 / avg)))
                    })
                    .sum();
                (score > 0.0).then_some((score, i))
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        Ok(scored
            .into_iter()
            .take(limit)
            .map(|(score, i)| Document {
                score,
                ..self.docs[i].0.clone()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bm25_ranks_the_matching_document_first() {
        let mut d = MemoryDocuments::default();
        d.add(
            "1",
            "handbook.md",
            "Vacation days: every employee has 25 vacation days per year.",
        );
        d.add("2", "it.md", "Reset your password at the IT portal.");
        d.add("3", "office.md", "The office opens at 8 and closes at 18.");
        let r = d.search("how many vacation days", 2).expect("search");
        assert_eq!(r[0].id, "1");
        assert_eq!(r.len(), 1);
        assert!(d.search("!!!", 2).is_err());
    }
}
