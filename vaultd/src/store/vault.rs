//! [`Vault`]: the open vault and every operation on it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{ReadableTable, TableError};
use zeroize::Zeroizing;

use super::engine::{self, storage, Db, FailSwitch};
use super::format::{
    self, decode_body, encode_body, record_key, HeaderBody, RecordBody, RECORDS_TABLE,
};
use super::seal::{self, Key, KEY_LEN};
use super::types::{
    validate_name, MetaUpdate, OnExisting, PutMode, Scope, SecretMeta, SecretValue, VaultHeader,
};
use super::{legacy, migrate, StoreError, MAX_VALUE_LEN};
use crate::keys::{KdfParams, Kek};

/// The first DEK generation of a new vault.
const FIRST_GENERATION: u64 = 1;

/// Metadata of every record, by scope then name: what `list`, `meta` and
/// `count` answer from, without a read of the store.
type Index = BTreeMap<Scope, BTreeMap<String, SecretMeta>>;

/// The header and the keys. Changed only by DEK rotation, rekey and the
/// reopening after a failure.
struct Keys {
    header: HeaderBody,
    dek: Key,
    kek: Key,
    /// A KEK whose rekey commit failed: the failure may have come after the
    /// commit reached the disk, so a reopen tries it too.
    pending_kek: Option<Key>,
}

/// An open vault: the store, an in-memory index of every record's metadata,
/// the DEK, and the KEK (needed to re-wrap a rotated DEK). Both keys are
/// wiped on drop.
///
/// Every method takes `&self` except DEK rotation and rekey: reads run in
/// their own snapshot of the store and never wait for a write; writes are
/// serialized among themselves, each one transaction of O(log n) pages.
pub struct Vault {
    state_dir: PathBuf,
    /// `None` after a failed reopen; the next operation tries again.
    db: RwLock<Option<Db>>,
    index: RwLock<Index>,
    keys: RwLock<Keys>,
    /// Held by every write from its transaction to its index update, so the
    /// index changes in commit order.
    writer: Mutex<()>,
    fail: FailSwitch,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.keys();
        let (users, system) = self.count();
        f.debug_struct("Vault")
            .field("state_dir", &self.state_dir)
            .field("provider_kind", &keys.header.provider_kind)
            .field("dek_generation", &keys.header.dek_generation)
            .field("records", &(users + system))
            .finish_non_exhaustive()
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn copy_key(bytes: &[u8; KEY_LEN]) -> Key {
    Zeroizing::new(*bytes)
}

fn meta_of(scope: Scope, name: &str, r: &RecordBody) -> SecretMeta {
    SecretMeta {
        scope,
        name: name.into(),
        version: r.version,
        created: r.created,
        updated: r.updated,
        description: r.description.clone(),
        tags: r.tags.clone(),
        expires: r.expires,
        value_len: r.value_len,
    }
}

fn check_value(value: &SecretValue) -> Result<u32, StoreError> {
    if value.is_empty() {
        return Err(StoreError::EmptyValue);
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(StoreError::ValueTooLarge {
            len: value.len(),
            max: MAX_VALUE_LEN,
        });
    }
    u32::try_from(value.len()).map_err(|_| StoreError::ValueTooLarge {
        len: value.len(),
        max: MAX_VALUE_LEN,
    })
}

fn tampered(scope: Scope, name: &str) -> StoreError {
    StoreError::Tampered {
        scope,
        name: name.into(),
    }
}

/// Opens one record's value, checking it against the recorded length.
fn open_body(
    dek: &[u8; KEY_LEN],
    header: &HeaderBody,
    scope: Scope,
    name: &str,
    r: &RecordBody,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let aad = seal::value_aad(
        &header.vault_id,
        header.dek_generation,
        scope,
        name,
        r.version,
    );
    match seal::open(dek, &r.sealed, &aad) {
        Some(plain) if plain.len() == r.value_len as usize => Ok(plain),
        _ => Err(tampered(scope, name)),
    }
}

/// The record a put leaves, given the one it finds (if any).
#[allow(clippy::too_many_arguments)]
fn next_body(
    keys: &Keys,
    scope: Scope,
    name: &str,
    value: &SecretValue,
    value_len: u32,
    meta: MetaUpdate,
    mode: PutMode,
    existing: Option<RecordBody>,
) -> Result<RecordBody, StoreError> {
    match (mode, &existing) {
        (PutMode::Create, Some(_)) => return Err(StoreError::AlreadyExists { name: name.into() }),
        (PutMode::Rotate, None) => {
            return Err(StoreError::NotFound {
                scope,
                name: name.into(),
            })
        }
        _ => {}
    }
    let (version, created, description, tags, expires) = match existing {
        Some(old) => (
            old.version
                .checked_add(1)
                .ok_or_else(|| StoreError::Corrupt("version counter exhausted".into()))?,
            Some(old.created),
            meta.description.or(old.description),
            if meta.tags.is_empty() {
                old.tags
            } else {
                meta.tags
            },
            meta.expires.or(old.expires),
        ),
        None => (1, None, meta.description, meta.tags, meta.expires),
    };
    let now = now();
    let aad = seal::value_aad(
        &keys.header.vault_id,
        keys.header.dek_generation,
        scope,
        name,
        version,
    );
    Ok(RecordBody {
        version,
        created: created.unwrap_or(now),
        updated: now,
        description,
        tags,
        expires,
        value_len,
        sealed: seal::seal(&keys.dek, value.as_bytes(), &aad)?,
    })
}

/// Reads every record's metadata (checking that every row decodes).
fn load_index(db: &Db) -> Result<Index, StoreError> {
    engine::read(db, |txn| {
        let mut index = Index::new();
        let table = match txn.open_table(RECORDS_TABLE) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(index),
            Err(e) => return Err(storage(e)),
        };
        for row in table.iter().map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            let (scope, name) = format::parse_key(k.value())?;
            let body = decode_body(v.value())?;
            let meta = meta_of(scope, &name, &body);
            index.entry(scope).or_default().insert(name, meta);
        }
        Ok(index)
    })
}

/// Opens the store's header and data key with `kek` (or `alt`); returns the
/// KEK that opened it.
fn unlock(
    header: &HeaderBody,
    kek: &[u8; KEY_LEN],
    alt: Option<&[u8; KEY_LEN]>,
) -> Result<(Key, Key), StoreError> {
    let try_kek = |k: &[u8; KEY_LEN]| {
        seal::unwrap_dek(
            k,
            &header.wrapped_dek,
            &header.vault_id,
            header.dek_generation,
        )
        .map(|dek| (dek, copy_key(k)))
    };
    match (try_kek(kek), alt) {
        (Err(StoreError::WrongKey), Some(alt)) => try_kek(alt),
        (r, _) => r,
    }
}

/// Rewrites `vault.header` if it does not match the store's header; a
/// failure is only logged (the store is the authority, and the copy is
/// tried again at the next open).
fn sync_public_header(state_dir: &Path, header: &HeaderBody) {
    let fresh = format::PublicHeader::from(header);
    if format::read_public_header(state_dir).ok().as_ref() == Some(&fresh) {
        return;
    }
    if let Err(e) = format::write_public_header(state_dir, header) {
        tracing::warn!(error = %e, "cannot update the vault's public header copy");
    }
}

impl Vault {
    /// Whether `state_dir` holds a vault (of this format or the old one), or
    /// anything in its place.
    pub fn exists(state_dir: &Path) -> bool {
        format::store_path(state_dir).symlink_metadata().is_ok()
            || legacy::legacy_path(state_dir).symlink_metadata().is_ok()
    }

    /// The parts of the vault readable without a key (the daemon needs the
    /// KDF parameters before it can unlock). From the store when it can be
    /// opened, from its public header copy while another process (the
    /// running daemon) holds it, and from the old single file before a
    /// migration.
    pub fn read_header(state_dir: &Path) -> Result<VaultHeader, StoreError> {
        let store = format::store_path(state_dir);
        if store.symlink_metadata().is_err() && legacy::legacy_path(state_dir).exists() {
            let file = legacy::read_file(&legacy::legacy_path(state_dir))?;
            return Ok(VaultHeader {
                format_version: legacy::LEGACY_VERSION,
                vault_id: file.vault_id,
                provider_kind: file.provider_kind,
                kdf: file.kdf,
                dek_generation: file.dek_generation,
            });
        }
        let public = match engine::open(&store, Default::default()) {
            Ok(db) => format::PublicHeader::from(&format::read_header_row(&db)?),
            Err(StoreError::InUse) => format::read_public_header(state_dir)?,
            Err(e) => return Err(e),
        };
        Ok(VaultHeader {
            format_version: format::FORMAT_VERSION,
            vault_id: public.vault_id,
            provider_kind: public.provider_kind,
            kdf: public.kdf,
            dek_generation: public.dek_generation,
        })
    }

    /// The header, and with `kek` the proof that it unwraps the data key,
    /// read without changing anything on disk: the store from a copy in
    /// memory, an old-format vault without migrating it
    /// (`aivaultd --check-config`).
    pub fn inspect(state_dir: &Path, kek: Option<&Kek>) -> Result<VaultHeader, StoreError> {
        let store = format::store_path(state_dir);
        if store.symlink_metadata().is_err() && legacy::legacy_path(state_dir).exists() {
            let file = legacy::read_file(&legacy::legacy_path(state_dir))?;
            if let Some(k) = kek {
                seal::unwrap_dek(
                    k.as_bytes(),
                    &file.wrapped_dek,
                    &file.vault_id,
                    file.dek_generation,
                )?;
            }
            return Ok(VaultHeader {
                format_version: legacy::LEGACY_VERSION,
                vault_id: file.vault_id,
                provider_kind: file.provider_kind,
                kdf: file.kdf,
                dek_generation: file.dek_generation,
            });
        }
        let db = engine::open_snapshot(&store)?;
        let header = format::read_header_row(&db)?;
        if let Some(k) = kek {
            unlock(&header, k.as_bytes(), None)?;
        }
        Ok(VaultHeader {
            format_version: format::FORMAT_VERSION,
            vault_id: header.vault_id,
            provider_kind: header.provider_kind.clone(),
            kdf: header.kdf.clone(),
            dek_generation: header.dek_generation,
        })
    }

    /// Moves a vault of the old single-file format into the store, if
    /// `state_dir` holds one (see [`super::migrate`]); returns how many
    /// records it moved. Needs no key. The caller holds the state lock.
    pub fn migrate(state_dir: &Path) -> Result<Option<usize>, StoreError> {
        migrate::migrate(state_dir)
    }

    /// Creates an empty vault with a fresh DEK. Refuses to replace an
    /// existing vault.
    pub fn init(
        state_dir: &Path,
        kek: &Kek,
        provider_kind: &str,
        kdf: Option<KdfParams>,
    ) -> Result<Vault, StoreError> {
        let path = format::store_path(state_dir);
        if Self::exists(state_dir) {
            return Err(StoreError::Exists { path });
        }
        let vault_id: [u8; 16] = seal::random()?;
        let dek = seal::random_key()?;
        let file = format::VaultFile {
            vault_id,
            provider_kind: provider_kind.into(),
            kdf,
            wrapped_dek: seal::wrap_dek(kek.as_bytes(), &dek, &vault_id, FIRST_GENERATION)?,
            dek_generation: FIRST_GENERATION,
            records: Vec::new(),
        };
        migrate::create_store(state_dir, &file)?;
        Self::open(state_dir, kek)
    }

    /// Opens the vault (migrating an old-format one first); returns
    /// [`StoreError::WrongKey`] if `kek` is not its key.
    pub fn open(state_dir: &Path, kek: &Kek) -> Result<Vault, StoreError> {
        migrate::migrate(state_dir)?;
        let fail = FailSwitch::default();
        let db = engine::open(&format::store_path(state_dir), fail.clone())?;
        let header = format::read_header_row(&db)?;
        let (dek, kek) = unlock(&header, kek.as_bytes(), None)?;
        let index = load_index(&db)?;
        sync_public_header(state_dir, &header);
        Ok(Vault {
            state_dir: state_dir.into(),
            db: RwLock::new(Some(db)),
            index: RwLock::new(index),
            keys: RwLock::new(Keys {
                header,
                dek,
                kek,
                pending_kek: None,
            }),
            writer: Mutex::new(()),
            fail,
        })
    }

    fn keys(&self) -> RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the store, reopening it first if an earlier failure
    /// broke the handle.
    fn with_db<T>(&self, f: impl FnOnce(&Db) -> Result<T, StoreError>) -> Result<T, StoreError> {
        {
            let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
            if let Some(db) = guard.as_ref().filter(|d| !d.is_broken()) {
                return f(db);
            }
        }
        self.reopen()?;
        let guard = self.db.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(db) => f(db),
            None => Err(StoreError::Storage("the store is not open".into())),
        }
    }

    /// Closes a broken store handle and opens the file again: redb recovers
    /// the last commit, and the keys and index are rebuilt from it (a write
    /// whose failure came after its commit reached the disk is then
    /// present).
    fn reopen(&self) -> Result<(), StoreError> {
        let mut guard = self.db.write().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_some_and(|d| !d.is_broken()) {
            return Ok(());
        }
        // The old handle goes first: it holds the file's lock.
        *guard = None;
        let db = engine::open(&format::store_path(&self.state_dir), self.fail.clone())?;
        let header = format::read_header_row(&db)?;
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let (dek, kek) = unlock(&header, &keys.kek, keys.pending_kek.as_deref())?;
        let index = load_index(&db)?;
        *keys = Keys {
            header,
            dek,
            kek,
            pending_kek: None,
        };
        drop(keys);
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = index;
        *guard = Some(db);
        tracing::warn!("the vault store was reopened after a failure");
        Ok(())
    }

    pub fn vault_id(&self) -> [u8; 16] {
        self.keys().header.vault_id
    }

    /// The key provider the vault is wrapped for.
    pub fn provider_kind(&self) -> String {
        self.keys().header.provider_kind.clone()
    }

    pub fn dek_generation(&self) -> u64 {
        self.keys().header.dek_generation
    }

    /// Metadata of every secret in `scope`, sorted by name.
    pub fn list(&self, scope: Scope) -> Vec<SecretMeta> {
        self.index()
            .get(&scope)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Metadata of at most `limit` secrets of `scope` whose names sort after
    /// `after` (all of them from the start with `None`), sorted by name: a
    /// page of [`Self::list`].
    pub fn list_after(&self, scope: Scope, after: Option<&str>, limit: usize) -> Vec<SecretMeta> {
        let index = self.index();
        let Some(m) = index.get(&scope) else {
            return Vec::new();
        };
        let range = match after {
            Some(a) => {
                m.range::<str, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
            }
            None => m.range::<str, _>(..),
        };
        range.take(limit).map(|(_, v)| v.clone()).collect()
    }

    pub fn meta(&self, scope: Scope, name: &str) -> Option<SecretMeta> {
        self.index().get(&scope).and_then(|m| m.get(name)).cloned()
    }

    /// Number of secrets in `scope`.
    pub fn count_in(&self, scope: Scope) -> usize {
        self.index().get(&scope).map_or(0, BTreeMap::len)
    }

    /// Every scope that holds at least one secret, in order (whole-vault
    /// backups list them).
    pub fn scopes(&self) -> Vec<Scope> {
        self.index().keys().copied().collect()
    }

    /// Number of (user-scoped, system) records.
    pub fn count(&self) -> (usize, usize) {
        let index = self.index();
        let system = index.get(&Scope::System).map_or(0, BTreeMap::len);
        let all: usize = index.values().map(BTreeMap::len).sum();
        (all - system, system)
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies committed record changes to the index.
    fn index_apply(&self, scope: Scope, changes: Vec<(String, Option<SecretMeta>)>) {
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        let m = index.entry(scope).or_default();
        for (name, meta) in changes {
            match meta {
                Some(meta) => {
                    m.insert(name, meta);
                }
                None => {
                    m.remove(&name);
                }
            }
        }
        if m.is_empty() {
            index.remove(&scope);
        }
    }

    /// Stores a value; returns its new version. One transaction that
    /// rewrites the record's row only.
    pub fn put(
        &self,
        scope: Scope,
        name: &str,
        value: &SecretValue,
        meta: MetaUpdate,
        mode: PutMode,
    ) -> Result<u64, StoreError> {
        validate_name(name)?;
        let value_len = check_value(value)?;
        let key = record_key(scope, name);
        let _writer = self.lock_writer();
        let body = self.with_db(|db| {
            let keys = self.keys();
            engine::write(db, |txn| {
                let mut t = txn.open_table(RECORDS_TABLE).map_err(storage)?;
                let existing = t
                    .get(key.as_slice())
                    .map_err(storage)?
                    .map(|g| decode_body(g.value()))
                    .transpose()?;
                let body = next_body(&keys, scope, name, value, value_len, meta, mode, existing)?;
                t.insert(key.as_slice(), encode_body(&body)?.as_slice())
                    .map_err(storage)?;
                Ok(body)
            })
        })?;
        let version = body.version;
        self.index_apply(
            scope,
            vec![(name.into(), Some(meta_of(scope, name, &body)))],
        );
        Ok(version)
    }

    /// Upserts every entry in one transaction: all of them are stored, or
    /// none. Existing secrets keep their metadata.
    pub fn put_many(
        &self,
        scope: Scope,
        entries: Vec<(String, SecretValue)>,
    ) -> Result<usize, StoreError> {
        self.import(scope, entries, OnExisting::Replace, &MetaUpdate::default())
    }

    /// Stores every entry in one transaction, treating names that exist
    /// already as `existing` says and giving each `meta` (an existing
    /// secret keeps what `meta` leaves empty, as with [`Vault::put`]);
    /// returns how many were stored. All of them are stored, or none.
    pub fn import(
        &self,
        scope: Scope,
        entries: Vec<(String, SecretValue)>,
        existing: OnExisting,
        meta: &MetaUpdate,
    ) -> Result<usize, StoreError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let mut lens = Vec::with_capacity(entries.len());
        for (name, value) in &entries {
            validate_name(name)?;
            lens.push(check_value(value)?);
        }
        let _writer = self.lock_writer();
        let changes = self.with_db(|db| {
            let keys = self.keys();
            engine::write(db, |txn| {
                let mut t = txn.open_table(RECORDS_TABLE).map_err(storage)?;
                let mut changes = Vec::with_capacity(entries.len());
                for ((name, value), len) in entries.iter().zip(&lens) {
                    let key = record_key(scope, name);
                    let found = t
                        .get(key.as_slice())
                        .map_err(storage)?
                        .map(|g| decode_body(g.value()))
                        .transpose()?;
                    match (&found, existing) {
                        (Some(_), OnExisting::Refuse) => {
                            return Err(StoreError::AlreadyExists { name: name.clone() })
                        }
                        (Some(_), OnExisting::Skip) => continue,
                        _ => {}
                    }
                    let body = next_body(
                        &keys,
                        scope,
                        name,
                        value,
                        *len,
                        meta.clone(),
                        PutMode::Upsert,
                        found,
                    )?;
                    t.insert(key.as_slice(), encode_body(&body)?.as_slice())
                        .map_err(storage)?;
                    changes.push((name.clone(), Some(meta_of(scope, name, &body))));
                }
                Ok(changes)
            })
        })?;
        let count = changes.len();
        self.index_apply(scope, changes);
        Ok(count)
    }

    pub fn remove(&self, scope: Scope, name: &str) -> Result<(), StoreError> {
        let key = record_key(scope, name);
        let _writer = self.lock_writer();
        self.with_db(|db| {
            engine::write(db, |txn| {
                let mut t = txn.open_table(RECORDS_TABLE).map_err(storage)?;
                let removed = t.remove(key.as_slice()).map_err(storage)?.is_some();
                if removed {
                    Ok(())
                } else {
                    Err(StoreError::NotFound {
                        scope,
                        name: name.into(),
                    })
                }
            })
        })?;
        self.index_apply(scope, vec![(name.into(), None)]);
        Ok(())
    }

    /// A secret's plaintext, read from the store; [`StoreError::Tampered`]
    /// if its record fails authentication (or does not decode).
    pub fn decrypt(&self, scope: Scope, name: &str) -> Result<SecretValue, StoreError> {
        let key = record_key(scope, name);
        let row = self.with_db(|db| {
            engine::read(db, |txn| {
                let t = match txn.open_table(RECORDS_TABLE) {
                    Ok(t) => t,
                    Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                    Err(e) => return Err(storage(e)),
                };
                let row = t.get(key.as_slice()).map_err(storage)?;
                Ok(row.map(|g| g.value().to_vec()))
            })
        })?;
        let row = row.ok_or_else(|| StoreError::NotFound {
            scope,
            name: name.into(),
        })?;
        let body = decode_body(&row).map_err(|_| tampered(scope, name))?;
        let keys = self.keys();
        open_body(&keys.dek, &keys.header, scope, name, &body).map(SecretValue::from)
    }

    /// Replaces the DEK with a fresh one and re-seals every record under it,
    /// in one transaction. Any record that fails authentication aborts the
    /// rotation (nothing is written).
    pub fn rotate_dek(&mut self) -> Result<(), StoreError> {
        let new_dek = seal::random_key()?;
        // `&mut self`: no other operation runs, so no writer lock either.
        let header = self.with_db(|db| {
            let keys = self.keys();
            let old = &keys.header;
            let generation = old
                .dek_generation
                .checked_add(1)
                .ok_or_else(|| StoreError::Corrupt("key generation counter exhausted".into()))?;
            let header = HeaderBody {
                wrapped_dek: seal::wrap_dek(&keys.kek, &new_dek, &old.vault_id, generation)?,
                dek_generation: generation,
                ..old.clone()
            };
            let header_bytes = format::encode_versioned(&header)?;
            engine::write(db, |txn| {
                let mut t = txn.open_table(RECORDS_TABLE).map_err(storage)?;
                let mut resealed = Vec::new();
                for row in t.iter().map_err(storage)? {
                    let (k, v) = row.map_err(storage)?;
                    let key = k.value().to_vec();
                    let (scope, name) = format::parse_key(&key)?;
                    let mut body = decode_body(v.value()).map_err(|_| tampered(scope, &name))?;
                    let plain = open_body(&keys.dek, old, scope, &name, &body)?;
                    let aad =
                        seal::value_aad(&old.vault_id, generation, scope, &name, body.version);
                    body.sealed = seal::seal(&new_dek, &plain, &aad)?;
                    resealed.push((key, encode_body(&body)?));
                }
                for (key, body) in &resealed {
                    t.insert(key.as_slice(), body.as_slice()).map_err(storage)?;
                }
                let mut h = txn.open_table(format::HEADER_TABLE).map_err(storage)?;
                h.insert(format::HEADER_ROW, header_bytes.as_slice())
                    .map_err(storage)?;
                Ok(())
            })?;
            Ok(header)
        })?;
        sync_public_header(&self.state_dir, &header);
        let keys = self.keys.get_mut().unwrap_or_else(|p| p.into_inner());
        keys.header = header;
        keys.dek = new_dek;
        Ok(())
    }

    /// Wraps the DEK under a new KEK (and records the new provider).
    pub fn rekey(
        &mut self,
        new_kek: &Kek,
        provider_kind: &str,
        kdf: Option<KdfParams>,
    ) -> Result<(), StoreError> {
        let result = self.with_db(|db| {
            let keys = self.keys();
            let header = HeaderBody {
                wrapped_dek: seal::wrap_dek(
                    new_kek.as_bytes(),
                    &keys.dek,
                    &keys.header.vault_id,
                    keys.header.dek_generation,
                )?,
                provider_kind: provider_kind.into(),
                kdf,
                ..keys.header.clone()
            };
            let header_bytes = format::encode_versioned(&header)?;
            engine::write(db, |txn| {
                let mut h = txn.open_table(format::HEADER_TABLE).map_err(storage)?;
                h.insert(format::HEADER_ROW, header_bytes.as_slice())
                    .map_err(storage)?;
                Ok(())
            })?;
            Ok(header)
        });
        let keys = self.keys.get_mut().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(header) => {
                sync_public_header(&self.state_dir, &header);
                keys.header = header;
                keys.kek = copy_key(new_kek.as_bytes());
                Ok(())
            }
            Err(e) => {
                keys.pending_kek = Some(copy_key(new_kek.as_bytes()));
                Err(e)
            }
        }
    }

    /// Holds the writer lock and an open write transaction of the store, as
    /// a write in the middle of its commit does (tests).
    #[cfg(test)]
    pub(super) fn hold_writes(&self) -> (std::sync::MutexGuard<'_, ()>, redb::WriteTransaction) {
        let writer = self.lock_writer();
        let txn = self
            .with_db(|db| db.begin_write_for_test())
            .unwrap_or_else(|e| panic!("cannot begin a write: {e}"));
        (writer, txn)
    }

    /// Makes every later write to the store's file fail (tests).
    #[cfg(test)]
    pub(super) fn fail_writes(&self, fail: bool) {
        self.fail.set(fail);
    }
}
