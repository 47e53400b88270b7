//! How the daemon's internal failures become the errors a client sees
//! ([`WireError`]): one place, so every front end (socket, D-Bus, MCP
//! through the socket) says the same thing for the same failure and no
//! internal detail — a path, a key state — leaks into a reply.

use std::borrow::Cow;

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

/// Most characters of one caller-supplied string an error repeats.
pub const MAX_ECHO: usize = 256;
/// Most characters of any error message (and so of an audit record's
/// reason): a bound that holds whatever the message repeats.
pub const MAX_MESSAGE: usize = 1024;

/// At most `max` characters of `s`, with an ellipsis when cut.
fn cut(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some((end, _)) => Cow::Owned(format!("{}…", &s[..end])),
    }
}

/// A caller-supplied string as an error may repeat it: at most
/// [`MAX_ECHO`] characters.
pub fn excerpt(s: &str) -> Cow<'_, str> {
    cut(s, MAX_ECHO)
}

/// `e` with its message cut to [`MAX_MESSAGE`] characters.
pub fn bounded(mut e: WireError) -> WireError {
    if let Cow::Owned(m) = cut(&e.message, MAX_MESSAGE) {
        e.message = m;
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_and_messages_are_bounded() {
        assert_eq!(excerpt("short"), "short");
        let long = "é".repeat(MAX_ECHO + 10);
        let shown = excerpt(&long);
        assert_eq!(shown.chars().count(), MAX_ECHO + 1);
        assert!(shown.ends_with('…'));
        let e = bounded(err(ErrorCode::BadRequest, "x".repeat(5 << 20)));
        assert_eq!(e.message.chars().count(), MAX_MESSAGE + 1);
        assert_eq!(bounded(err(ErrorCode::BadRequest, "ok")).message, "ok");
    }
}
