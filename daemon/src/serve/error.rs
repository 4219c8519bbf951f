//! The one mapping from the service core's errors to the D-Bus contract's `MoedError`.
//!
//! A function rather than `From`: both types are foreign to this crate (orphan rule), and the
//! contract crate must not depend on the service.

use moed_dbus::MoedError;

use moed_service::ServiceError;

/// The wire error for a service error: the kind picks the error name, the text is kept.
pub fn wire_error(e: ServiceError) -> MoedError {
    match e {
        ServiceError::InvalidArgument(m) => MoedError::InvalidArgument(m),
        ServiceError::NotFound(m) => MoedError::NotFound(m),
        ServiceError::ModelNotLoaded(m) => MoedError::ModelNotLoaded(m),
        ServiceError::PluginFailed(m) => MoedError::PluginFailed(m),
        ServiceError::Busy(m) => MoedError::Busy(m),
        ServiceError::ShuttingDown(m) => MoedError::ShuttingDown(m),
        ServiceError::Cancelled(m) => MoedError::Cancelled(m),
        ServiceError::Failed(m) => MoedError::Failed(m),
    }
}
