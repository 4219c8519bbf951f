//! The service's one error type: every failure the core reports to an adapter, by kind.
//!
//! Adapters map it to their wire once (the D-Bus one in `moed`'s `serve/error.rs`); the core
//! never names a transport's errors. Each kind corresponds to one error name clients see.

/// A failure of the service, classified so an adapter can map it without reading its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// An argument or option has the wrong type or value; the message names it.
    #[error("{0}")]
    InvalidArgument(String),
    /// A named model, plugin, source or request does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The model a request needs is not loaded (or none is).
    #[error("{0}")]
    ModelNotLoaded(String),
    /// A plugin failed while handling the request.
    #[error("{0}")]
    PluginFailed(String),
    /// No execution slot or queue place is free (or the caller holds its share); retry later.
    #[error("{0}")]
    Busy(String),
    /// The service is stopping and takes no new work.
    #[error("{0}")]
    ShuttingDown(String),
    /// The request was cancelled (by its client, or because the client left).
    #[error("{0}")]
    Cancelled(String),
    /// Anything else: the message says what failed.
    #[error("{0}")]
    Failed(String),
}
