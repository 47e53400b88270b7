//! Named D-Bus errors, one per wire error code, under
//! `org.aivault.Vault1.Error.`: a caller can match on the name, and the
//! message is the same human-readable text `vaultctl` prints.

use aivault_proto::{ErrorCode, WireError};

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.aivault.Vault1.Error")]
pub enum VaultError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// Malformed arguments or options.
    BadRequest(String),
    InvalidName(String),
    InvalidValue(String),
    /// No such secret, or no such run of this caller.
    NotFound(String),
    AlreadyExists(String),
    /// Refused by policy or by the caller's identity.
    PermissionDenied(String),
    /// The vault is sealed until root unlocks it.
    Sealed(String),
    /// A stored record failed authentication.
    Tampered(String),
    /// A limit was hit (requests or runs in flight).
    Busy(String),
    /// The audit record could not be written, so nothing was done.
    AuditUnavailable(String),
    Internal(String),
}

impl From<WireError> for VaultError {
    fn from(e: WireError) -> Self {
        // Whatever the message repeats of the request, it stays short.
        let e = crate::wire_error::bounded(e);
        let m = e.message;
        match e.code {
            ErrorCode::BadRequest | ErrorCode::VersionMismatch | ErrorCode::WrongPassphrase => {
                VaultError::BadRequest(m)
            }
            ErrorCode::InvalidName => VaultError::InvalidName(m),
            ErrorCode::InvalidValue => VaultError::InvalidValue(m),
            ErrorCode::NotFound => VaultError::NotFound(m),
            ErrorCode::AlreadyExists => VaultError::AlreadyExists(m),
            ErrorCode::PermissionDenied => VaultError::PermissionDenied(m),
            ErrorCode::Sealed => VaultError::Sealed(m),
            ErrorCode::Tampered => VaultError::Tampered(m),
            ErrorCode::Busy => VaultError::Busy(m),
            ErrorCode::AuditUnavailable => VaultError::AuditUnavailable(m),
            ErrorCode::Internal => VaultError::Internal(m),
        }
    }
}

pub fn bad(message: impl Into<String>) -> VaultError {
    VaultError::BadRequest(message.into())
}

pub fn internal(message: impl Into<String>) -> VaultError {
    VaultError::Internal(message.into())
}
