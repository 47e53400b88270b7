//! The store's vocabulary: scopes, values, metadata, names.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::StoreError;

/// Largest value `put` accepts, in bytes.
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// Longest secret name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Whose secret a record is: one user's own, or the system's (granted to
/// users and groups by policy).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    User(u32),
    System,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::User(uid) => write!(f, "user {uid}"),
            Scope::System => f.write_str("system"),
        }
    }
}

/// A secret's plaintext. Wiped on drop; `Debug` shows nothing.
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Zeroizing<Vec<u8>>> for SecretValue {
    fn from(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(..)")
    }
}

/// Everything about a secret except its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMeta {
    pub scope: Scope,
    pub name: String,
    pub version: u64,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds.
    pub updated: u64,
    pub description: Option<String>,
    pub tags: Vec<String>,
    /// Unix seconds.
    pub expires: Option<u64>,
    pub value_len: u32,
}

/// Metadata given with a `put`. For an existing secret, `None` / empty
/// fields keep what is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaUpdate {
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub expires: Option<u64>,
}

/// How `put` treats an existing (or missing) secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Only a new secret; an existing one is [`StoreError::AlreadyExists`].
    Create,
    /// Create, or replace the value of an existing secret.
    Upsert,
    /// Only an existing secret ([`StoreError::NotFound`] otherwise).
    Rotate,
}

/// How an import treats a name that exists already, decided inside its
/// transaction (so a secret created meanwhile is never overwritten by an
/// import that was to refuse or skip it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExisting {
    /// Nothing is stored ([`StoreError::AlreadyExists`]).
    Refuse,
    /// The existing secret is left as it is.
    Skip,
    /// Its value is replaced (a new version, metadata kept).
    Replace,
}

/// What can be learnt from a vault file without its key.
#[derive(Debug, Clone, PartialEq)]
pub struct VaultHeader {
    pub format_version: u16,
    pub vault_id: [u8; 16],
    pub provider_kind: String,
    pub kdf: Option<crate::keys::KdfParams>,
    pub dek_generation: u64,
}

/// Secret names: the rules of [`crate::names::check_name`] (hierarchical
/// names such as `aws/access_key`). Messages never echo the name.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    crate::names::check_name(name).map_err(|m| StoreError::InvalidName(m.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let ok = [
            "A",
            "_",
            "a.b-c_D9",
            "GITHUB_TOKEN",
            "aws/access_key",
            "x".repeat(128).as_str(),
        ]
        .map(String::from);
        for n in &ok {
            validate_name(n).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
        let long = "x".repeat(129);
        for n in [
            "",
            "9abc",
            "-a",
            ".a",
            "a b",
            "/a",
            "a/",
            "a//b",
            "a/../b",
            "a=b",
            "é",
            "aé",
            "a\n",
            "a\0",
            "$A",
            long.as_str(),
        ] {
            let e = validate_name(n).unwrap_err();
            assert!(matches!(e, StoreError::InvalidName(_)), "{n:?}");
        }
    }

    #[test]
    fn secret_value_debug_hides_bytes() {
        let v = SecretValue::new(b"hunter2".to_vec());
        assert_eq!(format!("{v:?}"), "SecretValue(..)");
        assert_eq!(v.len(), 7);
        assert_eq!(v.as_bytes(), b"hunter2");
    }

    #[test]
    fn scope_orders_users_before_system() {
        assert!(Scope::User(u32::MAX) < Scope::System);
        assert_eq!(Scope::User(7).to_string(), "user 7");
    }
}
