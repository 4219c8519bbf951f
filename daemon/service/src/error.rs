//! The service's one error type: every failure the core reports to an adapter, by kind.
//!
//! Adapters map it to their wire once (the D-Bus one in `moed`'s `serve/error.rs`); the core
//! never names a transport's errors.

/// A failure of the service, classified so an adapter can map it without reading its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// No execution slot or queue place is free (or the caller holds its share); retry later.
    #[error("{0}")]
    Busy(String),
    /// The service is stopping and takes no new work.
    #[error("{0}")]
    ShuttingDown(String),
    /// The request was cancelled (by its client, or because the client left).
    #[error("{0}")]
    Cancelled(String),
}
