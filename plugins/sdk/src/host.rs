//! Wrappers over the host imports every world has: log, configuration, key-value store, alerts,
//! and the per-request parameters.

use serde::de::DeserializeOwned;

use crate::bindings::moed::plugin as wit;

/// Lines for the daemon's log.
pub mod log {
    use super::wit::log::{Level, write};

    pub fn trace(message: &str) {
        write(Level::Trace, message);
    }
    pub fn debug(message: &str) {
        write(Level::Debug, message);
    }
    pub fn info(message: &str) {
        write(Level::Info, message);
    }
    pub fn warn(message: &str) {
        write(Level::Warn, message);
    }
    pub fn error(message: &str) {
        write(Level::Error, message);
    }
}

/// The plugin's read-only configuration.
pub mod config {
    use super::{DeserializeOwned, wit};

    /// The configuration as JSON text.
    pub fn json() -> String {
        wit::config::get_json()
    }

    /// The configuration deserialized into `T` (the host has already checked it against the
    /// manifest's schema and filled in defaults).
    pub fn get<T: DeserializeOwned>() -> Result<T, String> {
        let text = json();
        serde_json::from_str(&text).map_err(|e| format!("configuration: {e}"))
    }
}

/// Alerts about the request being handled (they reach the client and the audit log).
pub mod alerts {
    pub use super::wit::alerts::Severity;
    use super::wit::alerts::raise;

    pub fn info(code: &str, message: &str) {
        raise(Severity::Info, code, message);
    }
    pub fn warning(code: &str, message: &str) {
        raise(Severity::Warning, code, message);
    }
    pub fn error(code: &str, message: &str) {
        raise(Severity::Error, code, message);
    }
}

/// The per-plugin key-value store (needs the `kv` grant; importing it without one is refused at
/// load).
pub mod kv {
    pub use super::wit::kv::{KvError, delete, get, keys, set};
}

/// The value of per-request parameter `key`, as the client sent it (JSON text).
pub fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Per-request parameter `key` deserialized from its JSON text; `Ok(None)` when absent. The
/// error names the key (`parameter 'KEY': ...`): a gate returning it makes moed fail the request
/// as the client's mistake instead of routing natively (CONTRACT.md, "A gate plugin").
pub fn param_json<T: DeserializeOwned>(
    params: &[(String, String)],
    key: &str,
) -> Result<Option<T>, String> {
    match param(params, key) {
        None => Ok(None),
        Some(text) => serde_json::from_str(text)
            .map(Some)
            .map_err(|e| format!("parameter '{key}': {e}")),
    }
}
