//! The pool of per-run uids.
//!
//! Every run gets a uid (and a gid of the same number) from a reserved range
//! that no account uses, like systemd's `DynamicUser=`. Before a uid is
//! leased the pool checks that the user and group databases do not know it
//! and that no process runs under it; a lease returns the uid to the pool
//! when dropped, after the run's processes are gone.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

/// Default first uid: just above the range systemd reserves for container
/// uid mappings (524288–1879048191), far from any account.
pub const DEFAULT_FIRST_UID: u32 = 0x7000_0000;
/// Default number of uids in the range.
pub const DEFAULT_COUNT: u32 = 65_536;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("the run uid range {first}+{count} is invalid")]
    BadRange { first: u32, count: u32 },
    #[error("uid {0} in the run uid range belongs to an account; choose another range")]
    Taken(u32),
    #[error("no free uid in the run range (all {0} in use)")]
    Exhausted(u32),
}

#[derive(Debug)]
struct Inner {
    first: u32,
    count: u32,
    leased: BTreeSet<u32>,
    /// Uids already checked against NSS and `/proc`, handed out first so the
    /// checks happen off the run's critical path.
    ready: VecDeque<u32>,
    next: u32,
}

/// Hands out uids; cheap to clone.
#[derive(Debug, Clone)]
pub struct UidPool {
    inner: Arc<Mutex<Inner>>,
}

/// A leased uid; returns to the pool on drop.
#[derive(Debug)]
pub struct UidLease {
    uid: u32,
    pool: UidPool,
}

impl UidLease {
    pub fn uid(&self) -> u32 {
        self.uid
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        let mut inner = self.pool.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.leased.remove(&self.uid);
    }
}

/// Whether the user or group database knows this id.
fn known_to_nss(id: u32) -> bool {
    use nix::unistd::{Gid, Group, Uid, User};
    matches!(User::from_uid(Uid::from_raw(id)), Ok(Some(_)))
        || matches!(Group::from_gid(Gid::from_raw(id)), Ok(Some(_)))
}

/// The real uid in a `/proc/<pid>/status` text.
fn real_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
}

fn is_zombie(status: &str) -> bool {
    status
        .lines()
        .any(|l| l.starts_with("State:") && l.contains('Z'))
}

/// `/proc/<pid>` entries with the owning (effective) uid of each process.
/// A non-dumpable process's entry is root's; run processes cannot make
/// themselves so (the runner's seccomp filter refuses `PR_SET_DUMPABLE`,
/// `no_new_privs` rules out set-uid programs).
fn processes() -> impl Iterator<Item = (std::fs::DirEntry, u32)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| e.metadata().ok().map(|m| (e, m.uid())))
}

/// Effective uids of every running process (a stat per process, no reads).
pub fn running_uids() -> BTreeSet<u32> {
    processes().map(|(_, uid)| uid).collect()
}

/// Whether any non-zombie process runs under `uid`. Run processes never
/// change uid (no setuid binaries under `no_new_privs`), so the owner of
/// `/proc/<pid>` finds them; only those candidates are read for their state.
pub fn live_processes_of(uid: u32) -> bool {
    processes()
        .filter(|(_, owner)| *owner == uid)
        .any(|(e, _)| {
            std::fs::read_to_string(e.path().join("status"))
                .is_ok_and(|status| real_uid(&status) == Some(uid) && !is_zombie(&status))
        })
}

/// Tasks (processes and their threads) whose `/proc/<pid>` is owned by `uid`.
pub fn tasks_of(uid: u32) -> u64 {
    processes()
        .filter(|(_, owner)| *owner == uid)
        .map(|(e, _)| {
            std::fs::read_dir(e.path().join("task")).map_or(1, |tasks| tasks.count() as u64)
        })
        .sum()
}

impl UidPool {
    /// A pool over `first .. first + count`. Refuses a range that wraps,
    /// touches uid 0 or 65534/`nobody`, or whose first and last ids belong to
    /// accounts (each id is checked again when leased).
    pub fn new(first: u32, count: u32) -> Result<Self, PoolError> {
        let last = first.checked_add(count.saturating_sub(1));
        let bad = count == 0
            || first == 0
            || last.is_none_or(|l| l >= u32::MAX - 1 || (first..=l).contains(&65_534));
        if bad {
            return Err(PoolError::BadRange { first, count });
        }
        for id in [first, first + count - 1] {
            if known_to_nss(id) {
                return Err(PoolError::Taken(id));
            }
        }
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                first,
                count,
                leased: BTreeSet::new(),
                ready: VecDeque::new(),
                next: 0,
            })),
        })
    }

    /// Leases a uid that is not leased, not known to the user or group
    /// database, and not used by any running process: one checked ahead of
    /// time by [`UidPool::refill`] if there is one, else checked now.
    pub fn acquire(&self) -> Result<UidLease, PoolError> {
        {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            while let Some(uid) = inner.ready.pop_front() {
                if inner.leased.insert(uid) {
                    return Ok(UidLease {
                        uid,
                        pool: self.clone(),
                    });
                }
            }
        }
        let running = running_uids();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..inner.count {
            let uid = inner.first + inner.next;
            inner.next = (inner.next + 1) % inner.count;
            if inner.leased.contains(&uid) || running.contains(&uid) || known_to_nss(uid) {
                continue;
            }
            inner.leased.insert(uid);
            return Ok(UidLease {
                uid,
                pool: self.clone(),
            });
        }
        Err(PoolError::Exhausted(inner.count))
    }

    /// Checks candidate uids until `target` are ready to lease, once fewer
    /// than half of `target` are: one `/proc` scan then serves several
    /// leases. Slow (NSS and the scan), so the daemon calls it on a blocking
    /// thread after each run rather than in a run's path.
    pub fn refill(&self, target: usize) {
        let candidates: Vec<u32> = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if inner.ready.len() * 2 > target {
                return;
            }
            let want = target
                .saturating_sub(inner.ready.len())
                .min(inner.count as usize);
            let mut picked = Vec::with_capacity(want);
            for _ in 0..inner.count {
                if picked.len() >= want {
                    break;
                }
                let uid = inner.first + inner.next;
                inner.next = (inner.next + 1) % inner.count;
                if !inner.leased.contains(&uid) && !inner.ready.contains(&uid) {
                    picked.push(uid);
                }
            }
            picked
        };
        if candidates.is_empty() {
            return;
        }
        let running = running_uids();
        let verified: Vec<u32> = candidates
            .into_iter()
            .filter(|uid| !running.contains(uid) && !known_to_nss(*uid))
            .collect();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for uid in verified {
            if !inner.leased.contains(&uid) && !inner.ready.contains(&uid) {
                inner.ready.push_back(uid);
            }
        }
    }

    /// Whether `id` lies in the reserved run range (as a uid or gid).
    pub fn in_range(&self, id: u32) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        id >= inner.first && id - inner.first < inner.count
    }

    /// The uids leased now.
    pub fn leased_uids(&self) -> Vec<u32> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .leased
            .iter()
            .copied()
            .collect()
    }

    /// How many checked uids wait to be leased.
    pub fn ready(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ready
            .len()
    }

    /// How many uids are leased now.
    pub fn leased(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .leased
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_distinct_and_return_on_drop() {
        let pool = UidPool::new(DEFAULT_FIRST_UID, 3).unwrap();
        let a = pool.acquire().unwrap();
        let b = pool.acquire().unwrap();
        let c = pool.acquire().unwrap();
        assert_ne!(a.uid(), b.uid());
        assert_ne!(b.uid(), c.uid());
        assert_eq!(pool.acquire().unwrap_err(), PoolError::Exhausted(3));
        drop(b);
        assert_eq!(pool.leased(), 2);
        assert!(pool.acquire().is_ok());
    }

    #[test]
    fn ranges_touching_accounts_or_special_ids_are_refused() {
        assert!(matches!(
            UidPool::new(0, 10),
            Err(PoolError::BadRange { .. })
        ));
        assert!(matches!(
            UidPool::new(65_530, 10),
            Err(PoolError::BadRange { .. })
        ));
        assert!(matches!(
            UidPool::new(u32::MAX - 5, 10),
            Err(PoolError::BadRange { .. })
        ));
        // uid 1 (daemon/bin on Debian) is an account.
        assert_eq!(UidPool::new(1, 1).unwrap_err(), PoolError::Taken(1));
    }

    #[test]
    fn the_real_uid_and_zombie_state_are_read_from_status() {
        let status = "Name:\tx\nState:\tS (sleeping)\nUid:\t1879048200\t1879048200\t1879048200\t1879048200\n";
        assert_eq!(real_uid(status), Some(1_879_048_200));
        assert!(!is_zombie(status));
        assert!(is_zombie("State:\tZ (zombie)\nUid:\t5\t5\t5\t5\n"));
        assert_eq!(real_uid("Name:\tx\n"), None);
    }

    #[test]
    fn refilled_uids_are_leased_first_and_never_twice() {
        let pool = UidPool::new(DEFAULT_FIRST_UID + 100, 4).unwrap();
        pool.refill(3);
        assert_eq!(pool.ready(), 3);
        let a = pool.acquire().unwrap();
        pool.refill(3);
        assert_eq!(pool.ready(), 2, "no scan while more than half are ready");
        let b = pool.acquire().unwrap();
        let c = pool.acquire().unwrap();
        let d = pool.acquire().unwrap();
        let mut uids = vec![a.uid(), b.uid(), c.uid(), d.uid()];
        uids.sort_unstable();
        uids.dedup();
        assert_eq!(uids.len(), 4, "four distinct leases from a pool of four");
        pool.refill(3);
        assert!(
            pool.acquire().is_err(),
            "nothing free while all four are leased"
        );
    }

    #[test]
    fn uids_of_running_processes_are_skipped() {
        // Our own uid is running; a pool whose only id is it can never lease.
        let me = nix::unistd::getuid().as_raw();
        assert!(running_uids().contains(&me));
    }
}
