//! The error names the daemon replies with (`org.moed.Moed1.Error.*`), one enum for both sides.

use zbus::DBusError;

/// Every error a moed method can return. Each message says what went wrong and what to do.
///
/// On the client side, a reply carrying one of these names decodes into its variant; anything else
/// (no daemon on the bus, a standard D-Bus error) arrives as [`MoedError::ZBus`].
#[derive(Debug, DBusError)]
#[zbus(prefix = "org.moed.Moed1.Error", impl_display = true)]
pub enum MoedError {
    /// A D-Bus level error that carries none of moed's names.
    #[zbus(error)]
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
            MoedError::InvalidArgument(m)
            | MoedError::NotFound(m)
            | MoedError::AccessDenied(m)
            | MoedError::ModelNotLoaded(m)
            | MoedError::PluginFailed(m)
            | MoedError::Busy(m)
            | MoedError::Cancelled(m)
            | MoedError::ShuttingDown(m)
            | MoedError::Failed(m) => m.clone(),
        }
    }

    /// Rebuilds an error from its short name and message, as carried in a `Finished` signal.
    pub fn from_parts(short_name: &str, message: String) -> MoedError {
        match short_name {
            "InvalidArgument" => MoedError::InvalidArgument(message),
            "NotFound" => MoedError::NotFound(message),
            "AccessDenied" => MoedError::AccessDenied(message),
            "ModelNotLoaded" => MoedError::ModelNotLoaded(message),
            "PluginFailed" => MoedError::PluginFailed(message),
            "Busy" => MoedError::Busy(message),
            "Cancelled" => MoedError::Cancelled(message),
            "ShuttingDown" => MoedError::ShuttingDown(message),
            _ => MoedError::Failed(message),
        }
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
    }
}
