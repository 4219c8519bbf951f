//! The error names the daemon replies with (`org.moed.Moed1.Error.*`), one enum for both sides.
//!
//! `zbus::DBusError` is written by hand rather than derived so that every error reply passes the
//! outgoing-string boundary ([`crate::wire`]): a message carrying a NUL or megabytes of a client's
//! or plugin's text is made valid and clipped here, once, whichever method returned it. Names,
//! description and decoding match what `#[derive(DBusError)]` generated, so clients see no change.

use std::fmt;

use zbus::DBusError;
use zbus::message::{Header, Message};
use zbus::names::ErrorName;

use crate::ERROR_PREFIX;
use crate::wire::{self, limits};

/// The error name a [`MoedError::ZBus`] reply carries (as the derive macro named it).
const ZBUS_ERROR_NAME: &str = "org.freedesktop.zbus.Error";

/// Every error a moed method can return. Each message says what went wrong and what to do.
///
/// On the client side, a reply carrying one of these names decodes into its variant; anything else
/// (no daemon on the bus, a standard D-Bus error) arrives as [`MoedError::ZBus`].
#[derive(Debug)]
pub enum MoedError {
    /// A D-Bus level error that carries none of moed's names.
    ZBus(zbus::Error),
    /// An argument or option has the wrong type or value; the message names it.
    InvalidArgument(String),
    /// A named model, plugin, request or document does not exist.
    NotFound(String),
    /// The caller may not do this; the message names the polkit action or group needed.
    AccessDenied(String),
    /// No model is loaded (or the one named is not); load one with `Models.Load`.
    ModelNotLoaded(String),
    /// A plugin failed while handling the request.
    PluginFailed(String),
    /// Every slot of the request queue is taken; retry later.
    Busy(String),
    /// The request was cancelled before it finished.
    Cancelled(String),
    /// The daemon is stopping and takes no new requests.
    ShuttingDown(String),
    /// Anything else: the message says what failed.
    Failed(String),
}

impl MoedError {
    /// The short name of the error (`Busy`, `InvalidArgument`, ...), as in the D-Bus error name
    /// after the `org.moed.Moed1.Error.` prefix; `None` for errors from D-Bus itself.
    pub fn short_name(&self) -> Option<&'static str> {
        Some(match self {
            MoedError::ZBus(_) => return None,
            MoedError::InvalidArgument(_) => "InvalidArgument",
            MoedError::NotFound(_) => "NotFound",
            MoedError::AccessDenied(_) => "AccessDenied",
            MoedError::ModelNotLoaded(_) => "ModelNotLoaded",
            MoedError::PluginFailed(_) => "PluginFailed",
            MoedError::Busy(_) => "Busy",
            MoedError::Cancelled(_) => "Cancelled",
            MoedError::ShuttingDown(_) => "ShuttingDown",
            MoedError::Failed(_) => "Failed",
        })
    }

    /// The human-readable message, without the error name.
    pub fn message(&self) -> String {
        match self {
            MoedError::ZBus(err) => err.to_string(),
            other => other.description().unwrap_or_default().to_string(),
        }
    }

    /// Rebuilds an error from its short name and message, as carried in a `Finished` signal.
    pub fn from_parts(short_name: &str, message: String) -> MoedError {
        MoedError::from_short_name(short_name, message.clone())
            .unwrap_or(MoedError::Failed(message))
    }

    /// The variant named `short_name`, `None` for a name moed does not reply with.
    fn from_short_name(short_name: &str, message: String) -> Option<MoedError> {
        Some(match short_name {
            "InvalidArgument" => MoedError::InvalidArgument(message),
            "NotFound" => MoedError::NotFound(message),
            "AccessDenied" => MoedError::AccessDenied(message),
            "ModelNotLoaded" => MoedError::ModelNotLoaded(message),
            "PluginFailed" => MoedError::PluginFailed(message),
            "Busy" => MoedError::Busy(message),
            "Cancelled" => MoedError::Cancelled(message),
            "ShuttingDown" => MoedError::ShuttingDown(message),
            "Failed" => MoedError::Failed(message),
            _ => return None,
        })
    }

    /// The message an error reply carries, before the boundary bounds it.
    fn reply_message(&self) -> String {
        match self {
            MoedError::ZBus(e) => match e {
                zbus::Error::MethodError(_, Some(desc), _) => desc.clone(),
                zbus::Error::DBus(e) => e
                    .description()
                    .map_or_else(|| e.to_string(), str::to_string),
                other => other.to_string(),
            },
            _ => self.message(),
        }
    }
}

impl DBusError for MoedError {
    fn name(&self) -> ErrorName<'_> {
        let full = match self {
            MoedError::ZBus(_) => ZBUS_ERROR_NAME,
            MoedError::InvalidArgument(_) => "org.moed.Moed1.Error.InvalidArgument",
            MoedError::NotFound(_) => "org.moed.Moed1.Error.NotFound",
            MoedError::AccessDenied(_) => "org.moed.Moed1.Error.AccessDenied",
            MoedError::ModelNotLoaded(_) => "org.moed.Moed1.Error.ModelNotLoaded",
            MoedError::PluginFailed(_) => "org.moed.Moed1.Error.PluginFailed",
            MoedError::Busy(_) => "org.moed.Moed1.Error.Busy",
            MoedError::Cancelled(_) => "org.moed.Moed1.Error.Cancelled",
            MoedError::ShuttingDown(_) => "org.moed.Moed1.Error.ShuttingDown",
            MoedError::Failed(_) => "org.moed.Moed1.Error.Failed",
        };
        ErrorName::from_static_str_unchecked(full)
    }

    fn description(&self) -> Option<&str> {
        match self {
            MoedError::ZBus(e) => e.description(),
            MoedError::InvalidArgument(m)
            | MoedError::NotFound(m)
            | MoedError::AccessDenied(m)
            | MoedError::ModelNotLoaded(m)
            | MoedError::PluginFailed(m)
            | MoedError::Busy(m)
            | MoedError::Cancelled(m)
            | MoedError::ShuttingDown(m)
            | MoedError::Failed(m) => Some(m),
        }
    }

    /// The reply's one string argument passes the boundary: whatever a client, plugin, document
    /// or model file put into the message, the reply is a valid message of bounded size.
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        let message = self.reply_message();
        let message = wire::text(&message, limits::ERROR_MESSAGE);
        Message::error(call, self.name()).build(&&*message)
    }
}

impl fmt::Display for MoedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let description = self.description().unwrap_or("no description");
        write!(f, "{}: {description}", self.name())
    }
}

impl std::error::Error for MoedError {}

impl From<zbus::Error> for MoedError {
    /// Decodes a reply carrying one of moed's error names into its variant.
    fn from(value: zbus::Error) -> MoedError {
        let (name, desc) = match &value {
            zbus::Error::MethodError(name, desc, _) => (name.to_string(), desc.as_deref()),
            zbus::Error::FDO(e) => (e.name().to_string(), e.description()),
            zbus::Error::DBus(e) => (e.name().to_string(), e.description()),
            _ => return MoedError::ZBus(value),
        };
        let decoded = name
            .strip_prefix(ERROR_PREFIX)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|short| {
                MoedError::from_short_name(short, desc.map(str::to_string).unwrap_or_default())
            });
        decoded.unwrap_or(MoedError::ZBus(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix() {
        let err = MoedError::Busy("full".into());
        assert_eq!(err.name().as_str(), "org.moed.Moed1.Error.Busy");
        assert_eq!(err.short_name(), Some("Busy"));
        let back = MoedError::from_parts("InvalidArgument", "x".into());
        assert_eq!(back.name().as_str(), "org.moed.Moed1.Error.InvalidArgument");
        assert_eq!(
            MoedError::from_parts("Nonsense", "y".into()).short_name(),
            Some("Failed")
        );
        assert_eq!(
            err.to_string(),
            "org.moed.Moed1.Error.Busy: full",
            "Display as the derive wrote it"
        );
    }

    fn reply_to(err: &MoedError) -> (Message, String) {
        let call = Message::method_call("/org/moed/Moed1", "Complete")
            .build(&())
            .expect("call");
        let reply = err.create_reply(&call.header()).expect("reply");
        let text: String = reply.body().deserialize().expect("one string");
        (reply, text)
    }

    #[test]
    fn error_replies_pass_the_boundary() {
        let mut hostile = String::from("bad \0 value: \0");
        hostile.push_str(&"x".repeat(10 * 1024 * 1024));
        let err = MoedError::InvalidArgument(hostile);
        let (reply, text) = reply_to(&err);
        assert!(!text.contains('\0'));
        assert!(text.len() <= limits::ERROR_MESSAGE, "{}", text.len());
        assert!(
            text.starts_with("bad \u{FFFD} value: \u{FFFD}x"),
            "{}",
            &text[..40]
        );
        assert!(text.ends_with(" bytes]"));
        assert_eq!(
            reply.header().error_name().map(|n| n.as_str()),
            Some("org.moed.Moed1.Error.InvalidArgument")
        );
        // A client decodes the bounded reply into the same variant.
        let back = MoedError::from(zbus::Error::MethodError(
            err.name().into(),
            Some(text.clone()),
            reply,
        ));
        assert_eq!(back.short_name(), Some("InvalidArgument"));
        assert_eq!(back.message(), text);
    }

    #[test]
    fn clean_error_replies_are_unchanged_and_decode() {
        for short in [
            "InvalidArgument",
            "NotFound",
            "AccessDenied",
            "ModelNotLoaded",
            "PluginFailed",
            "Busy",
            "Cancelled",
            "ShuttingDown",
            "Failed",
        ] {
            let err = MoedError::from_parts(short, format!("{short} happened"));
            assert_eq!(err.short_name(), Some(short));
            let (reply, text) = reply_to(&err);
            assert_eq!(text, format!("{short} happened"));
            let back = MoedError::from(zbus::Error::MethodError(
                err.name().into(),
                Some(text),
                reply,
            ));
            assert_eq!(back.short_name(), Some(short));
        }
    }

    #[test]
    fn foreign_error_names_stay_zbus_errors() {
        let err = MoedError::from(zbus::Error::FDO(Box::new(
            zbus::fdo::Error::ServiceUnknown("no moed".into()),
        )));
        assert!(matches!(err, MoedError::ZBus(_)), "{err:?}");
        assert_eq!(err.short_name(), None);
        let (_, text) = reply_to(&MoedError::ZBus(zbus::Error::Failure("a\0b".into())));
        assert!(!text.contains('\0'));
    }
}
