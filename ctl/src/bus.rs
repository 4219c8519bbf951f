//! Which bus `moectl` talks on (`--bus system|session|ADDRESS`), the connection, and how D-Bus
//! failures turn into [`CtlError`]s that say what to do.

use std::fmt;
use std::str::FromStr;

use moed_dbus::MoedError;
use zbus::Connection;

use crate::error::{CtlError, dbus_error_name, means_not_running};
use crate::style::Style;

/// `--bus`: the system bus (moed's home as a service), the session bus, or a bus address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusChoice {
    System,
    Session,
    Address(String),
}

impl FromStr for BusChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "system" => Ok(BusChoice::System),
            "session" => Ok(BusChoice::Session),
            addr if addr.contains(':') => Ok(BusChoice::Address(addr.to_string())),
            other => Err(format!(
                "'{other}' is neither 'system', 'session' nor a D-Bus address (such as unix:path=/run/dbus/system_bus_socket)"
            )),
        }
    }
}

/// `--bus`'s parser: any D-Bus address is accepted, and `system`/`session` are offered by shell
/// completion (clap's `possible_values` would refuse addresses).
#[derive(Clone, Copy, Debug)]
pub struct BusParser;

impl clap::builder::TypedValueParser for BusParser {
    type Value = BusChoice;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<BusChoice, clap::Error> {
        let text = value
            .to_str()
            .ok_or_else(|| clap::Error::new(clap::error::ErrorKind::InvalidUtf8).with_cmd(cmd))?;
        text.parse().map_err(|why: String| {
            let name = arg.map_or_else(|| "--bus".to_string(), ToString::to_string);
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for '{name}': {why}\n"),
            )
            .with_cmd(cmd)
        })
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            [
                clap::builder::PossibleValue::new("system").help("the system bus (moed.service)"),
                clap::builder::PossibleValue::new("session").help("your session bus"),
            ]
            .into_iter(),
        ))
    }
}

impl fmt::Display for BusChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusChoice::System => write!(f, "the system bus"),
            BusChoice::Session => write!(f, "the session bus"),
            BusChoice::Address(addr) => write!(f, "the bus at {addr}"),
        }
    }
}

impl BusChoice {
    /// The bus as `--bus` takes it: `system`, `session` or the address (for `--json`).
    pub fn as_arg(&self) -> String {
        match self {
            BusChoice::System => "system".into(),
            BusChoice::Session => "session".into(),
            BusChoice::Address(addr) => addr.clone(),
        }
    }

    /// How to start moed so that it serves this bus.
    pub fn start_hint(&self) -> String {
        match self {
            BusChoice::System => {
                "start it with `sudo systemctl start moed` (why it stopped: `journalctl -u moed`), or choose another bus with --bus".into()
            }
            BusChoice::Session => {
                "start it on your session bus with `moed serve --session`, or choose another bus with --bus".into()
            }
            BusChoice::Address(addr) => format!(
                "start it with `moed serve --address {addr}`, or choose another bus with --bus"
            ),
        }
    }

    /// When the bus itself cannot be reached: moed joins a bus, it does not create one.
    pub fn no_bus_hint(&self) -> String {
        match self {
            BusChoice::System => {
                "is the system's D-Bus daemon running (`systemctl status dbus`)? moed needs it too".into()
            }
            BusChoice::Session => {
                "this login has no session bus (DBUS_SESSION_BUS_ADDRESS unset?); use --bus system for the installed service".into()
            }
            BusChoice::Address(addr) => format!(
                "no D-Bus daemon listens at {addr}; a private bus is started with `dbus-daemon --session --address={addr} --fork`, then moed joins it with `moed serve --address {addr}`"
            ),
        }
    }

    pub async fn connect(&self) -> Result<Connection, CtlError> {
        let builder = match self {
            BusChoice::System => zbus::connection::Builder::system(),
            BusChoice::Session => zbus::connection::Builder::session(),
            BusChoice::Address(addr) => zbus::connection::Builder::address(addr.as_str()),
        };
        builder.build().await.map_err(|source| CtlError::Connect {
            bus: self.to_string(),
            source,
            hint: self.no_bus_hint(),
        })
    }
}

/// What every command gets: the connection and how to print.
pub struct App {
    pub conn: Connection,
    pub bus: BusChoice,
    pub json: bool,
    /// Styling for stdout.
    pub out: Style,
    /// Styling for stderr (progress, thinking, notes).
    pub err: Style,
}

impl App {
    /// Turns a failed call into an error with advice; `action` is the polkit action of a
    /// managing call, named in the advice when moed refuses it.
    pub fn fail(&self, err: MoedError, action: Option<&str>) -> CtlError {
        let name = dbus_error_name(&err).unwrap_or_default();
        if means_not_running(&name) {
            return CtlError::NotRunning {
                bus: self.bus.to_string(),
                detail: format!("nobody owns {}", moed_dbus::BUS_NAME),
                hint: self.bus.start_hint(),
            };
        }
        if name == "org.freedesktop.DBus.Error.AccessDenied" {
            return CtlError::AccessDenied {
                message: err.message(),
                hint: format!(
                    "the D-Bus policy for {} (/usr/share/dbus-1/system.d/org.moed.Moed1.conf) does not let this user talk to moed; ask an administrator",
                    moed_dbus::BUS_NAME
                ),
            };
        }
        if let MoedError::AccessDenied(message) = err {
            let hint = match action {
                Some(action) => format!(
                    "this needs the polkit action {action}: run it as root (sudo moectl ...), be a member of the group named by access.admin_group in /etc/moed/moed.toml, or have polkit grant {action} to you"
                ),
                None if message.contains("allowed_group") => {
                    "ask an administrator to add your user to the group named above (then log in again)".into()
                }
                None => "ask an administrator, or run as root".into(),
            };
            return CtlError::AccessDenied { message, hint };
        }
        CtlError::Daemon(err)
    }

    pub fn fail_zbus(&self, err: zbus::Error) -> CtlError {
        self.fail(MoedError::ZBus(err), None)
    }
}
