//! The storage engine under the vault: a redb database in one file.
//!
//! Every write is one transaction committed with `Durability::Immediate`
//! and two-phase commit: when [`write`] returns `Ok` the change is on disk,
//! and a crash at any point leaves the previous commit intact (the next
//! open after a crash checks the file and rebuilds redb's allocator state,
//! a walk of the file; a clean close saves it). Read transactions see a
//! snapshot and never wait for a writer.
//!
//! redb reports an I/O failure once and then refuses every later operation
//! on that handle; a caught panic inside it (it asserts on some corrupt
//! files) is treated the same way. [`Db::is_broken`] says so, and the vault
//! reopens the file before its next operation ([`super::Vault`]).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(test)]
use std::sync::Arc;

use redb::backends::FileBackend;
use redb::{ReadTransaction, StorageBackend, WriteTransaction};

use super::StoreError;

/// Mode of the store and of every file of the vault: root's only.
pub const FILE_MODE: u32 = 0o600;

/// redb's page cache. The store's working set is small (names, metadata,
/// sealed values of at most 64 KiB); redb's default is 1 GiB.
const CACHE_BYTES: usize = 16 << 20;

/// Largest `vault.header` read.
const MAX_SMALL_FILE: u64 = 64 << 10;

/// Tests make a store's writes fail with this; outside tests it is empty
/// and never fails anything. `Default` is a switch no test has touched.
#[derive(Clone, Default, Debug)]
pub(super) struct FailSwitch(#[cfg(test)] Arc<AtomicBool>);

impl FailSwitch {
    #[cfg(test)]
    pub(super) fn set(&self, fail: bool) {
        self.0.store(fail, Ordering::Release);
    }

    #[cfg(test)]
    fn failing(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    #[cfg(not(test))]
    fn failing(&self) -> bool {
        false
    }
}

/// An open store.
pub(super) struct Db {
    inner: redb::Database,
    broken: AtomicBool,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("broken", &self.is_broken())
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Whether an I/O failure or an internal panic made this handle
    /// unusable; the file must be reopened.
    pub(super) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// A write transaction left open by the caller (tests).
    #[cfg(test)]
    pub(super) fn begin_write_for_test(&self) -> Result<WriteTransaction, StoreError> {
        self.inner.begin_write().map_err(storage)
    }

    fn mark_broken(&self) {
        self.broken.store(true, Ordering::Release);
    }
}

/// The file under redb: a plain `FileBackend` (which holds an exclusive
/// `flock` on the file, so a second opener gets [`StoreError::InUse`]); in
/// tests, one whose writes can be made to fail.
#[derive(Debug)]
struct Backend {
    file: FileBackend,
    fail: FailSwitch,
}

impl Backend {
    fn check(&self) -> io::Result<()> {
        if self.fail.failing() {
            return Err(io::Error::other("injected write failure"));
        }
        Ok(())
    }
}

impl StorageBackend for Backend {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, io::Error> {
        self.file.read(offset, len)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.check()?;
        self.file.set_len(len)
    }

    fn sync_data(&self, eventual: bool) -> Result<(), io::Error> {
        self.check()?;
        self.file.sync_data(eventual)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.check()?;
        self.file.write(offset, data)
    }
}

/// An engine failure as a store error (the message names no value: redb's
/// errors carry none).
pub(super) fn storage(e: impl fmt::Display) -> StoreError {
    StoreError::Storage(e.to_string())
}

fn database_error(e: redb::DatabaseError) -> StoreError {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse,
        e => storage(e),
    }
}

fn panicked() -> StoreError {
    StoreError::Corrupt("the store failed an internal consistency check".into())
}

enum Mode {
    Existing,
    CreateNew,
    Either,
}

fn open_file(path: &Path, mode: Mode) -> Result<File, StoreError> {
    let mut o = OpenOptions::new();
    o.read(true)
        .write(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW);
    match mode {
        Mode::Existing => {}
        Mode::CreateNew => {
            o.create_new(true);
        }
        Mode::Either => {
            o.create(true);
        }
    }
    o.open(path).map_err(|source| match source.kind() {
        io::ErrorKind::AlreadyExists => StoreError::Exists { path: path.into() },
        _ => StoreError::Read {
            path: path.into(),
            source,
        },
    })
}

fn open_with(path: &Path, mode: Mode, fail: FailSwitch) -> Result<Db, StoreError> {
    let file = open_file(path, mode)?;
    let backend = Backend {
        file: FileBackend::new(file).map_err(database_error)?,
        fail,
    };
    let opened = catch_unwind(AssertUnwindSafe(|| {
        redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create_with_file_format_v3(true)
            .create_with_backend(backend)
    }))
    .map_err(|_| panicked())?;
    Ok(Db {
        inner: opened.map_err(database_error)?,
        broken: AtomicBool::new(false),
    })
}

/// A copy of the store read into memory, opened there: whatever redb
/// writes while opening it (a recovery, its open marker) stays in memory,
/// so inspecting a vault changes nothing on disk and needs no lock the
/// running daemon holds.
pub(super) fn open_snapshot(path: &Path) -> Result<Db, StoreError> {
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
    let backend = redb::backends::InMemoryBackend::new();
    backend.set_len(bytes.len() as u64).map_err(storage)?;
    backend.write(0, &bytes).map_err(storage)?;
    drop(bytes);
    let opened = catch_unwind(AssertUnwindSafe(|| {
        redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(backend)
    }))
    .map_err(|_| panicked())?;
    Ok(Db {
        inner: opened.map_err(database_error)?,
        broken: AtomicBool::new(false),
    })
}

/// Opens an existing store (after a crash, redb recovers the last commit).
pub(super) fn open(path: &Path, fail: FailSwitch) -> Result<Db, StoreError> {
    open_with(path, Mode::Existing, fail)
}

/// Creates a store file that must not exist yet, mode `0600`.
pub(super) fn create_new(path: &Path) -> Result<Db, StoreError> {
    open_with(path, Mode::CreateNew, FailSwitch::default())
}

/// Opens the store, creating an empty one if the file is missing.
pub(super) fn open_or_create(path: &Path) -> Result<Db, StoreError> {
    open_with(path, Mode::Either, FailSwitch::default())
}

/// Runs `f` in a read transaction (a snapshot of the last commit).
pub(super) fn read<T>(
    db: &Db,
    f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let run = || -> Result<T, StoreError> {
        let txn = db.inner.begin_read().map_err(storage)?;
        f(&txn)
    };
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Err(e @ StoreError::Storage(_))) => {
            db.mark_broken();
            Err(e)
        }
        Ok(r) => r,
        Err(_) => {
            db.mark_broken();
            Err(panicked())
        }
    }
}

/// Runs `f` in a write transaction and commits it durably; if `f` fails,
/// the transaction is aborted and nothing is written.
pub(super) fn write<T>(
    db: &Db,
    f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let run = || -> Result<T, StoreError> {
        let mut txn = db.inner.begin_write().map_err(storage)?;
        txn.set_durability(redb::Durability::Immediate);
        // Two phases (data and commit slot, fsync, then the slot flip,
        // fsync): the slot in force is always one whose pages all reached
        // the disk, whatever its checksum says, so no crafted value can
        // make a torn commit pass for a whole one. Not quick-repair: it
        // writes the allocator state with every commit, bytes that grow
        // with the file; recovery after a crash walks the file instead.
        txn.set_two_phase_commit(true);
        let out = f(&txn)?;
        txn.commit().map_err(storage)?;
        Ok(out)
    };
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(Err(e @ StoreError::Storage(_))) => {
            db.mark_broken();
            Err(e)
        }
        Ok(r) => r,
        Err(_) => {
            db.mark_broken();
            Err(panicked())
        }
    }
}

/// Reads a small file (not following a symlink in its place).
pub(super) fn read_small_file(path: &Path) -> Result<Vec<u8>, StoreError> {
    let read_err = |source| StoreError::Read {
        path: path.into(),
        source,
    };
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(read_err)?;
    let mut bytes = Vec::new();
    f.take(MAX_SMALL_FILE)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    Ok(bytes)
}

/// `fsync` of a directory, after a rename, link or unlink in it.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| storage(format!("cannot flush {} to disk: {e}", dir.display())))
}
