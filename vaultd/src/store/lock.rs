//! The state directory lock: one writer (a running daemon or an offline
//! `aivaultd rekey`) at a time.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::StoreError;

/// Name of the lock file inside the state directory.
pub const LOCK_FILE: &str = "lock";

/// Holds an exclusive `flock` on `<state_dir>/lock`; released on drop.
pub struct StateLock {
    path: PathBuf,
    _lock: Flock<File>,
}

impl fmt::Debug for StateLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateLock")
            .field("path", &self.path)
            .finish()
    }
}

/// Takes the state directory lock without waiting;
/// [`StoreError::InUse`] if another process (or another open of the lock
/// file in this one) holds it.
pub fn lock_state_dir(state_dir: &Path) -> Result<StateLock, StoreError> {
    let path = state_dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|source| StoreError::Lock {
            path: path.clone(),
            source,
        })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(StateLock { path, _lock: lock }),
        Err((_, Errno::EWOULDBLOCK)) => Err(StoreError::InUse),
        Err((_, errno)) => Err(StoreError::Lock {
            path,
            source: errno.into(),
        }),
    }
}
