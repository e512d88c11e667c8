//! The one error type: every failure a handler returns becomes a Matrix error body,
//! `{"errcode","error"}` with the right status, plus the extra fields some codes carry
//! (`soft_logout`, `retry_after_ms`, a user-interactive-auth body).

use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{Map, Value, json};

#[derive(Debug)]
pub struct Error {
    status: StatusCode,
    body: Map<String, Value>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(status: StatusCode, errcode: &str, message: impl Into<String>) -> Error {
        let mut body = Map::new();
        body.insert("errcode".into(), errcode.into());
        body.insert("error".into(), Value::String(message.into()));
        Error { status, body }
    }

    /// A body that is not the usual pair (a user-interactive-auth challenge).
    pub fn with_body(status: StatusCode, body: Map<String, Value>) -> Error {
        Error { status, body }
    }

    /// Adds a field beside `errcode` and `error`.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Error {
        self.body.insert(key.into(), value.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn bad_json(message: impl Into<String>) -> Error {
        Error::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", message)
    }

    pub fn not_json() -> Error {
        Error::new(
            StatusCode::BAD_REQUEST,
            "M_NOT_JSON",
            "Request body is not JSON",
        )
    }

    /// A body that did not deserialize: `M_NOT_JSON` if it is not JSON at all, else
    /// `M_BAD_JSON` (well-formed JSON of the wrong shape).
    pub fn body(cause: serde_json::Error, body: &[u8]) -> Error {
        if !body.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
            Error::not_json()
        } else {
            Error::bad_json(format!("Invalid request body: {cause}"))
        }
    }

    pub fn invalid_param(message: impl Into<String>) -> Error {
        Error::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", message)
    }

    pub fn missing_param(message: impl Into<String>) -> Error {
        Error::new(StatusCode::BAD_REQUEST, "M_MISSING_PARAM", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Error {
        Error::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", message)
    }

    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", message)
    }

    pub fn unknown(status: StatusCode, message: impl Into<String>) -> Error {
        Error::new(status, "M_UNKNOWN", message)
    }

    /// The `error` text.
    pub fn message(&self) -> String {
        let text = self.body.get("error").and_then(|e| e.as_str());
        text.unwrap_or_default().to_owned()
    }

    pub fn unauthorized(message: impl Into<String>) -> Error {
        Error::new(StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED", message)
    }

    pub fn missing_token() -> Error {
        Error::new(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "Missing access token",
        )
    }

    /// A token that is not (or no longer) valid. `soft_logout` tells the client it may refresh
    /// or log in again with the same device and keep its keys.
    pub fn unknown_token(soft_logout: bool) -> Error {
        let error = Error::new(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "Unknown or expired token",
        );
        if soft_logout {
            error.with("soft_logout", true)
        } else {
            error
        }
    }

    pub fn limit_exceeded(retry_after: Duration) -> Error {
        let ms = retry_after.as_millis().max(1) as u64;
        Error::new(
            StatusCode::TOO_MANY_REQUESTS,
            "M_LIMIT_EXCEEDED",
            "Too many requests",
        )
        .with("retry_after_ms", ms)
    }

    pub fn too_large(limit: usize) -> Error {
        Error::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            format!("Request body is larger than {limit} bytes"),
        )
    }

    pub fn unrecognized(status: StatusCode) -> Error {
        Error::new(status, "M_UNRECOGNIZED", "Unrecognized request")
    }

    /// A failure that is not the client's: logged in full, answered without detail.
    pub fn internal(cause: impl std::fmt::Display) -> Error {
        tracing::error!(%cause, "internal error");
        Error::unknown(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
    }
}

impl From<kith_storage::Error> for Error {
    fn from(e: kith_storage::Error) -> Error {
        Error::internal(e)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        (self.status, Json(Value::Object(self.body))).into_response()
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, json!(self.body))
    }
}
