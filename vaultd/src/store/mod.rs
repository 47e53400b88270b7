//! The encrypted vault.
//!
//! [`Vault`] is the whole store: an embedded transactional database,
//! `<state_dir>/vault.redb` ([`format`], [`engine`]), holding a
//! data-encryption key (DEK) sealed under the key-encryption key
//! ([`crate::keys::Kek`]) and one row per secret whose value is sealed under
//! the DEK ([`seal`] describes the associated data that binds each
//! ciphertext to its vault, scope, name and version).
//!
//! Every mutation is one durable transaction touching only its own rows
//! (O(log n) pages), and only after its commit does the in-memory index of
//! metadata change: an acknowledged write survives a crash (`kill -9` or
//! power loss), a failed one changes nothing, a torn one is never read.
//! Reads see a snapshot and never wait for a write. [`lock_state_dir`]
//! keeps two processes from writing the same vault (the store's own file
//! lock does too).
//!
//! A vault of the old single-file format (`vault.bin`, [`legacy`]) is moved
//! into the store on first open ([`Vault::migrate`]).

mod engine;
pub mod format;
pub mod legacy;
mod lock;
mod migrate;
mod seal;
mod types;
mod vault;

#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;

use crate::secure_fs::SecureFsError;

pub use lock::{lock_state_dir, StateLock, LOCK_FILE};
pub use types::{
    validate_name, MetaUpdate, OnExisting, PutMode, Scope, SecretMeta, SecretValue, VaultHeader,
    MAX_NAME_LEN, MAX_VALUE_LEN,
};
pub use vault::Vault;

/// Everything that can go wrong in the store. No variant carries a value.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("not an aivault vault file")]
    NotAVault,
    #[error("unsupported vault format version {0}")]
    UnsupportedVersion(u16),
    #[error("the vault is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot encode the vault: {0}")]
    Encode(postcard::Error),
    #[error("cannot write the vault: {0}")]
    Write(SecureFsError),
    #[error("a vault already exists at {}", path.display())]
    Exists { path: PathBuf },
    #[error("the key does not open this vault (wrong key or passphrase)")]
    WrongKey,
    #[error("no secret {name:?} in the {scope} scope")]
    NotFound { scope: Scope, name: String },
    #[error("secret {name:?} already exists")]
    AlreadyExists { name: String },
    #[error("secret {name:?} in the {scope} scope failed authentication (tampered or corrupt)")]
    Tampered { scope: Scope, name: String },
    #[error("invalid secret name: {0}")]
    InvalidName(String),
    #[error("empty values are not stored")]
    EmptyValue,
    #[error("value is {len} bytes; at most {max} bytes are stored")]
    ValueTooLarge { len: usize, max: usize },
    #[error("the system random number generator failed: {0}")]
    Random(getrandom::Error),
    #[error("sealing a value failed")]
    Seal,
    #[error("vault is in use by another process")]
    InUse,
    #[error("cannot lock {}: {source}", path.display())]
    Lock { path: PathBuf, source: io::Error },
    #[error("the vault store failed: {0}")]
    Storage(String),
}
