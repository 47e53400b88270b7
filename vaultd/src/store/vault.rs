//! [`Vault`]: the open vault and every operation on it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use super::format::{self, StoredRecord, VaultFile, FORMAT_VERSION};
use super::seal::{self, Key, KEY_LEN};
use super::types::{
    validate_name, MetaUpdate, PutMode, Scope, SecretMeta, SecretValue, VaultHeader,
};
use super::{StoreError, MAX_VALUE_LEN};
use crate::keys::{KdfParams, Kek};

/// The first DEK generation of a new vault.
const FIRST_GENERATION: u64 = 1;

/// An open vault: the file's contents, the DEK, and the KEK (needed to
/// re-wrap a rotated DEK). Both keys are wiped on drop.
pub struct Vault {
    path: PathBuf,
    /// Records are kept sorted by `(scope, name)`, without duplicates.
    file: VaultFile,
    dek: Key,
    kek: Key,
    vault_id: [u8; 16],
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("path", &self.path)
            .field("provider_kind", &self.file.provider_kind)
            .field("dek_generation", &self.file.dek_generation)
            .field("records", &self.file.records.len())
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

fn meta_of(r: &StoredRecord) -> SecretMeta {
    SecretMeta {
        scope: r.scope,
        name: r.name.clone(),
        version: r.version,
        created: r.created,
        updated: r.updated,
        description: r.description.clone(),
        tags: r.tags.clone(),
        expires: r.expires,
        value_len: r.value_len,
    }
}

fn find(records: &[StoredRecord], scope: Scope, name: &str) -> Result<usize, usize> {
    records.binary_search_by(|r| (r.scope, r.name.as_str()).cmp(&(scope, name)))
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

/// Opens one record's value, checking it against the recorded length.
fn open_record(
    dek: &[u8; KEY_LEN],
    file: &VaultFile,
    r: &StoredRecord,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let aad = seal::value_aad(
        &file.vault_id,
        file.dek_generation,
        r.scope,
        &r.name,
        r.version,
    );
    match seal::open(dek, &r.sealed, &aad) {
        Some(plain) if plain.len() == r.value_len as usize => Ok(plain),
        _ => Err(StoreError::Tampered {
            scope: r.scope,
            name: r.name.clone(),
        }),
    }
}

/// Sorts records by `(scope, name)` and refuses duplicates.
fn normalize(mut file: VaultFile) -> Result<VaultFile, StoreError> {
    file.records
        .sort_by(|a, b| (a.scope, a.name.as_str()).cmp(&(b.scope, b.name.as_str())));
    if file
        .records
        .windows(2)
        .any(|w| w[0].scope == w[1].scope && w[0].name == w[1].name)
    {
        return Err(StoreError::Corrupt("two records share a name".into()));
    }
    Ok(file)
}

/// Applies one put to `file` (in memory); returns the new version.
fn apply_put(
    dek: &[u8; KEY_LEN],
    file: &mut VaultFile,
    scope: Scope,
    name: &str,
    value: &SecretValue,
    meta: MetaUpdate,
    mode: PutMode,
) -> Result<u64, StoreError> {
    validate_name(name)?;
    let value_len = check_value(value)?;
    let slot = find(&file.records, scope, name);
    let existing = slot.ok().map(|i| &file.records[i]);
    match (mode, existing) {
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
            meta.description.or_else(|| old.description.clone()),
            if meta.tags.is_empty() {
                old.tags.clone()
            } else {
                meta.tags
            },
            meta.expires.or(old.expires),
        ),
        None => (1, None, meta.description, meta.tags, meta.expires),
    };
    let now = now();
    let (created, updated) = (created.unwrap_or(now), now);
    let aad = seal::value_aad(&file.vault_id, file.dek_generation, scope, name, version);
    let record = StoredRecord {
        scope,
        name: name.into(),
        version,
        created,
        updated,
        description,
        tags,
        expires,
        value_len,
        sealed: seal::seal(dek, value.as_bytes(), &aad)?,
    };
    match slot {
        Ok(i) => file.records[i] = record,
        Err(i) => file.records.insert(i, record),
    }
    Ok(version)
}

impl Vault {
    /// Whether `state_dir` holds a vault file (or anything in its place).
    pub fn exists(state_dir: &Path) -> bool {
        format::vault_path(state_dir).symlink_metadata().is_ok()
    }

    /// The parts of the vault readable without a key (the daemon needs the
    /// KDF parameters before it can unlock).
    pub fn read_header(state_dir: &Path) -> Result<VaultHeader, StoreError> {
        let file = format::read_file(&format::vault_path(state_dir))?;
        Ok(VaultHeader {
            format_version: FORMAT_VERSION,
            vault_id: file.vault_id,
            provider_kind: file.provider_kind,
            kdf: file.kdf,
            dek_generation: file.dek_generation,
            records: file.records.len(),
        })
    }

    /// Creates an empty vault with a fresh DEK. Refuses to replace an
    /// existing vault file.
    pub fn init(
        state_dir: &Path,
        kek: &Kek,
        provider_kind: &str,
        kdf: Option<KdfParams>,
    ) -> Result<Vault, StoreError> {
        let path = format::vault_path(state_dir);
        if Self::exists(state_dir) {
            return Err(StoreError::Exists { path });
        }
        let vault_id: [u8; 16] = seal::random()?;
        let dek = seal::random_key()?;
        let file = VaultFile {
            vault_id,
            provider_kind: provider_kind.into(),
            kdf,
            wrapped_dek: seal::wrap_dek(kek.as_bytes(), &dek, &vault_id, FIRST_GENERATION)?,
            dek_generation: FIRST_GENERATION,
            records: Vec::new(),
        };
        format::create_file(&path, &file)?;
        Ok(Vault {
            path,
            file,
            dek,
            kek: copy_key(kek.as_bytes()),
            vault_id,
        })
    }

    /// Opens the vault; [`StoreError::WrongKey`] if `kek` is not its key.
    pub fn open(state_dir: &Path, kek: &Kek) -> Result<Vault, StoreError> {
        let path = format::vault_path(state_dir);
        let file = format::read_file(&path)?;
        let dek = seal::unwrap_dek(
            kek.as_bytes(),
            &file.wrapped_dek,
            &file.vault_id,
            file.dek_generation,
        )?;
        let file = normalize(file)?;
        Ok(Vault {
            path,
            vault_id: file.vault_id,
            file,
            dek,
            kek: copy_key(kek.as_bytes()),
        })
    }

    pub fn vault_id(&self) -> [u8; 16] {
        self.vault_id
    }

    /// The key provider the vault is wrapped for.
    pub fn provider_kind(&self) -> &str {
        &self.file.provider_kind
    }

    pub fn dek_generation(&self) -> u64 {
        self.file.dek_generation
    }

    /// Metadata of every secret in `scope`, sorted by name.
    pub fn list(&self, scope: Scope) -> Vec<SecretMeta> {
        self.file
            .records
            .iter()
            .filter(|r| r.scope == scope)
            .map(meta_of)
            .collect()
    }

    /// One page of [`Vault::list`]: at most `max` secrets of `scope` whose
    /// names sort after `after` (from the first, for `None`), in name order.
    pub fn list_after(&self, scope: Scope, after: Option<&str>, max: usize) -> Vec<SecretMeta> {
        let start = match after {
            None => find(&self.file.records, scope, "").unwrap_or_else(|i| i),
            Some(name) => find(&self.file.records, scope, name).map_or_else(|i| i, |i| i + 1),
        };
        self.file.records[start..]
            .iter()
            .take_while(|r| r.scope == scope)
            .take(max)
            .map(meta_of)
            .collect()
    }

    pub fn meta(&self, scope: Scope, name: &str) -> Option<SecretMeta> {
        find(&self.file.records, scope, name)
            .ok()
            .map(|i| meta_of(&self.file.records[i]))
    }

    /// Every scope that holds at least one secret, in order (whole-vault
    /// backups list them).
    pub fn scopes(&self) -> Vec<Scope> {
        let mut scopes: Vec<Scope> = self.file.records.iter().map(|r| r.scope).collect();
        scopes.dedup();
        scopes
    }

    /// Number of (user-scoped, system) records.
    pub fn count(&self) -> (usize, usize) {
        let system = self
            .file
            .records
            .iter()
            .filter(|r| r.scope == Scope::System)
            .count();
        (self.file.records.len() - system, system)
    }

    /// Writes `file` durably, then makes it the in-memory state.
    fn commit(&mut self, file: VaultFile) -> Result<(), StoreError> {
        format::write_file(&self.path, &file)?;
        self.file = file;
        Ok(())
    }

    /// Stores a value; returns its new version.
    pub fn put(
        &mut self,
        scope: Scope,
        name: &str,
        value: &SecretValue,
        meta: MetaUpdate,
        mode: PutMode,
    ) -> Result<u64, StoreError> {
        let mut file = self.file.clone();
        let version = apply_put(&self.dek, &mut file, scope, name, value, meta, mode)?;
        self.commit(file)?;
        Ok(version)
    }

    /// Upserts every entry in one write: all of them are stored, or none.
    /// Existing secrets keep their metadata.
    pub fn put_many(
        &mut self,
        scope: Scope,
        entries: Vec<(String, SecretValue)>,
    ) -> Result<usize, StoreError> {
        self.put_many_with(scope, entries, &MetaUpdate::default())
    }

    /// [`Vault::put_many`] giving every entry `meta` (an existing secret
    /// keeps what `meta` leaves empty, as with [`Vault::put`]).
    pub fn put_many_with(
        &mut self,
        scope: Scope,
        entries: Vec<(String, SecretValue)>,
        meta: &MetaUpdate,
    ) -> Result<usize, StoreError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let mut file = self.file.clone();
        for (name, value) in &entries {
            apply_put(
                &self.dek,
                &mut file,
                scope,
                name,
                value,
                meta.clone(),
                PutMode::Upsert,
            )?;
        }
        self.commit(file)?;
        Ok(entries.len())
    }

    pub fn remove(&mut self, scope: Scope, name: &str) -> Result<(), StoreError> {
        let i = find(&self.file.records, scope, name).map_err(|_| StoreError::NotFound {
            scope,
            name: name.into(),
        })?;
        let mut file = self.file.clone();
        file.records.remove(i);
        self.commit(file)
    }

    /// A secret's plaintext; [`StoreError::Tampered`] if its record fails
    /// authentication.
    pub fn decrypt(&self, scope: Scope, name: &str) -> Result<SecretValue, StoreError> {
        let i = find(&self.file.records, scope, name).map_err(|_| StoreError::NotFound {
            scope,
            name: name.into(),
        })?;
        open_record(&self.dek, &self.file, &self.file.records[i]).map(SecretValue::from)
    }

    /// Replaces the DEK with a fresh one and re-seals every record under it.
    /// Any record that fails authentication aborts the rotation (nothing is
    /// written).
    pub fn rotate_dek(&mut self) -> Result<(), StoreError> {
        let new_dek = seal::random_key()?;
        let generation = self
            .file
            .dek_generation
            .checked_add(1)
            .ok_or_else(|| StoreError::Corrupt("key generation counter exhausted".into()))?;
        let mut file = self.file.clone();
        file.dek_generation = generation;
        file.wrapped_dek = seal::wrap_dek(&self.kek, &new_dek, &self.vault_id, generation)?;
        for (new, old) in file.records.iter_mut().zip(&self.file.records) {
            let plain = open_record(&self.dek, &self.file, old)?;
            let aad = seal::value_aad(
                &self.vault_id,
                generation,
                old.scope,
                &old.name,
                old.version,
            );
            new.sealed = seal::seal(&new_dek, &plain, &aad)?;
        }
        self.commit(file)?;
        self.dek = new_dek;
        Ok(())
    }

    /// Wraps the DEK under a new KEK (and records the new provider).
    pub fn rekey(
        &mut self,
        new_kek: &Kek,
        provider_kind: &str,
        kdf: Option<KdfParams>,
    ) -> Result<(), StoreError> {
        let mut file = self.file.clone();
        file.wrapped_dek = seal::wrap_dek(
            new_kek.as_bytes(),
            &self.dek,
            &self.vault_id,
            file.dek_generation,
        )?;
        file.provider_kind = provider_kind.into();
        file.kdf = kdf;
        self.commit(file)?;
        self.kek = copy_key(new_kek.as_bytes());
        Ok(())
    }
}
