//! OpenAI's error object (`{"error":{"message","type","param","code"}}`) and the one mapping
//! from moed's D-Bus errors to it and to an HTTP status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use moed_dbus::MoedError;
use moed_dbus::wire::{self, limits};
use serde_json::json;

/// An error as the client receives it. Messages never carry a whole client value: request
/// fields are quoted with [`wire::quote`] (64 bytes), moed's messages arrive bounded (4 KiB).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `rate_limit_error` or `server_error`.
    pub kind: &'static str,
    pub message: String,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// A short machine-readable code (moed's error name in snake case, or the bridge's own).
    pub code: &'static str,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: String,
    ) -> Self {
        ApiError {
            status,
            kind,
            message: wire::owned(message, limits::ERROR_MESSAGE),
            param: None,
            code,
        }
    }

    /// A bad request naming the field at fault.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        let mut err = ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_value",
            format!("'{param}': {}", message.into()),
        );
        err.param = Some(param.to_string());
        err
    }

    /// A field or value moed does not offer (tools, n > 1, token-array prompts, ...).
    pub fn unsupported(param: &str, message: impl Into<String>) -> Self {
        let mut err = ApiError::invalid(param, message);
        err.code = "unsupported";
        err
    }

    pub fn not_found(message: String) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "not_found",
            message,
        )
    }

    /// The JSON body as OpenAI sends it.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl From<MoedError> for ApiError {
    /// The one place moed's named errors become HTTP statuses and OpenAI error types.
    fn from(err: MoedError) -> ApiError {
        use StatusCode as S;
        let (status, kind, code) = match &err {
            MoedError::InvalidArgument(_) => {
                (S::BAD_REQUEST, "invalid_request_error", "invalid_argument")
            }
            MoedError::NotFound(_) => (S::NOT_FOUND, "not_found_error", "not_found"),
            MoedError::AccessDenied(_) => (S::FORBIDDEN, "permission_error", "access_denied"),
            MoedError::ModelNotLoaded(_) => {
                (S::NOT_FOUND, "invalid_request_error", "model_not_found")
            }
            MoedError::PluginFailed(_) => {
                (S::INTERNAL_SERVER_ERROR, "server_error", "plugin_failed")
            }
            MoedError::Busy(_) => (S::TOO_MANY_REQUESTS, "rate_limit_error", "busy"),
            MoedError::Cancelled(_) => (S::SERVICE_UNAVAILABLE, "server_error", "cancelled"),
            MoedError::ShuttingDown(_) => (S::SERVICE_UNAVAILABLE, "server_error", "shutting_down"),
            MoedError::Failed(_) => (S::INTERNAL_SERVER_ERROR, "server_error", "failed"),
            MoedError::ZBus(_) => (S::BAD_GATEWAY, "server_error", "moed_unavailable"),
        };
        let message = match &err {
            MoedError::ZBus(e) => format!("moed could not be reached on D-Bus: {e}"),
            other => other.message(),
        };
        ApiError::new(status, kind, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_moed_error_has_a_status_and_type() {
        let cases = [
            ("InvalidArgument", 400, "invalid_request_error"),
            ("NotFound", 404, "not_found_error"),
            ("AccessDenied", 403, "permission_error"),
            ("ModelNotLoaded", 404, "invalid_request_error"),
            ("PluginFailed", 500, "server_error"),
            ("Busy", 429, "rate_limit_error"),
            ("Cancelled", 503, "server_error"),
            ("ShuttingDown", 503, "server_error"),
            ("Failed", 500, "server_error"),
        ];
        for (name, status, kind) in cases {
            let err = ApiError::from(MoedError::from_parts(name, format!("{name} said")));
            assert_eq!(err.status.as_u16(), status, "{name}");
            assert_eq!(err.kind, kind, "{name}");
            assert_eq!(err.message, format!("{name} said"));
            let body = err.body();
            assert_eq!(body["error"]["type"], kind);
            assert!(body["error"]["param"].is_null());
        }
        let gone = ApiError::from(MoedError::ZBus(zbus::Error::Failure("no bus".into())));
        assert_eq!(gone.status, StatusCode::BAD_GATEWAY);
        assert_eq!(gone.code, "moed_unavailable");
    }

    #[test]
    fn messages_are_bounded() {
        let err = ApiError::from(MoedError::Failed("x".repeat(1 << 20)));
        assert!(err.message.len() <= limits::ERROR_MESSAGE);
        let err = ApiError::invalid("prompt", "bad");
        assert_eq!(err.body()["error"]["param"], "prompt");
    }
}
