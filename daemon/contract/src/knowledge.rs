//! `org.moed.Moed1.Knowledge`: the data sources (company databases, the embedded document store)
//! that retrieval plugins search, their option parsing, result types and client proxy.

use std::collections::HashMap;

use zbus::{DeserializeDict, OwnedFd, OwnedVariant, SerializeDict, Str, Type, proxy};

use crate::MoedError;
use crate::options::{OptionDict, string, uint, unknown_key, unwrap_variant};

/// Most documents one `AddDocuments` call takes (file descriptors per message stay well within
/// the bus's limits; `moectl` sends larger sets in batches).
pub const MAX_DOCUMENTS_PER_CALL: usize = 16;
/// Most hits `Search` returns.
pub const MAX_SEARCH_LIMIT: u32 = 64;
/// Hits `Search` returns when the caller gives no `limit`.
pub const DEFAULT_SEARCH_LIMIT: u32 = 5;

/// One hit of `Search` (`a{sv}`).
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "dict")]
pub struct SearchHit {
    /// The data source label it came from.
    pub label: String,
    /// The document's id within its source (a row key, `name#chunk` in the embedded store).
    pub id: String,
    /// Where it came from, for citing (a file name, a table row).
    pub source: String,
    pub text: String,
    /// The source's own relevance score, higher is better; comparable only within one source.
    pub score: f64,
}

/// One entry of `ListSources` (`a{sv}`).
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "dict")]
pub struct SourceInfo {
    pub label: String,
    /// `embedded`, `postgres` or `sqlite`.
    pub kind: String,
    /// `ready` or `unavailable` (then `message` says why).
    pub status: String,
    pub message: Option<String>,
    /// Embedded store: documents and chunks stored.
    pub documents: Option<u64>,
    pub chunks: Option<u64>,
    /// Per-call limits in force: statement timeout (databases), rows, bytes.
    pub timeout_ms: Option<u64>,
    pub max_rows: u32,
    pub max_bytes: u64,
}

/// One entry of `ListDocuments` (`a{sv}`).
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "dict")]
pub struct DocumentInfo {
    /// The embedded store's label.
    pub label: String,
    /// The name it was added under (the client's path).
    pub name: String,
    /// `text`, `markdown` or `html`.
    pub format: String,
    /// SHA-256 of the content as added, hex.
    pub sha256: String,
    pub bytes: u64,
    pub chunks: u32,
    /// When it was added or last replaced, seconds since the Unix epoch.
    pub added: u64,
}

/// What `AddDocuments` did (`a{sv}`).
#[derive(Debug, Clone, Default, PartialEq, SerializeDict, DeserializeDict, Type)]
#[zbus(signature = "dict")]
pub struct IngestSummary {
    /// The job id the `IngestProgress` signals of this call carried.
    pub job: String,
    /// The embedded store's label.
    pub label: String,
    /// New documents.
    pub added: u32,
    /// Documents whose content changed: their chunks were replaced.
    pub replaced: u32,
    /// Documents already stored with the same content.
    pub unchanged: u32,
    /// Chunks written by this call.
    pub chunks: u32,
    /// Documents that could not be added: `(name, why)`.
    pub failed: Vec<(String, String)>,
}

/// Options of `Search`: `source` (s), `limit` (integer, 1 to 64).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchOptions {
    /// Only this data source; all of them when absent.
    pub source: Option<String>,
    pub limit: Option<u32>,
}

impl SearchOptions {
    pub fn from_dict(dict: &OptionDict) -> Result<Self, MoedError> {
        let mut opts = SearchOptions::default();
        for (key, value) in dict {
            let value = unwrap_variant(value);
            match key.as_str() {
                "source" => opts.source = Some(label(key, string(key, value)?)?),
                "limit" => {
                    opts.limit = Some(uint(key, value, 1, MAX_SEARCH_LIMIT as u64)? as u32);
                }
                _ => return Err(unknown_key(key, &["source", "limit"])),
            }
        }
        Ok(opts)
    }

    pub fn to_dict(&self) -> OptionDict {
        let mut dict = OptionDict::new();
        if let Some(s) = &self.source {
            dict.insert("source".into(), Str::from(s.clone()).into());
        }
        if let Some(l) = self.limit {
            dict.insert("limit".into(), l.into());
        }
        dict
    }
}

/// Options of `AddDocuments`, `RemoveDocuments` and `ListDocuments`: `source` (s), the embedded
/// store's label (default: the only embedded store).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreOptions {
    pub source: Option<String>,
}

impl StoreOptions {
    pub fn from_dict(dict: &OptionDict) -> Result<Self, MoedError> {
        let mut opts = StoreOptions::default();
        for (key, value) in dict {
            let value = unwrap_variant(value);
            match key.as_str() {
                "source" => opts.source = Some(label(key, string(key, value)?)?),
                _ => return Err(unknown_key(key, &["source"])),
            }
        }
        Ok(opts)
    }

    pub fn to_dict(&self) -> OptionDict {
        let mut dict = OptionDict::new();
        if let Some(s) = &self.source {
            dict.insert("source".into(), Str::from(s.clone()).into());
        }
        dict
    }
}

fn label(key: &str, value: String) -> Result<String, MoedError> {
    if value.is_empty() {
        return Err(MoedError::InvalidArgument(format!(
            "option '{key}': a data source label must not be empty"
        )));
    }
    Ok(value)
}

/// `org.moed.Moed1.Knowledge` at `/org/moed/Moed1`.
#[proxy(
    interface = "org.moed.Moed1.Knowledge",
    default_service = "org.moed.Moed1",
    default_path = "/org/moed/Moed1"
)]
pub trait Knowledge {
    /// Adds documents to an embedded store: `(name, fd)` pairs, the name ending in `.txt`,
    /// `.md`, `.markdown`, `.html` or `.htm`. Emits `IngestProgress` to the caller.
    async fn add_documents(
        &self,
        documents: Vec<(String, OwnedFd)>,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<IngestSummary, MoedError>;

    /// Removes documents by name; returns the names that were stored.
    async fn remove_documents(
        &self,
        names: &[String],
        options: HashMap<String, OwnedVariant>,
    ) -> Result<Vec<String>, MoedError>;

    /// Searches one source (`source` option) or all; hits best first, and `(label, why)` for
    /// each source that failed.
    async fn search(
        &self,
        query: &str,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(Vec<SearchHit>, Vec<(String, String)>), MoedError>;

    async fn list_sources(&self) -> Result<Vec<SourceInfo>, MoedError>;

    async fn list_documents(
        &self,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<Vec<DocumentInfo>, MoedError>;

    #[zbus(signal)]
    fn ingest_progress(&self, job: String, done: u32, total: u32, name: String)
    -> zbus::Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_options_are_checked() {
        let mut d = OptionDict::new();
        d.insert("limit".into(), 3i32.into());
        d.insert("source".into(), Str::from("company").into());
        let o = SearchOptions::from_dict(&d).expect("valid");
        assert_eq!(o.limit, Some(3));
        assert_eq!(o.source.as_deref(), Some("company"));
        assert_eq!(
            SearchOptions::from_dict(&o.to_dict()).expect("round trip"),
            o
        );

        d.insert("limit".into(), 0u32.into());
        let e = SearchOptions::from_dict(&d).unwrap_err().to_string();
        assert!(e.contains("'limit'") && e.contains("1 to 64"), "{e}");
        let mut d = OptionDict::new();
        d.insert("sourec".into(), Str::from("x").into());
        let e = SearchOptions::from_dict(&d).unwrap_err().to_string();
        assert!(e.contains("'sourec'") && e.contains("source, limit"), "{e}");
    }
}
