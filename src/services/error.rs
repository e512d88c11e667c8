//! The services' error: what went wrong, in the domain's words. The services never speak
//! HTTP; the gateway alone turns a kind into a status and a Matrix `errcode`, in one table
//! (`gateway/error.rs`).

use std::time::Duration;

use kith_federation::FederationError;
use serde_json::{Map, Value};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq)]
pub enum ErrorKind {
    // The request itself.
    /// Well-formed but of the wrong shape.
    BadJson,
    InvalidParam,
    /// Over a size limit.
    TooLarge,
    /// Something this server does not offer (an auth stage, say).
    Unrecognized,

    // Who may do what.
    Forbidden,
    NotFound,
    /// A token that is not (or no longer) valid; `soft_logout`: the client may refresh or
    /// sign in again with the same device and keep its keys.
    UnknownToken {
        soft_logout: bool,
    },
    UserDeactivated,
    LimitExceeded {
        retry_after: Duration,
    },
    /// User-interactive auth goes on: the challenge (flows, params, session, completed,
    /// and why the last stage failed) as the client must see it.
    AuthRequired(Map<String, Value>),
    /// An auth session or similar state that is unknown or over.
    UnknownSession,
    /// A credential that was good when checked but is no longer (a registration token
    /// used up meanwhile).
    Unauthorized,

    // Accounts and email.
    InvalidUsername,
    UserInUse,
    WeakPassword,
    ThreepidAuthFailed,
    ThreepidMediumNotSupported,
    ThreepidInUse,
    ThreepidDenied,
    ThreepidNotFound,
    /// An address that is not on the user's account (to remove it).
    ThreepidNotOnAccount,

    // Profiles.
    ProfileTooLarge,
    KeyTooLarge,

    // Rooms.
    InviteBlocked,
    UnsupportedRoomVersion,
    IncompatibleRoomVersion {
        version: String,
    },
    /// A room alias that is taken.
    AliasInUse,
    /// A new room's alias that is taken (`createRoom`'s own error code).
    RoomInUse,
    /// A restricted join this server will not vouch for.
    UnableToGrantJoin,
    /// Forgetting a room one has not left.
    StillInRoom,
    /// A sliding-sync `pos` this server does not know (any more): the client starts over.
    UnknownPos,

    // Contacts.
    AlreadyFriends,
    RequestExists,
    /// The other server does not speak kith's friend requests.
    RemoteUnsupported,

    // Media.
    CannotOverwriteMedia,
    NotYetUploaded,
    /// Media of a kind no thumbnail is made of, or an image that cannot be read.
    CannotThumbnail,

    // Key backup.
    WrongRoomKeysVersion {
        current_version: String,
    },

    // Other servers.
    /// Another server could not be reached, or answered nonsense.
    BadGateway,
    /// Another server's refusal, passed on to our client as it came.
    Remote {
        status: u16,
        errcode: String,
    },

    /// A failure that is not the client's (storage, a bug): logged, answered without
    /// detail.
    Internal,
}

#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The human-readable text.
    pub fn message(&self) -> String {
        self.message.clone()
    }

    pub fn bad_json(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::BadJson, message)
    }

    pub fn invalid_param(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidParam, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::NotFound, message)
    }

    pub fn unknown_token(soft_logout: bool) -> Error {
        Error::new(
            ErrorKind::UnknownToken { soft_logout },
            "Unknown or expired token",
        )
    }

    pub fn limit_exceeded(retry_after: Duration) -> Error {
        Error::new(
            ErrorKind::LimitExceeded { retry_after },
            "Too many requests",
        )
    }

    pub fn bad_gateway(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::BadGateway, message)
    }

    /// A failure that is not the client's: logged in full here, answered without detail.
    pub fn internal(cause: impl std::fmt::Display) -> Error {
        tracing::error!(%cause, "internal error");
        Error::new(ErrorKind::Internal, "Internal server error")
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl From<kith_storage::Error> for Error {
    fn from(e: kith_storage::Error) -> Error {
        Error::internal(e)
    }
}

/// A peer's failure, as our client sees it: its own Matrix error passed on where it gave
/// one (an invite it blocked stays `M_INVITE_BLOCKED`), else 502.
pub fn remote_error(e: FederationError) -> Error {
    match e {
        FederationError::Remote {
            status,
            errcode,
            error,
            ..
        } if !errcode.is_empty() && status.is_client_error() => {
            let status = status.as_u16();
            Error::new(ErrorKind::Remote { status, errcode }, error)
        }
        FederationError::InvalidName(_) => Error::invalid_param(e.to_string()),
        FederationError::Denied(_) => Error::forbidden(e.to_string()),
        other => Error::bad_gateway(other.to_string()),
    }
}
