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

/// The one table from the services' error kinds to Matrix errors.
impl From<crate::services::error::Error> for Error {
    fn from(e: crate::services::error::Error) -> Error {
        use crate::services::error::ErrorKind as Kind;
        let message = e.message();
        let plain =
            |status: StatusCode, errcode: &str| Error::new(status, errcode, message.clone());
        match e.kind() {
            Kind::BadJson => plain(StatusCode::BAD_REQUEST, "M_BAD_JSON"),
            Kind::InvalidParam => plain(StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
            Kind::TooLarge => plain(StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE"),
            Kind::Unrecognized => plain(StatusCode::BAD_REQUEST, "M_UNRECOGNIZED"),
            Kind::Forbidden => plain(StatusCode::FORBIDDEN, "M_FORBIDDEN"),
            Kind::NotFound => plain(StatusCode::NOT_FOUND, "M_NOT_FOUND"),
            Kind::UnknownToken { soft_logout } => {
                let error = plain(StatusCode::UNAUTHORIZED, "M_UNKNOWN_TOKEN");
                match soft_logout {
                    true => error.with("soft_logout", true),
                    false => error,
                }
            }
            Kind::UserDeactivated => plain(StatusCode::FORBIDDEN, "M_USER_DEACTIVATED"),
            Kind::LimitExceeded { retry_after } => Error::limit_exceeded(*retry_after),
            Kind::AuthRequired(body) => Error::with_body(StatusCode::UNAUTHORIZED, body.clone()),
            Kind::UnknownSession => plain(StatusCode::BAD_REQUEST, "M_UNKNOWN"),
            Kind::Unauthorized => plain(StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED"),
            Kind::InvalidUsername => plain(StatusCode::BAD_REQUEST, "M_INVALID_USERNAME"),
            Kind::UserInUse => plain(StatusCode::BAD_REQUEST, "M_USER_IN_USE"),
            Kind::WeakPassword => plain(StatusCode::BAD_REQUEST, "M_WEAK_PASSWORD"),
            Kind::ThreepidAuthFailed => plain(StatusCode::BAD_REQUEST, "M_THREEPID_AUTH_FAILED"),
            Kind::ThreepidMediumNotSupported => {
                plain(StatusCode::BAD_REQUEST, "M_THREEPID_MEDIUM_NOT_SUPPORTED")
            }
            Kind::ThreepidInUse => plain(StatusCode::BAD_REQUEST, "M_THREEPID_IN_USE"),
            Kind::ThreepidDenied => plain(StatusCode::FORBIDDEN, "M_THREEPID_DENIED"),
            Kind::ThreepidNotFound => plain(StatusCode::BAD_REQUEST, "M_THREEPID_NOT_FOUND"),
            Kind::ThreepidNotOnAccount => plain(StatusCode::NOT_FOUND, "M_THREEPID_NOT_FOUND"),
            Kind::ProfileTooLarge => plain(StatusCode::BAD_REQUEST, "M_PROFILE_TOO_LARGE"),
            Kind::KeyTooLarge => plain(StatusCode::BAD_REQUEST, "M_KEY_TOO_LARGE"),
            Kind::InviteBlocked => plain(StatusCode::FORBIDDEN, "M_INVITE_BLOCKED"),
            Kind::UnsupportedRoomVersion => {
                plain(StatusCode::BAD_REQUEST, "M_UNSUPPORTED_ROOM_VERSION")
            }
            Kind::IncompatibleRoomVersion { version } => {
                plain(StatusCode::BAD_REQUEST, "M_INCOMPATIBLE_ROOM_VERSION")
                    .with("room_version", version.as_str())
            }
            // As Synapse answers a taken alias.
            Kind::AliasInUse => plain(StatusCode::CONFLICT, "M_UNKNOWN"),
            Kind::RoomInUse => plain(StatusCode::BAD_REQUEST, "M_ROOM_IN_USE"),
            Kind::UnableToGrantJoin => plain(StatusCode::FORBIDDEN, "M_UNABLE_TO_GRANT_JOIN"),
            Kind::StillInRoom => plain(StatusCode::BAD_REQUEST, "M_UNKNOWN"),
            Kind::UnknownPos => plain(StatusCode::BAD_REQUEST, "M_UNKNOWN_POS"),
            Kind::AlreadyFriends => {
                plain(StatusCode::CONFLICT, "ORG.KITH.CONTACTS_ALREADY_FRIENDS")
            }
            Kind::RequestExists => plain(StatusCode::CONFLICT, "ORG.KITH.CONTACTS_REQUEST_EXISTS"),
            Kind::RemoteUnsupported => plain(
                StatusCode::BAD_REQUEST,
                "ORG.KITH.CONTACTS_REMOTE_UNSUPPORTED",
            ),
            Kind::CannotOverwriteMedia => plain(StatusCode::CONFLICT, "M_CANNOT_OVERWRITE_MEDIA"),
            Kind::NotYetUploaded => plain(StatusCode::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED"),
            Kind::CannotThumbnail => plain(StatusCode::BAD_REQUEST, "M_UNKNOWN"),
            Kind::WrongRoomKeysVersion { current_version } => {
                plain(StatusCode::FORBIDDEN, "M_WRONG_ROOM_KEYS_VERSION")
                    .with("current_version", current_version.as_str())
            }
            Kind::BadGateway => plain(StatusCode::BAD_GATEWAY, "M_UNKNOWN"),
            Kind::Remote { status, errcode } => {
                let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
                plain(status, errcode)
            }
            // Logged where it was made; no detail goes out.
            Kind::Internal => {
                Error::unknown(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::services::error::{Error as DomainError, ErrorKind};

    fn answer(kind: ErrorKind) -> (StatusCode, Map<String, Value>) {
        let error = Error::from(DomainError::new(kind, "why"));
        (error.status, error.body)
    }

    #[test]
    fn domain_kinds_become_matrix_errors_with_their_extra_fields() {
        let (status, body) = answer(ErrorKind::InviteBlocked);
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["errcode"], "M_INVITE_BLOCKED");
        assert_eq!(body["error"], "why");
        let (status, body) = answer(ErrorKind::UnknownToken { soft_logout: true });
        assert_eq!(
            (status, &body["soft_logout"]),
            (StatusCode::UNAUTHORIZED, &json!(true))
        );
        let (_, body) = answer(ErrorKind::UnknownToken { soft_logout: false });
        assert!(!body.contains_key("soft_logout"));
        let retry_after = Duration::from_millis(1500);
        let (status, body) = answer(ErrorKind::LimitExceeded { retry_after });
        assert_eq!(
            (status, &body["retry_after_ms"]),
            (StatusCode::TOO_MANY_REQUESTS, &json!(1500))
        );
        let version = "1".to_owned();
        let (_, body) = answer(ErrorKind::IncompatibleRoomVersion { version });
        assert_eq!(body["room_version"], "1");
        let current_version = "7".to_owned();
        let (status, body) = answer(ErrorKind::WrongRoomKeysVersion { current_version });
        assert_eq!(
            (status, &body["current_version"]),
            (StatusCode::FORBIDDEN, &json!("7"))
        );
        // Another server's refusal goes out as it came; a nonsense status as 502.
        let errcode = "M_INVITE_BLOCKED".to_owned();
        let (status, body) = answer(ErrorKind::Remote {
            status: 403,
            errcode,
        });
        assert_eq!(
            (status, &body["errcode"]),
            (StatusCode::FORBIDDEN, &json!("M_INVITE_BLOCKED"))
        );
        let errcode = "M_X".to_owned();
        let (status, _) = answer(ErrorKind::Remote {
            status: 1000,
            errcode,
        });
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        // A UIA challenge is the body itself; an internal failure says nothing of itself.
        let challenge = json!({ "flows": [], "session": "s" });
        let (status, body) = answer(ErrorKind::AuthRequired(
            challenge.as_object().unwrap().clone(),
        ));
        assert_eq!(
            (status, Value::Object(body)),
            (StatusCode::UNAUTHORIZED, challenge)
        );
        let (status, body) = answer(ErrorKind::Internal);
        assert_eq!(
            (status, &body["error"]),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!("Internal server error")
            )
        );
    }
}
