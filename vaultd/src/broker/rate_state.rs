//! The broker's rate-limit counters ([`aivault_broker::rate::Limiter`]),
//! held by the daemon and kept in the state directory, so that a limit
//! holds across requests, across the broker processes that make them and
//! across daemon restarts.
//!
//! The file (`broker-rate`, 0600) is a magic header and the postcard-encoded
//! limiter. Every admitted request that a limit counts replaces it
//! atomically (temporary file, fsync, rename, fsync of the directory)
//! before the request goes ahead; if that fails the request is refused and
//! nothing is counted. It is read once, when the daemon starts; a file that
//! cannot be read or decoded stops the start (deleting it resets every
//! limit, which is root's choice, not an accident's).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aivault_broker::rate::{Key, Limited, Limiter};

/// The file's name in the state directory.
pub const FILE: &str = "broker-rate";
const MAGIC: &[u8; 8] = b"AVRATE01";
/// Larger than any real state (a few dozen bytes per active caller).
const MAX_FILE: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RateStateError {
    #[error("cannot read the rate-limit state {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the rate-limit state {} is damaged ({why}); remove it to reset every limit", path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error("cannot save the rate-limit state {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: crate::secure_fs::SecureFsError,
    },
}

/// The counters and where they are kept.
#[derive(Debug)]
pub struct RateState {
    path: PathBuf,
    limiter: Mutex<Limiter>,
}

impl RateState {
    /// Loads the counters kept in `state_dir`, or starts with none.
    pub fn open(state_dir: &Path) -> Result<RateState, RateStateError> {
        let path = state_dir.join(FILE);
        let limiter = match read(&path)? {
            None => Limiter::default(),
            Some(bytes) => decode(&bytes).map_err(|why| RateStateError::Corrupt {
                path: path.clone(),
                why,
            })?,
        };
        Ok(RateState {
            path,
            limiter: Mutex::new(limiter),
        })
    }

    /// Counts one request at `now` (seconds since the epoch) against
    /// `limits`, durably, or says which limit refused it. With no limit
    /// nothing is counted or written. `Err` means the count could not be
    /// saved: the request must be refused (nothing was counted).
    pub fn admit(
        &self,
        now: u64,
        limits: &[(Key, u32)],
    ) -> Result<Result<(), Limited>, RateStateError> {
        if limits.is_empty() {
            return Ok(Ok(()));
        }
        let mut current = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = current.clone();
        if let Err(limited) = next.admit(now, limits) {
            return Ok(Err(limited));
        }
        next.prune(now);
        crate::secure_fs::atomic_write(&self.path, &encode(&next), 0o600).map_err(|source| {
            RateStateError::Write {
                path: self.path.clone(),
                source,
            }
        })?;
        *current = next;
        Ok(Ok(()))
    }
}

fn read(path: &Path) -> Result<Option<Vec<u8>>, RateStateError> {
    use std::io::Read;
    let fail = |source| RateStateError::Read {
        path: path.into(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    Ok(Some(bytes))
}

fn encode(l: &Limiter) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    // A map of plain keys and integers always encodes.
    out.extend(postcard::to_stdvec(l).unwrap_or_default());
    out
}

fn decode(bytes: &[u8]) -> Result<Limiter, String> {
    if bytes.len() as u64 > MAX_FILE {
        return Err(format!("larger than {MAX_FILE} bytes"));
    }
    let body = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or("not a rate-limit state file")?;
    postcard::from_bytes(body).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap() -> Key {
        Key::Capability("openai".into())
    }

    #[test]
    fn a_limit_holds_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let t = 60 * 5000 + 5;
        let state = RateState::open(dir.path()).unwrap();
        let alice = Key::Caller("openai".into(), 1000);
        for _ in 0..2 {
            assert_eq!(
                state.admit(t, &[(cap(), 5), (alice.clone(), 2)]).unwrap(),
                Ok(())
            );
        }
        assert!(state
            .admit(t, &[(cap(), 5), (alice.clone(), 2)])
            .unwrap()
            .is_err());
        drop(state);
        // The daemon starts again: the counts are those it saved.
        let again = RateState::open(dir.path()).unwrap();
        let e = again
            .admit(t + 1, &[(cap(), 5), (alice.clone(), 2)])
            .unwrap()
            .unwrap_err();
        assert_eq!((e.key, e.limit), (alice, 2));
        let bob = Key::Caller("openai".into(), 1001);
        for _ in 0..3 {
            assert_eq!(
                again.admit(t + 2, &[(cap(), 5), (bob.clone(), 9)]).unwrap(),
                Ok(())
            );
        }
        // Five in all now, two before the restart and three after.
        assert!(again
            .admit(t + 3, &[(cap(), 5), (bob, 9)])
            .unwrap()
            .is_err());
        let mode = std::fs::metadata(dir.path().join(FILE)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
    }

    #[test]
    fn no_limit_writes_nothing_and_a_damaged_file_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let state = RateState::open(dir.path()).unwrap();
        assert_eq!(state.admit(60, &[]).unwrap(), Ok(()));
        assert!(!dir.path().join(FILE).exists());
        std::fs::write(dir.path().join(FILE), b"AVRATE01\xff\xff\xff").unwrap();
        let e = RateState::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
        std::fs::write(dir.path().join(FILE), b"something else").unwrap();
        assert!(RateState::open(dir.path()).is_err());
    }

    #[test]
    fn a_count_that_cannot_be_saved_refuses_and_counts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        std::fs::create_dir(&state_dir).unwrap();
        let state = RateState::open(&state_dir).unwrap();
        // The file's place is taken by a directory: it cannot be replaced.
        std::fs::create_dir(state_dir.join(FILE)).unwrap();
        assert!(state.admit(60, &[(cap(), 1)]).is_err());
        std::fs::remove_dir(state_dir.join(FILE)).unwrap();
        // The failed request used up nothing.
        assert_eq!(state.admit(61, &[(cap(), 1)]).unwrap(), Ok(()));
    }
}
