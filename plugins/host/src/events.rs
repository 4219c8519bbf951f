//! Where alerts and plugin failures go besides the caller: the daemon forwards them to the audit
//! log and emits the `PluginFailed` D-Bus signal; the default writes them to the log.

use moed_wire::limits;
use serde::Serialize;

use crate::bounds;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// An alert raised by a plugin (or by the host about a plugin) during one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub plugin: String,
    pub severity: Severity,
    pub code: String,
    pub message: String,
}

impl Alert {
    /// An alert with its code one short line and its message bounded (`moed_wire` limits),
    /// whatever the plugin passed: the daemon forwards both to clients and the audit log.
    pub fn new(plugin: &str, severity: Severity, code: &str, message: &str) -> Alert {
        Alert {
            plugin: plugin.to_owned(),
            severity,
            code: bounds::line(code, limits::ALERT_CODE),
            message: bounds::text(message.to_owned(), limits::ALERT_MESSAGE),
        }
    }
}

/// A failed call: what happened, and whether the plugin is now disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub plugin: String,
    pub kind: String,
    pub message: String,
    pub consecutive: u32,
    pub disabled: bool,
}

pub trait HostEvents: Send + Sync {
    /// Every alert, also those returned to the caller (for the audit log).
    fn alert(&self, alert: &Alert);
    /// Every failed call.
    fn failure(&self, failure: &Failure);
}

/// Writes events to the log.
pub struct LogEvents;

impl HostEvents for LogEvents {
    fn alert(&self, a: &Alert) {
        log::info!(target: "moed_plugins", "plugin {}: alert {} [{}]: {}", a.plugin, a.code, a.severity.as_str(), bounds::line(&a.message, limits::ALERT_MESSAGE));
    }

    fn failure(&self, f: &Failure) {
        if f.disabled {
            log::error!(
                target: "moed_plugins",
                "plugin {} ({}) disabled after {} consecutive failures; last: {}",
                f.plugin, f.kind, f.consecutive, f.message
            );
        } else {
            log::warn!(target: "moed_plugins", "plugin {} ({}) failed: {}", f.plugin, f.kind, f.message);
        }
    }
}
