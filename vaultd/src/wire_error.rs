//! How the daemon's internal failures become the errors a client sees
//! ([`WireError`]): one place, so every front end (socket, D-Bus, MCP
//! through the socket) says the same thing for the same failure and no
//! internal detail — a path, a key state — leaks into a reply.

use aivault_proto::{ErrorCode, WireError};

use crate::store::StoreError;

/// An error with a code and a message for the caller.
pub fn err(code: ErrorCode, message: impl Into<String>) -> WireError {
    WireError::new(code, message)
}

/// The vault is sealed (a passphrase vault not yet unlocked).
pub fn sealed() -> WireError {
    err(
        ErrorCode::Sealed,
        "the vault is sealed; root must run `vaultctl unlock`",
    )
}

/// The decision could not be recorded, so it was not carried out.
pub fn audit_unavailable() -> WireError {
    err(
        ErrorCode::AuditUnavailable,
        "the audit log cannot be written, so nothing was done",
    )
}

/// Maps store errors to wire errors without leaking paths or values.
pub fn store_err(e: &StoreError) -> WireError {
    match e {
        StoreError::NotFound { .. } => err(ErrorCode::NotFound, "no such secret"),
        StoreError::AlreadyExists { .. } => err(
            ErrorCode::AlreadyExists,
            "a secret of that name exists; use `secrets rotate` to replace its value",
        ),
        StoreError::Tampered { .. } => err(
            ErrorCode::Tampered,
            "the stored record failed authentication (tampered or corrupt)",
        ),
        StoreError::InvalidName(m) => err(ErrorCode::InvalidName, m.clone()),
        StoreError::EmptyValue => err(ErrorCode::InvalidValue, "empty values are not stored"),
        StoreError::ValueTooLarge { .. } => err(
            ErrorCode::InvalidValue,
            format!(
                "values are limited to {} bytes",
                crate::store::MAX_VALUE_LEN
            ),
        ),
        _ => err(ErrorCode::Internal, "the vault could not be updated"),
    }
}
