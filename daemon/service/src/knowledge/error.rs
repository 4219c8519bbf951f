//! Errors of the knowledge sources: configuration that cannot be used (the secrets file, a
//! source), the document store, and the caller's mistakes (an unknown label, a bad document).

use std::path::PathBuf;

use moed_plugins::SourceError;

use crate::ServiceError;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum KnowledgeError {
    #[error("secrets file {}: {message}", path.display())]
    Secrets { path: PathBuf, message: String },
    #[error("knowledge source '{label}': {message}")]
    Source { label: String, message: String },
    #[error("no data source '{0}'; `moectl knowledge sources` lists them")]
    UnknownSource(String),
    #[error("data source '{label}' is a {kind} source; documents are added to embedded stores")]
    NotEmbedded { label: String, kind: &'static str },
    #[error(
        "several embedded stores are configured ({0}); name one with the option `source` (moectl: --source)"
    )]
    WhichStore(String),
    #[error(
        "no embedded document store is configured ([knowledge.sources.LABEL] kind = \"embedded\")"
    )]
    NoStore,
    #[error("document '{name}': {message}")]
    Document { name: String, message: String },
    #[error("document store '{label}': {message}")]
    Corrupt { label: String, message: String },
    #[error(transparent)]
    State(#[from] StateError),
}

impl From<sled::Error> for KnowledgeError {
    fn from(e: sled::Error) -> Self {
        KnowledgeError::State(StateError::Store(e))
    }
}

/// The kind of failure each knowledge error is to a client.
impl From<KnowledgeError> for ServiceError {
    fn from(e: KnowledgeError) -> ServiceError {
        match e {
            KnowledgeError::UnknownSource(_) => ServiceError::NotFound(e.to_string()),
            KnowledgeError::NotEmbedded { .. }
            | KnowledgeError::WhichStore(_)
            | KnowledgeError::NoStore
            | KnowledgeError::Document { .. } => ServiceError::InvalidArgument(e.to_string()),
            _ => ServiceError::Failed(e.to_string()),
        }
    }
}

/// A data source's failure to a client, naming the source where it is unavailable.
pub fn source_error(label: &str, e: SourceError) -> ServiceError {
    match e {
        SourceError::NotFound(m) => ServiceError::NotFound(m),
        SourceError::InvalidQuery(m) => ServiceError::InvalidArgument(m),
        SourceError::Unavailable(m) => {
            ServiceError::Failed(format!("data source '{label}' is unavailable: {m}"))
        }
    }
}
