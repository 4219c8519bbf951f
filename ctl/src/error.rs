//! Errors of `moectl` and the exit code each maps to, including the advice printed when moed is
//! not running or refuses the caller.

use moed_dbus::MoedError;
use zbus::DBusError;

/// Exit statuses, documented in `moectl --help` and ctl/README.md.
pub mod exit {
    pub const OK: u8 = 0;
    /// Anything not listed below (a model that fails to load, a broken state store, I/O).
    pub const FAILURE: u8 = 1;
    /// The command line is wrong (clap's own status for usage errors).
    pub const USAGE: u8 = 2;
    /// moed is not running on the chosen bus, or the bus cannot be reached.
    pub const NOT_RUNNING: u8 = 3;
    /// moed or the bus policy refused the caller.
    pub const ACCESS_DENIED: u8 = 4;
    /// An argument, option, file or configuration is invalid, or a model does not exist.
    pub const INVALID: u8 = 5;
    /// No model is loaded (or the one named is not).
    pub const NO_MODEL: u8 = 6;
    /// moed is busy (queue full) or shutting down: retry later.
    pub const BUSY: u8 = 7;
    /// Interrupted by Ctrl-C (the request was cancelled).
    pub const INTERRUPTED: u8 = 130;
}

/// Every exit status and its meaning, for `--help`, the man page and ctl/README.md.
pub const EXIT_CODES: &[(u8, &str)] = &[
    (exit::OK, "success"),
    (
        exit::FAILURE,
        "failure (a model that fails to load, a broken state store, I/O errors)",
    ),
    (exit::USAGE, "usage error (wrong command line)"),
    (
        exit::NOT_RUNNING,
        "moed is not running on the chosen bus, or the bus cannot be reached",
    ),
    (
        exit::ACCESS_DENIED,
        "access denied (by moed's polkit/group rules or the bus policy)",
    ),
    (
        exit::INVALID,
        "invalid argument, option, file or configuration; no such model",
    ),
    (
        exit::NO_MODEL,
        "no model is loaded (or the one named with --model is not)",
    ),
    (
        exit::BUSY,
        "moed is busy (queue full) or shutting down; retry later",
    ),
    (
        exit::INTERRUPTED,
        "interrupted by Ctrl-C (the request was cancelled)",
    ),
];

/// The exit-status section of `moectl --help`.
pub fn exit_codes_help() -> String {
    let mut text = String::from("Exit status:");
    for (code, meaning) in EXIT_CODES {
        text.push_str(&format!("\n  {code:<4} {meaning}"));
    }
    text
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot connect to {bus}: {source}")]
    Connect {
        bus: String,
        source: zbus::Error,
        hint: String,
    },
    #[error("moed is not running on {bus} ({detail})")]
    NotRunning {
        bus: String,
        detail: String,
        hint: String,
    },
    #[error("access denied: {message}")]
    AccessDenied { message: String, hint: String },
    /// An error moed replied with (other than access denied).
    #[error("{}: {}", .0.short_name().unwrap_or("D-Bus error"), .0.message())]
    Daemon(MoedError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
    #[error("interrupted")]
    Interrupted,
    /// stdout was closed by its reader (`moectl ... | head`): stop quietly.
    #[error("output closed")]
    BrokenPipe,
}

impl CtlError {
    /// The error as `--json` reports it: one object on one line, for stderr.
    pub fn to_json(&self) -> serde_json::Value {
        let name = match self {
            CtlError::Daemon(err) => dbus_error_name(err),
            _ => None,
        };
        serde_json::json!({ "error": {
            "message": self.to_string(),
            "hint": self.hint(),
            "exit_status": self.exit_code(),
            "dbus_error": name,
        }})
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Connect { .. } | CtlError::NotRunning { .. } => exit::NOT_RUNNING,
            CtlError::AccessDenied { .. } => exit::ACCESS_DENIED,
            CtlError::Daemon(err) => match err {
                MoedError::InvalidArgument(_) | MoedError::NotFound(_) => exit::INVALID,
                MoedError::ModelNotLoaded(_) => exit::NO_MODEL,
                MoedError::Busy(_) | MoedError::ShuttingDown(_) => exit::BUSY,
                MoedError::Cancelled(_) => exit::INTERRUPTED,
                _ => match dbus_error_name(err).as_deref() {
                    Some("org.freedesktop.DBus.Error.InvalidArgs") => exit::INVALID,
                    _ => exit::FAILURE,
                },
            },
            CtlError::Usage(_) => exit::USAGE,
            CtlError::Invalid(_) => exit::INVALID,
            CtlError::Io { .. } | CtlError::Failed(_) => exit::FAILURE,
            CtlError::Interrupted => exit::INTERRUPTED,
            CtlError::BrokenPipe => exit::OK,
        }
    }

    /// What to do about it, printed after the message.
    pub fn hint(&self) -> Option<String> {
        match self {
            CtlError::Connect { hint, .. }
            | CtlError::NotRunning { hint, .. }
            | CtlError::AccessDenied { hint, .. } => Some(hint.clone()),
            CtlError::Daemon(err) => match err {
                MoedError::ModelNotLoaded(_) => Some(
                    "load one with `moectl models load NAME` (see `moectl models list`)".into(),
                ),
                MoedError::Busy(_) => {
                    Some("every execution slot and queue place is taken; retry later".into())
                }
                MoedError::ShuttingDown(_) => {
                    Some("moed is stopping; retry once it has restarted".into())
                }
                _ => None,
            },
            _ => None,
        }
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> CtlError {
        if source.kind() == std::io::ErrorKind::BrokenPipe {
            return CtlError::BrokenPipe;
        }
        CtlError::Io {
            what: what.into(),
            source,
        }
    }
}

/// The D-Bus error name behind a zbus-level error, if it carries one.
pub fn dbus_error_name(err: &MoedError) -> Option<String> {
    match err {
        MoedError::ZBus(zbus::Error::MethodError(name, _, _)) => Some(name.to_string()),
        MoedError::ZBus(zbus::Error::FDO(fdo)) => Some(fdo.name().to_string()),
        MoedError::ZBus(_) => None,
        other => Some(other.name().to_string()),
    }
}

/// The error names that mean nobody owns `org.moed.Moed1` (or activation could not start it).
pub fn means_not_running(name: &str) -> bool {
    name == "org.freedesktop.DBus.Error.ServiceUnknown"
        || name == "org.freedesktop.DBus.Error.NameHasNoOwner"
        || name.starts_with("org.freedesktop.DBus.Error.Spawn.")
        || name.starts_with("org.freedesktop.systemd1.")
}
