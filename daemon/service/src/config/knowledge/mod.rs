//! `[knowledge]`: the data sources retrieval plugins search, by label (PostgreSQL, SQLite, the
//! embedded document store), their per-call limits and where database credentials live. The
//! configuration names credentials by reference only; the secrets file itself is read by
//! `crate::knowledge` when the sources start, never here (so `check-config` cannot print it).
//! The file layout and the checks of every key are in validate.rs.

mod readonly;
mod validate;

pub use validate::check_label;
pub(in crate::config) use validate::{RawKnowledge, validate};

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

/// Where database credentials are read from unless `knowledge.secrets_file` says otherwise.
pub const DEFAULT_SECRETS_FILE: &str = "/etc/moed/secrets.toml";
/// The embedded store configured when `[knowledge.sources]` is absent.
pub const DEFAULT_EMBEDDED_LABEL: &str = "documents";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KnowledgeConfig {
    /// `knowledge.secrets_file`: credentials of database sources (TOML, one table per name,
    /// key `connection`); readable by the daemon's user only.
    pub secrets_file: PathBuf,
    /// `knowledge.max_document_bytes`: largest document `AddDocuments` takes.
    pub max_document_bytes: u64,
    /// `knowledge.sources.LABEL`: the sources by label.
    pub sources: BTreeMap<String, SourceConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceConfig {
    pub spec: SourceSpec,
    pub limits: SourceLimits,
}

/// Per-call limits of one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SourceLimits {
    /// `timeout_ms`: statement timeout (databases only; the embedded store has none).
    pub timeout_ms: Option<u64>,
    /// `max_rows`: most documents one call returns.
    pub max_rows: u32,
    /// `max_bytes`: most bytes (id + source + text) one call returns.
    pub max_bytes: u64,
}

/// What the user's query becomes before it is bound as `$1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryTransform {
    /// `as_is`: the text as typed.
    AsIs,
    /// `any_word`: its words, each quoted, joined with OR (`"a" OR "b"` for SQLite FTS5 MATCH,
    /// `"a" or "b"` for PostgreSQL's websearch_to_tsquery): a question matches rows with any
    /// of its words instead of all of them, and FTS5 syntax in the text has no effect.
    AnyWord,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceSpec {
    Embedded {
        /// `chunk_words`: words per chunk.
        chunk_words: u32,
        /// `chunk_overlap`: words each chunk repeats from the one before.
        chunk_overlap: u32,
    },
    Postgres {
        /// `credentials`: the table in the secrets file with its `connection` string.
        credentials: String,
        template: String,
        query: QueryTransform,
        max_connections: u32,
    },
    Sqlite {
        /// `path`: the database file, opened read-only.
        path: PathBuf,
        template: String,
        query: QueryTransform,
        max_connections: u32,
    },
}

impl SourceSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Embedded { .. } => "embedded",
            SourceSpec::Postgres { .. } => "postgres",
            SourceSpec::Sqlite { .. } => "sqlite",
        }
    }
}

impl QueryTransform {
    pub fn as_str(self) -> &'static str {
        match self {
            QueryTransform::AsIs => "as_is",
            QueryTransform::AnyWord => "any_word",
        }
    }
}

/// `[knowledge]` as TOML for `moed check-config`: credentials by name, never the secrets.
pub(in crate::config) fn render(k: &KnowledgeConfig, out: &mut String) {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    out.push_str("\n[knowledge]\n");
    out.push_str(&format!(
        "secrets_file = {}\n",
        q(&k.secrets_file.display().to_string())
    ));
    out.push_str(&format!("max_document_bytes = {}\n", k.max_document_bytes));
    for (label, source) in &k.sources {
        out.push_str(&format!("\n[knowledge.sources.{label}]\n"));
        out.push_str(&format!("kind = {}\n", q(source.spec.kind())));
        match &source.spec {
            SourceSpec::Embedded {
                chunk_words,
                chunk_overlap,
            } => {
                out.push_str(&format!("chunk_words = {chunk_words}\n"));
                out.push_str(&format!("chunk_overlap = {chunk_overlap}\n"));
            }
            SourceSpec::Postgres {
                credentials,
                template,
                query,
                max_connections,
            } => {
                out.push_str(&format!("credentials = {}\n", q(credentials)));
                out.push_str(&format!("template = {}\n", q(template)));
                out.push_str(&format!("query = {}\n", q(query.as_str())));
                out.push_str(&format!("max_connections = {max_connections}\n"));
            }
            SourceSpec::Sqlite {
                path,
                template,
                query,
                max_connections,
            } => {
                out.push_str(&format!("path = {}\n", q(&path.display().to_string())));
                out.push_str(&format!("template = {}\n", q(template)));
                out.push_str(&format!("query = {}\n", q(query.as_str())));
                out.push_str(&format!("max_connections = {max_connections}\n"));
            }
        }
        if let Some(t) = source.limits.timeout_ms {
            out.push_str(&format!("timeout_ms = {t}\n"));
        }
        out.push_str(&format!("max_rows = {}\n", source.limits.max_rows));
        out.push_str(&format!("max_bytes = {}\n", source.limits.max_bytes));
    }
}

#[cfg(test)]
mod tests;
