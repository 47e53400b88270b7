//! Creating the store, and moving an old single-file vault into it.
//!
//! Both build the complete store under a temporary name in the state
//! directory and only then give it its name, so `vault.redb` exists only
//! once it holds a whole vault:
//! * a new vault appears with `link(2)` (never replacing one);
//! * a migration reads `vault.bin` (format 1), writes its header and every
//!   record, byte for byte, in one transaction, reads the store back and
//!   compares it with the old file record by record, renames it into
//!   place, and then **removes** `vault.bin`. No key is needed: the old
//!   records are sealed with exactly the associated data the store uses.
//!
//! The old file is not kept as a backup: it would keep every secret removed
//! since, sealed under a data key that a retired KEK still opens, which
//! would undo what `secrets rm`, DEK rotation and rekey promise. A
//! migration interrupted at any point before the rename leaves `vault.bin`
//! untouched (and a temporary file that the next attempt removes); one
//! interrupted after it leaves a verified store, and the next start removes
//! the old file once it has read that the file holds what the store holds.
//! An old file that holds something else (an older daemon, after a
//! downgrade, wrote it again) is never deleted: the start is refused,
//! naming both files.

use std::fs;
use std::io;
use std::path::Path;

use super::format::{self, VaultFile};
use super::{engine, legacy, StoreError};

/// Temporary name of a store being created.
const CREATING: &str = "vault.redb.creating";
/// Temporary name of a store being migrated into.
const MIGRATING: &str = "vault.redb.migrating";

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(engine::storage(format!(
            "cannot remove {}: {e}",
            path.display()
        ))),
    }
}

/// Writes `file` into a fresh store at `tmp` and checks that it reads back
/// exactly.
fn build(tmp: &Path, file: &VaultFile) -> Result<(), StoreError> {
    remove_if_present(tmp)?;
    let db = engine::create_new(tmp)?;
    format::write_all_to(&db, file)?;
    let back = format::read_all_from(&db)?;
    if back != *file {
        return Err(StoreError::Corrupt(
            "the new store does not read back as written".into(),
        ));
    }
    Ok(())
}

/// Creates the store for a new vault; [`StoreError::Exists`] if one is
/// there.
pub(super) fn create_store(state_dir: &Path, file: &VaultFile) -> Result<(), StoreError> {
    let tmp = state_dir.join(CREATING);
    let path = format::store_path(state_dir);
    let result = build(&tmp, file).and_then(|()| match fs::hard_link(&tmp, &path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(StoreError::Exists { path: path.clone() })
        }
        Err(e) => Err(engine::storage(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    });
    let removed = remove_if_present(&tmp);
    result?;
    removed?;
    engine::sync_dir(state_dir)?;
    format::write_public_header(state_dir, &format::header_of(file))
}

/// Sorts the records by `(scope, name)`; refuses two records of one name
/// (the old reader refused such a file too).
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

/// See the module documentation. `Ok(Some(n))`: `n` records were moved;
/// `Ok(None)`: there was nothing to migrate.
pub(super) fn migrate(state_dir: &Path) -> Result<Option<usize>, StoreError> {
    let store = format::store_path(state_dir);
    let old = legacy::legacy_path(state_dir);
    let old_present = old.symlink_metadata().is_ok();
    if store.symlink_metadata().is_ok() {
        if old_present {
            // A migration renamed its verified store into place and was
            // stopped before it removed the old file; the old file then
            // holds exactly what the store holds. Anything else (an older
            // daemon that wrote the old file again after a downgrade) is
            // refused, not deleted.
            let file = normalize(legacy::read_file(&old)?)?;
            let db = engine::open(&store, engine::FailSwitch::default())?;
            let in_store = format::read_all_from(&db)?;
            drop(db);
            if in_store != file {
                return Err(StoreError::Corrupt(format!(
                    "both {} and {} exist and hold different vaults (was an older aivaultd run after the upgrade?); move the one not to keep out of {}",
                    old.display(),
                    store.display(),
                    state_dir.display()
                )));
            }
            remove_if_present(&old)?;
            engine::sync_dir(state_dir)?;
            tracing::info!("removed the old vault file left by an interrupted migration");
        }
        return Ok(None);
    }
    if !old_present {
        return Ok(None);
    }
    let file = normalize(legacy::read_file(&old)?)?;
    let tmp = state_dir.join(MIGRATING);
    if let Err(e) = build(&tmp, &file) {
        let _ = remove_if_present(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &store)
        .map_err(|e| engine::storage(format!("cannot rename {} into place: {e}", tmp.display())))?;
    engine::sync_dir(state_dir)?;
    format::write_public_header(state_dir, &format::header_of(&file))?;
    remove_if_present(&old)?;
    engine::sync_dir(state_dir)?;
    tracing::info!(
        records = file.records.len(),
        "migrated the vault from the single-file format (vault.bin, removed) to the store (vault.redb)"
    );
    Ok(Some(file.records.len()))
}
