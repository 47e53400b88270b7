//! The vault on disk: an embedded transactional store, `vault.redb`, in the
//! state directory ([`super::engine`] opens it), and a copy of its public
//! header, `vault.header`, for readers that cannot open the store while the
//! daemon holds it.
//!
//! The store has two tables:
//! * `header`, one row `"vault"`: the 8-byte [`MAGIC`], the format version as
//!   a big-endian `u16` ([`FORMAT_VERSION`]), then a postcard-encoded
//!   [`HeaderBody`] (vault id, key provider, KDF parameters, the DEK sealed
//!   under the KEK, the DEK generation);
//! * `records`, one row per secret: the key is the scope (`0x01 ‖ uid (u32
//!   BE)` for a user, `0x02` for the system) followed by the name's bytes, so
//!   rows sort by `(scope, name)`; the value is a postcard-encoded
//!   [`RecordBody`] (metadata and the sealed value).
//!
//! Values and the data key are sealed; everything else (names, metadata) is
//! plaintext but bound to the ciphertext through AEAD associated data, which
//! names the row's scope and name ([`super::seal`]): a value copied to
//! another row fails to open.
//!
//! `vault.header` holds the same magic and version followed by a postcard
//! [`PublicHeader`]: everything of the header except the wrapped DEK. The
//! store's own header is the authority; the copy is rewritten whenever the
//! header changes and whenever the vault is opened.
//!
//! [`read_all`] and [`write_all`] give tests (and the migration from the
//! single-file format, [`super::legacy`]) the whole store as one
//! [`VaultFile`]; the daemon itself goes through [`super::Vault`].

use std::path::{Path, PathBuf};

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::engine::{self, Db};
use super::{Scope, StoreError};
use crate::keys::KdfParams;

/// First bytes of the header row, of `vault.header`, and of the old
/// single-file vault.
pub const MAGIC: [u8; 8] = *b"AIVAULT\x01";
/// The format version this build writes (1 was the single file
/// `vault.bin`, which it migrates from).
pub const FORMAT_VERSION: u16 = 2;
/// The store's file name inside the state directory.
pub const STORE_FILE: &str = "vault.redb";
/// The public header copy's file name inside the state directory.
pub const HEADER_FILE: &str = "vault.header";
/// Permissions of every vault file.
pub use super::engine::FILE_MODE;

const HEADER_LEN: usize = MAGIC.len() + 2;

pub(super) const HEADER_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("header");
pub(super) const HEADER_ROW: &str = "vault";
pub(super) const RECORDS_TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");

const USER_TAG: u8 = 0x01;
const SYSTEM_TAG: u8 = 0x02;

/// An AEAD ciphertext (XChaCha20-Poly1305, tag included) and its nonce.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: [u8; 24],
    pub ciphertext: Vec<u8>,
}

/// One secret with its place, as [`read_all`] and the old format give it.
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

/// A whole vault: the header and every record, sorted by `(scope, name)`.
/// The old single-file format was exactly this, postcard-encoded.
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

/// The header row's body.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HeaderBody {
    pub vault_id: [u8; 16],
    pub provider_kind: String,
    pub kdf: Option<KdfParams>,
    pub wrapped_dek: Sealed,
    pub dek_generation: u64,
}

/// `vault.header`: the header without the wrapped DEK (a stale copy must
/// never be a way to open the current data key with a retired KEK).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PublicHeader {
    pub vault_id: [u8; 16],
    pub provider_kind: String,
    pub kdf: Option<KdfParams>,
    pub dek_generation: u64,
}

impl From<&HeaderBody> for PublicHeader {
    fn from(h: &HeaderBody) -> Self {
        PublicHeader {
            vault_id: h.vault_id,
            provider_kind: h.provider_kind.clone(),
            kdf: h.kdf.clone(),
            dek_generation: h.dek_generation,
        }
    }
}

/// A record row's value: the record without its place (the row key).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RecordBody {
    pub version: u64,
    pub created: u64,
    pub updated: u64,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub expires: Option<u64>,
    pub value_len: u32,
    pub sealed: Sealed,
}

impl RecordBody {
    pub(super) fn into_record(self, scope: Scope, name: String) -> StoredRecord {
        StoredRecord {
            scope,
            name,
            version: self.version,
            created: self.created,
            updated: self.updated,
            description: self.description,
            tags: self.tags,
            expires: self.expires,
            value_len: self.value_len,
            sealed: self.sealed,
        }
    }

    pub(super) fn of(r: &StoredRecord) -> RecordBody {
        RecordBody {
            version: r.version,
            created: r.created,
            updated: r.updated,
            description: r.description.clone(),
            tags: r.tags.clone(),
            expires: r.expires,
            value_len: r.value_len,
            sealed: r.sealed.clone(),
        }
    }
}

/// The path of the store in `state_dir`.
pub fn store_path(state_dir: &Path) -> PathBuf {
    state_dir.join(STORE_FILE)
}

/// The path of the public header copy in `state_dir`.
pub fn header_path(state_dir: &Path) -> PathBuf {
    state_dir.join(HEADER_FILE)
}

/// The row key of `(scope, name)`.
pub fn record_key(scope: Scope, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(5 + name.len());
    match scope {
        Scope::User(uid) => {
            key.push(USER_TAG);
            key.extend_from_slice(&uid.to_be_bytes());
        }
        Scope::System => key.push(SYSTEM_TAG),
    }
    key.extend_from_slice(name.as_bytes());
    key
}

/// The `(scope, name)` of a row key.
pub fn parse_key(key: &[u8]) -> Result<(Scope, String), StoreError> {
    let bad = || StoreError::Corrupt("a record has a malformed key".into());
    let (scope, name) = match key.split_first() {
        Some((&USER_TAG, rest)) if rest.len() >= 4 => {
            let (uid, name) = rest.split_at(4);
            let uid = u32::from_be_bytes([uid[0], uid[1], uid[2], uid[3]]);
            (Scope::User(uid), name)
        }
        Some((&SYSTEM_TAG, name)) => (Scope::System, name),
        _ => return Err(bad()),
    };
    let name = std::str::from_utf8(name).map_err(|_| bad())?;
    Ok((scope, name.to_string()))
}

pub(super) fn decode_body(bytes: &[u8]) -> Result<RecordBody, StoreError> {
    let (body, rest) = postcard::take_from_bytes::<RecordBody>(bytes)
        .map_err(|e| StoreError::Corrupt(format!("cannot decode a record: {e}")))?;
    if !rest.is_empty() {
        return Err(StoreError::Corrupt("trailing bytes after a record".into()));
    }
    Ok(body)
}

pub(super) fn encode_body(body: &RecordBody) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(body).map_err(StoreError::Encode)
}

/// Magic, version, postcard body.
pub(super) fn encode_versioned<T: Serialize>(body: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(HEADER_LEN + 96);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    postcard::to_extend(body, out).map_err(StoreError::Encode)
}

/// Checks magic and version (which must be `version`), then decodes the
/// body. Never panics on hostile input.
pub(super) fn decode_versioned<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    version: u16,
) -> Result<T, StoreError> {
    if bytes.len() < HEADER_LEN || bytes[..MAGIC.len()] != MAGIC {
        return Err(StoreError::NotAVault);
    }
    let found = u16::from_be_bytes([bytes[MAGIC.len()], bytes[MAGIC.len() + 1]]);
    if found != version {
        return Err(StoreError::UnsupportedVersion(found));
    }
    let (body, rest) = postcard::take_from_bytes::<T>(&bytes[HEADER_LEN..])
        .map_err(|e| StoreError::Corrupt(format!("cannot decode the vault header: {e}")))?;
    if !rest.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "{} unexpected bytes after the vault header",
            rest.len()
        )));
    }
    Ok(body)
}

/// The header row of an open store.
pub(super) fn read_header_row(db: &Db) -> Result<HeaderBody, StoreError> {
    engine::read(db, |txn| {
        let table = match txn.open_table(HEADER_TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Err(StoreError::NotAVault),
            Err(e) => return Err(engine::storage(e)),
        };
        let row = table
            .get(HEADER_ROW)
            .map_err(engine::storage)?
            .ok_or(StoreError::NotAVault)?;
        decode_versioned(row.value(), FORMAT_VERSION)
    })
}

/// Writes `vault.header` for `header`, atomically and durably.
pub(super) fn write_public_header(state_dir: &Path, header: &HeaderBody) -> Result<(), StoreError> {
    let bytes = encode_versioned(&PublicHeader::from(header))?;
    crate::secure_fs::atomic_write(&header_path(state_dir), &bytes, FILE_MODE)
        .map_err(StoreError::Write)
}

/// Reads `vault.header`.
pub(super) fn read_public_header(state_dir: &Path) -> Result<PublicHeader, StoreError> {
    let path = header_path(state_dir);
    let bytes = engine::read_small_file(&path)?;
    decode_versioned(&bytes, FORMAT_VERSION)
}

/// The whole store in `state_dir` as one [`VaultFile`] (records sorted by
/// `(scope, name)`). Opens the store, so it fails with
/// [`StoreError::InUse`] while a [`super::Vault`] has it open.
pub fn read_all(state_dir: &Path) -> Result<VaultFile, StoreError> {
    let db = engine::open(&store_path(state_dir), Default::default())?;
    read_all_from(&db)
}

pub(super) fn read_all_from(db: &Db) -> Result<VaultFile, StoreError> {
    let header = read_header_row(db)?;
    let records = engine::read(db, |txn| {
        let table = match txn.open_table(RECORDS_TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(engine::storage(e)),
        };
        let mut out = Vec::new();
        for row in table.iter().map_err(engine::storage)? {
            let (k, v) = row.map_err(engine::storage)?;
            let (scope, name) = parse_key(k.value())?;
            out.push(decode_body(v.value())?.into_record(scope, name));
        }
        Ok(out)
    })?;
    Ok(VaultFile {
        vault_id: header.vault_id,
        provider_kind: header.provider_kind,
        kdf: header.kdf,
        wrapped_dek: header.wrapped_dek,
        dek_generation: header.dek_generation,
        records,
    })
}

/// Replaces the whole contents of the store in `state_dir` with `file`, as
/// given (no check of names, versions or seals: tests use it to tamper),
/// in one durable transaction; creates the store if it is missing. Fails
/// with [`StoreError::InUse`] while a [`super::Vault`] has it open.
pub fn write_all(state_dir: &Path, file: &VaultFile) -> Result<(), StoreError> {
    let db = engine::open_or_create(&store_path(state_dir))?;
    write_all_to(&db, file)?;
    write_public_header(state_dir, &header_of(file))
}

pub(super) fn header_of(file: &VaultFile) -> HeaderBody {
    HeaderBody {
        vault_id: file.vault_id,
        provider_kind: file.provider_kind.clone(),
        kdf: file.kdf.clone(),
        wrapped_dek: file.wrapped_dek.clone(),
        dek_generation: file.dek_generation,
    }
}

pub(super) fn write_all_to(db: &Db, file: &VaultFile) -> Result<(), StoreError> {
    let header = encode_versioned(&header_of(file))?;
    engine::write(db, |txn| {
        txn.delete_table(RECORDS_TABLE).map_err(engine::storage)?;
        let mut h = txn.open_table(HEADER_TABLE).map_err(engine::storage)?;
        h.insert(HEADER_ROW, header.as_slice())
            .map_err(engine::storage)?;
        let mut t = txn.open_table(RECORDS_TABLE).map_err(engine::storage)?;
        for r in &file.records {
            let body = encode_body(&RecordBody::of(r))?;
            t.insert(record_key(r.scope, &r.name).as_slice(), body.as_slice())
                .map_err(engine::storage)?;
        }
        Ok(())
    })
}
