//! `vaultctl`'s error type and exit codes, shared by [`crate::commands`] and
//! [`crate::run`].
//!
//! A leaf: it imports neither, so `commands` → `run` → `error` is the only
//! direction between them.

use aivault_client::http::HttpError;
use aivault_client::ClientError;
use aivault_proto::ErrorCode;

/// `vaultctl run` lost its connection before the command's status arrived.
pub const EXIT_RUN_LOST: i32 = 6;

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Client(#[from] ClientError),
    /// This process failed on its own (no descriptor, no memory).
    #[error("{0}")]
    Local(String),
    /// `vaultctl http` could not make its request or read its answer.
    #[error("{0}")]
    Http(#[from] HttpError),
}

/// `vaultctl http`: the response's status was 400 or above.
pub const EXIT_HTTP_STATUS: i32 = 22;
/// `vaultctl http`: the response was malformed or cut short.
pub const EXIT_HTTP_RESPONSE: i32 = 8;

impl CtlError {
    /// The stable code `--json` reports: the daemon's error code when it
    /// answered, else what went wrong on this side.
    pub fn code(&self) -> &'static str {
        match self {
            CtlError::Usage(_) => "usage",
            CtlError::Client(ClientError::Daemon(e) | ClientError::Refused(e)) => e.code.as_str(),
            CtlError::Client(ClientError::ConnectDenied { .. }) => "permission-denied",
            CtlError::Client(ClientError::Connect { .. }) => "unavailable",
            CtlError::Client(ClientError::Timeout { .. }) => "timeout",
            CtlError::Client(ClientError::Frame(_)) => "connection-lost",
            CtlError::Client(ClientError::Protocol) => "protocol",
            CtlError::Local(_) => "local",
            CtlError::Http(HttpError::Invalid(_)) => "usage",
            CtlError::Http(HttpError::ConnectDenied { .. }) => "permission-denied",
            CtlError::Http(HttpError::Connect { .. } | HttpError::Send(_)) => "unavailable",
            CtlError::Http(HttpError::Timeout(_)) => "timeout",
            CtlError::Http(HttpError::Response(_) | HttpError::Read(_)) => "bad-response",
            CtlError::Http(HttpError::Output(_)) => "local",
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::Usage(_) => 2,
            CtlError::Client(ClientError::Daemon(e)) => match e.code {
                ErrorCode::BadRequest | ErrorCode::InvalidName | ErrorCode::InvalidValue => 2,
                ErrorCode::NotFound => 3,
                ErrorCode::PermissionDenied | ErrorCode::WrongPassphrase => 4,
                ErrorCode::Sealed | ErrorCode::Busy | ErrorCode::VersionMismatch => 5,
                ErrorCode::AlreadyExists => 2,
                ErrorCode::Tampered | ErrorCode::AuditUnavailable | ErrorCode::Internal => 6,
            },
            CtlError::Client(ClientError::ConnectDenied { .. }) => 4,
            CtlError::Client(_) => 5,
            CtlError::Local(_) => 6,
            CtlError::Http(e) => match e {
                HttpError::Invalid(_) => 2,
                HttpError::ConnectDenied { .. } => 4,
                HttpError::Connect { .. } | HttpError::Send(_) | HttpError::Timeout(_) => 5,
                HttpError::Response(_) | HttpError::Read(_) => EXIT_HTTP_RESPONSE,
                HttpError::Output(_) => 6,
            },
        }
    }
}

/// A usage error (exit 2) with this message.
pub(crate) fn usage(msg: impl Into<String>) -> CtlError {
    CtlError::Usage(msg.into())
}
