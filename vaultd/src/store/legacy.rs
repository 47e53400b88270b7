//! The single-file vault of format version 1, `vault.bin`, which earlier
//! builds rewrote and fsynced whole for every change: read once, to migrate
//! it into the store ([`super::migrate`]).
//!
//! Layout: the 8-byte [`super::format::MAGIC`], the version `1` as a
//! big-endian `u16`, then a postcard-encoded [`VaultFile`]. Its records are
//! sealed with exactly the associated data the store uses, so they move over
//! byte for byte, without the key.
//!
//! The writer stays so that tests can make a vault of the old format.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::format::{VaultFile, FILE_MODE, MAGIC};
use super::StoreError;
use crate::secure_fs;

/// The old format's version.
pub const LEGACY_VERSION: u16 = 1;
/// The old vault's file name inside the state directory.
pub const LEGACY_FILE: &str = "vault.bin";

const HEADER_LEN: usize = MAGIC.len() + 2;

/// The path of the old vault file in `state_dir`.
pub fn legacy_path(state_dir: &Path) -> PathBuf {
    state_dir.join(LEGACY_FILE)
}

/// Header plus postcard body, as the old format wrote it.
pub fn encode(file: &VaultFile) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(HEADER_LEN + 64);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&LEGACY_VERSION.to_be_bytes());
    postcard::to_extend(file, out).map_err(StoreError::Encode)
}

/// Checks the header, then decodes the body. Never panics on hostile input;
/// postcard checks every length against the bytes actually present.
pub fn decode(bytes: &[u8]) -> Result<VaultFile, StoreError> {
    if bytes.len() < HEADER_LEN || bytes[..MAGIC.len()] != MAGIC {
        return Err(StoreError::NotAVault);
    }
    let version = u16::from_be_bytes([bytes[MAGIC.len()], bytes[MAGIC.len() + 1]]);
    if version != LEGACY_VERSION {
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

/// Reads and decodes an old vault file (not following a symlink).
pub fn read_file(path: &Path) -> Result<VaultFile, StoreError> {
    let read_err = |source| StoreError::Read {
        path: path.into(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(read_err)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(read_err)?;
    decode(&bytes)
}

/// Writes an old-format vault file atomically, mode `0600` (tests only: the
/// daemon never writes this format).
pub fn write_file(path: &Path, file: &VaultFile) -> Result<(), StoreError> {
    let bytes = encode(file)?;
    secure_fs::atomic_write(path, &bytes, FILE_MODE).map_err(StoreError::Write)
}
