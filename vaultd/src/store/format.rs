//! The vault file on disk: `vault.bin` in the state directory.
//!
//! Layout: the 8-byte [`MAGIC`], the format version as a big-endian `u16`
//! ([`FORMAT_VERSION`]), then a postcard-encoded [`VaultFile`]. Values and the
//! data key are sealed; everything else (names, metadata) is plaintext but
//! bound to the ciphertext through AEAD associated data.
//!
//! These types are public so integration tests can tamper with a vault; the
//! daemon itself goes through [`super::Vault`].

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Scope, StoreError};
use crate::keys::KdfParams;
use crate::secure_fs;

/// First bytes of every vault file.
pub const MAGIC: [u8; 8] = *b"AIVAULT\x01";
/// The only format version this build reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// The vault's file name inside the state directory.
pub const FILE_NAME: &str = "vault.bin";
/// Permissions of the vault file.
pub const FILE_MODE: u32 = 0o600;

const HEADER_LEN: usize = MAGIC.len() + 2;

/// An AEAD ciphertext (XChaCha20-Poly1305, tag included) and its nonce.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: [u8; 24],
    pub ciphertext: Vec<u8>,
}

/// One secret as stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
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
    pub sealed: Sealed,
}

/// Everything after the header.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct VaultFile {
    /// Random at init; binds every ciphertext to this vault.
    pub vault_id: [u8; 16],
    /// The key provider the vault was created or last rekeyed with.
    pub provider_kind: String,
    /// Argon2id parameters, for the passphrase provider only.
    pub kdf: Option<KdfParams>,
    /// The data-encryption key, sealed under the KEK.
    pub wrapped_dek: Sealed,
    /// Bumped by every DEK rotation; part of every record's associated data.
    pub dek_generation: u64,
    pub records: Vec<StoredRecord>,
}

/// The path of the vault file in `state_dir`.
pub fn vault_path(state_dir: &Path) -> std::path::PathBuf {
    state_dir.join(FILE_NAME)
}

/// Header plus postcard body.
pub fn encode(file: &VaultFile) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(HEADER_LEN + 64);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    postcard::to_extend(file, out).map_err(StoreError::Encode)
}

/// Checks the header, then decodes the body. Never panics on hostile input;
/// postcard checks every length against the bytes actually present.
pub fn decode(bytes: &[u8]) -> Result<VaultFile, StoreError> {
    if bytes.len() < HEADER_LEN || bytes[..MAGIC.len()] != MAGIC {
        return Err(StoreError::NotAVault);
    }
    let version = u16::from_be_bytes([bytes[MAGIC.len()], bytes[MAGIC.len() + 1]]);
    if version != FORMAT_VERSION {
        return Err(StoreError::UnsupportedVersion(version));
    }
    let (file, rest) = postcard::take_from_bytes::<VaultFile>(&bytes[HEADER_LEN..])
        .map_err(|e| StoreError::Corrupt(format!("cannot decode the vault: {e}")))?;
    if !rest.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "{} unexpected bytes after the vault",
            rest.len()
        )));
    }
    Ok(file)
}

/// Reads and decodes a vault file (not following a symlink in its place).
pub fn read_file(path: &Path) -> Result<VaultFile, StoreError> {
    let read_err = |source| StoreError::Read {
        path: path.into(),
        source,
    };
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(read_err)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(read_err)?;
    decode(&bytes)
}

/// Encodes and writes a vault file atomically and durably, mode `0600`.
pub fn write_file(path: &Path, file: &VaultFile) -> Result<(), StoreError> {
    let bytes = encode(file)?;
    secure_fs::atomic_write(path, &bytes, FILE_MODE).map_err(StoreError::Write)
}

/// Like [`write_file`] but refuses to replace an existing file.
pub(super) fn create_file(path: &Path, file: &VaultFile) -> Result<(), StoreError> {
    let bytes = encode(file)?;
    secure_fs::atomic_create(path, &bytes, FILE_MODE).map_err(|e| match e {
        secure_fs::SecureFsError::Exists { .. } => StoreError::Exists { path: path.into() },
        e => StoreError::Write(e),
    })
}
