//! Errors of loading a plugin and of one call into it.

use std::path::PathBuf;

use crate::capability::CapabilityError;
use crate::manifest::ManifestError;

/// Why a plugin could not be loaded (nothing of it runs).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("plugin '{plugin}': cannot read {}: {source}", path.display())]
    Read {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin '{plugin}': {} is not a valid WebAssembly component: {message}", path.display())]
    Compile {
        plugin: String,
        path: PathBuf,
        message: String,
    },
    #[error("plugin '{plugin}' is refused: {source}")]
    Capability {
        plugin: String,
        source: CapabilityError,
    },
    #[error("plugin '{plugin}' does not implement the interface its manifest declares: {message}")]
    Interface { plugin: String, message: String },
    #[error("plugin '{plugin}': configuration key '{key}': {message}")]
    Config {
        plugin: String,
        key: String,
        message: String,
    },
    #[error("plugin '{plugin}' failed to start: {message}")]
    Start { plugin: String, message: String },
    #[error("plugin host: {0}")]
    Host(String),
}

/// What went wrong in one call. The kind's failure policy decides what the caller sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallFailure {
    #[error("the plugin trapped: {0}")]
    Trap(String),
    #[error("the plugin ran past its time limit of {0:?}")]
    Timeout(std::time::Duration),
    #[error("the plugin exceeded its memory limit: {0}")]
    Memory(String),
    #[error("the plugin reported an error: {0}")]
    Plugin(String),
    /// The plugin's error names one of the request's parameters (`crate::named_param`): the
    /// caller's mistake, which does not count towards disabling the plugin.
    #[error("the plugin refused the request's parameter '{key}': {message}")]
    Param { key: String, message: String },
    #[error("the plugin's answer is invalid: {0}")]
    BadAnswer(String),
    #[error("the plugin could not be started: {0}")]
    Start(String),
    #[error("the plugin does not match the interface: {0}")]
    Interface(String),
    #[error("the plugin is disabled: {0}")]
    Disabled(String),
}

impl CallFailure {
    /// Whether the instance that failed may be used again (its state is intact).
    pub(crate) fn instance_reusable(&self) -> bool {
        matches!(
            self,
            CallFailure::Plugin(_) | CallFailure::BadAnswer(_) | CallFailure::Param { .. }
        )
    }

    /// Whether the caller is at fault (a parameter the plugin refused), not the plugin.
    pub fn is_callers(&self) -> bool {
        matches!(self, CallFailure::Param { .. })
    }
}
