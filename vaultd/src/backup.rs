//! Encrypted backups of the vault's secrets, and their format.
//!
//! A backup is one opaque blob that the daemon builds and opens; clients
//! only store and send it. Layout (all integers big-endian):
//!
//! ```text
//! "AIVLTBAK" | format version (u16) | header length (u32) | header (postcard)
//! | ciphertext of the body (postcard) | Poly1305 tag (16 bytes)
//! ```
//!
//! The [`Header`] is readable without a key (what the backup holds: one
//! user's scope or the whole vault, how many secrets, when, from which
//! vault) and carries the random salt and nonce. The body — every secret's
//! scope, name, metadata and value — is sealed as *one* XChaCha20-Poly1305
//! message under the backup key, with everything before it (magic, version,
//! header) as associated data. So the whole blob is authenticated as one:
//! a truncated, extended or altered backup, a header moved onto another
//! body, or a count that does not match, is refused as a whole and nothing
//! of it is restored.
//!
//! The backup key is HKDF-SHA256 of the key-encryption key with the
//! header's random 32-byte salt and the context `"aivault backup v1"`: any
//! daemon holding the same KEK (another machine with the same key file or
//! credential) opens it; nothing else does, and each backup has its own key.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::keys::Kek;

const MAGIC: &[u8; 8] = b"AIVLTBAK";
/// The format this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
const KEY_INFO: &[u8] = b"aivault backup v1";
const TAG_LEN: usize = 16;
/// Bytes before the header: magic, version, header length.
const PREFIX_LEN: usize = 8 + 2 + 4;
/// A header is small; a longer length field is a corrupt file.
const MAX_HEADER_LEN: usize = 1024;

/// What went wrong with a backup. Deliberately coarse where a key is
/// involved: a wrong key and a tampered file look the same.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackupError {
    #[error("not an aivault backup")]
    NotABackup,
    #[error("unsupported backup format version {0} (this daemon reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u16),
    #[error("the backup is truncated, altered, or was made with another key")]
    Authentication,
    #[error("the system random number generator failed")]
    Random,
    #[error("cannot encode the backup")]
    Encode,
}

/// Whose secrets a backup holds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holds {
    /// One user's own secrets.
    User(u32),
    /// Every scope of the vault (made by root).
    All,
}

/// A record's scope inside a backup (kept apart from the store's type so
/// the backup format does not change with the store's).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackupScope {
    User(u32),
    System,
}

/// The part of a backup readable without a key; authenticated with the body.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub holds: Holds,
    pub entries: u32,
    /// Unix seconds.
    pub created: u64,
    /// The vault it was made from (informational).
    pub source_vault: [u8; 16],
    pub salt: [u8; 32],
    pub nonce: [u8; 24],
}

/// A value inside a backup body: wiped on drop, never printed.
pub struct Value(pub Zeroizing<Vec<u8>>);

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Value(..)")
    }
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Value, E> {
                Ok(Value(Zeroizing::new(v.to_vec())))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// One secret in a backup.
#[derive(Serialize, Deserialize, Debug)]
pub struct Entry {
    pub scope: BackupScope,
    pub name: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub expires: Option<u64>,
    pub value: Value,
}

/// The key a backup with this salt is sealed under.
fn backup_key(root: &BackupRoot, salt: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), &root.0[..]);
    let mut okm = Zeroizing::new([0u8; 32]);
    if hk.expand(KEY_INFO, &mut okm[..]).is_err() {
        // HKDF-SHA256 can produce up to 255 * 32 bytes; 32 always fits.
        unreachable!("hkdf-sha256 expands 32 bytes");
    }
    okm
}

/// The daemon's copy of the KEK for backups (the store keeps its own).
/// Wiped on drop; `Debug` shows nothing.
pub struct BackupRoot(Zeroizing<[u8; 32]>);

impl BackupRoot {
    pub fn of(kek: &Kek) -> Self {
        Self(Zeroizing::new(*kek.as_bytes()))
    }
}

impl std::fmt::Debug for BackupRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackupRoot(..)")
    }
}

fn prefix(header: &[u8]) -> Result<Vec<u8>, BackupError> {
    let len = u32::try_from(header.len()).map_err(|_| BackupError::Encode)?;
    let mut out = Vec::with_capacity(PREFIX_LEN + header.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(header);
    Ok(out)
}

/// Builds a backup of `entries`. The plaintext body lives only in one
/// wiped buffer of exactly its size, encrypted in place.
pub fn seal(
    root: &BackupRoot,
    holds: Holds,
    source_vault: [u8; 16],
    created: u64,
    entries: &[Entry],
) -> Result<Vec<u8>, BackupError> {
    let mut salt = [0u8; 32];
    let mut nonce = [0u8; 24];
    getrandom::getrandom(&mut salt).map_err(|_| BackupError::Random)?;
    getrandom::getrandom(&mut nonce).map_err(|_| BackupError::Random)?;
    let header = Header {
        holds,
        entries: u32::try_from(entries.len()).map_err(|_| BackupError::Encode)?,
        created,
        source_vault,
        salt,
        nonce,
    };
    let header = postcard::to_stdvec(&header).map_err(|_| BackupError::Encode)?;
    let mut out = prefix(&header)?;
    let size = postcard::experimental::serialized_size(entries).map_err(|_| BackupError::Encode)?;
    let mut body = Zeroizing::new(vec![0u8; size]);
    postcard::to_slice(entries, &mut body[..]).map_err(|_| BackupError::Encode)?;
    let key = backup_key(root, &salt);
    let cipher = XChaCha20Poly1305::new((&*key).into());
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), &out, &mut body[..])
        .map_err(|_| BackupError::Encode)?;
    out.reserve_exact(body.len() + TAG_LEN);
    out.extend_from_slice(&body);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Reads a backup's header without opening it.
pub fn read_header(blob: &[u8]) -> Result<(Header, usize), BackupError> {
    if blob.len() < 8 || &blob[..8] != MAGIC {
        return Err(BackupError::NotABackup);
    }
    if blob.len() < PREFIX_LEN {
        return Err(BackupError::Authentication);
    }
    let version = u16::from_be_bytes([blob[8], blob[9]]);
    if version != FORMAT_VERSION {
        return Err(BackupError::UnsupportedVersion(version));
    }
    let len = u32::from_be_bytes([blob[10], blob[11], blob[12], blob[13]]) as usize;
    if len > MAX_HEADER_LEN || blob.len() < PREFIX_LEN + len + TAG_LEN {
        return Err(BackupError::Authentication);
    }
    let header: Header = match postcard::take_from_bytes(&blob[PREFIX_LEN..PREFIX_LEN + len]) {
        Ok((h, [])) => h,
        _ => return Err(BackupError::Authentication),
    };
    Ok((header, PREFIX_LEN + len))
}

/// Opens a backup: its header and every entry, or nothing.
pub fn open(root: &BackupRoot, blob: &[u8]) -> Result<(Header, Vec<Entry>), BackupError> {
    let (header, body_at) = read_header(blob)?;
    let (sealed, tag) = blob[body_at..].split_at(blob.len() - body_at - TAG_LEN);
    let mut body = Zeroizing::new(sealed.to_vec());
    let key = backup_key(root, &header.salt);
    let cipher = XChaCha20Poly1305::new((&*key).into());
    cipher
        .decrypt_in_place_detached(
            XNonce::from_slice(&header.nonce),
            &blob[..body_at],
            &mut body[..],
            Tag::from_slice(tag),
        )
        .map_err(|_| BackupError::Authentication)?;
    let entries: Vec<Entry> = match postcard::take_from_bytes(&body) {
        Ok((e, [])) => e,
        // Authenticated but not decodable: written by something else.
        _ => return Err(BackupError::Authentication),
    };
    if entries.len() != header.entries as usize {
        return Err(BackupError::Authentication);
    }
    Ok((header, entries))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn root(byte: u8) -> BackupRoot {
        BackupRoot::of(&Kek::from_bytes([byte; 32]))
    }

    fn entry(name: &str, value: &[u8]) -> Entry {
        Entry {
            scope: BackupScope::User(1000),
            name: name.into(),
            description: Some("d".into()),
            tags: vec!["t".into()],
            expires: Some(5),
            value: Value(Zeroizing::new(value.to_vec())),
        }
    }

    fn sample() -> Vec<u8> {
        let entries = [
            entry("aws/access_key", b"AKIA-backup-test-value"),
            entry("B", b"second-backup-value"),
        ];
        seal(&root(7), Holds::User(1000), [1; 16], 42, &entries).unwrap()
    }

    #[test]
    fn a_backup_round_trips_and_hides_its_values() {
        let blob = sample();
        assert!(!blob
            .windows(b"AKIA-backup-test-value".len())
            .any(|w| w == b"AKIA-backup-test-value"));
        assert!(!blob
            .windows(b"aws/access_key".len())
            .any(|w| w == b"aws/access_key"));
        let (h, entries) = open(&root(7), &blob).unwrap();
        assert_eq!(h.holds, Holds::User(1000));
        assert_eq!((h.entries, h.created), (2, 42));
        assert_eq!(entries[0].name, "aws/access_key");
        assert_eq!(&entries[0].value.0[..], b"AKIA-backup-test-value");
        assert_eq!(entries[1].expires, Some(5));
        assert_ne!(sample()[..], blob[..], "fresh salt and nonce each time");
    }

    #[test]
    fn another_key_opens_nothing() {
        assert_eq!(
            open(&root(8), &sample()).unwrap_err(),
            BackupError::Authentication
        );
    }

    #[test]
    fn any_truncation_or_changed_byte_is_refused_as_a_whole() {
        let blob = sample();
        for len in 0..blob.len() {
            assert!(open(&root(7), &blob[..len]).is_err(), "truncated to {len}");
        }
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            assert!(open(&root(7), &bad).is_err(), "byte {i} flipped");
        }
        let mut longer = blob.clone();
        longer.push(0);
        assert!(open(&root(7), &longer).is_err());
    }

    #[test]
    fn foreign_files_and_versions_are_named() {
        assert_eq!(
            open(&root(7), b"NAME=value\n").unwrap_err(),
            BackupError::NotABackup
        );
        let mut v2 = sample();
        v2[9] = 2;
        assert_eq!(
            open(&root(7), &v2).unwrap_err(),
            BackupError::UnsupportedVersion(2)
        );
    }
}
