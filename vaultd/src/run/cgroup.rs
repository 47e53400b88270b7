//! One cgroup v2 per `isolation = "caller"` run, so the run can be ended
//! completely although its processes share the caller's uid.
//!
//! A dynamic-uid run is torn down by killing every process of its uid. A
//! caller-mode run cannot be: the caller's other processes have that uid
//! too. Instead the runner is placed, before it executes anything, in a
//! fresh cgroup `<daemon's cgroup>/aivault-runs/run-<daemon pid>-<n>`; every
//! process it starts stays there (moving out needs write access to the
//! root-owned `cgroup.procs` of a common ancestor). Teardown writes `1` to
//! `cgroup.kill`, waits until `cgroup.events` says `populated 0`, and
//! removes the directory.
//!
//! Without a cgroup2 mount the daemon can write (or on kernels before 5.14,
//! which lack `cgroup.kill`) caller-mode runs are refused: never a run
//! without a way to end it.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The directory below the daemon's own cgroup that holds run cgroups.
pub const RUNS_GROUP: &str = "aivault-runs";
/// How long teardown waits for a killed cgroup to empty.
const EMPTY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup2 file system is mounted")]
    NoCgroup2,
    #[error("the daemon's cgroup v2 membership is unknown")]
    OwnCgroup,
    #[error("{0} is not on a cgroup2 file system")]
    NotCgroup2(PathBuf),
    #[error("cannot create a cgroup under {0}: {1}")]
    Create(PathBuf, io::Error),
    #[error("the kernel lacks cgroup.kill (Linux 5.14 or later is needed)")]
    NoKill,
    #[error("cannot open cgroup.procs of the run's cgroup: {0}")]
    Procs(io::Error),
}

/// The run cgroups of this daemon: where they go and which exist.
#[derive(Debug, Default)]
pub struct RunCgroups {
    next: AtomicU64,
    swept: AtomicBool,
    /// The `aivault-runs` directory, once found usable.
    base: Mutex<Option<PathBuf>>,
    active: Mutex<BTreeSet<PathBuf>>,
}

/// A run's cgroup; created empty, filled by the runner's `pre_exec`.
#[derive(Debug)]
pub struct RunCgroup {
    id: u64,
    path: PathBuf,
    /// `cgroup.procs`, opened by root for writing: the child writes `0` to
    /// it (itself) before it drops privileges and executes the runner.
    procs: File,
}

/// Mount point (and mount root) of the first cgroup2 file system in
/// `/proc/self/mountinfo` text. Fields: id parent major:minor root mount
/// options… `-` fstype source superoptions.
pub fn cgroup2_mount(mountinfo: &str) -> Option<(PathBuf, String)> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split_whitespace().next() != Some("cgroup2") {
            return None;
        }
        let mut fields = mount.split_whitespace();
        let root = fields.nth(3)?;
        let point = fields.next()?;
        Some((PathBuf::from(unescape(point)), unescape(root)))
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push(((d[0] - b'0') << 6) | ((d[1] - b'0') << 3) | (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup v2 path of this process (the `0::` line of `/proc/self/cgroup`).
pub fn own_cgroup(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// `<mount>/<own cgroup relative to the mount root>/aivault-runs`.
pub fn runs_base(mount: &Path, mount_root: &str, own: &str) -> PathBuf {
    let relative = if mount_root == "/" {
        own
    } else {
        own.strip_prefix(mount_root).unwrap_or(own)
    };
    let mut base = mount.to_path_buf();
    for part in relative.split('/').filter(|p| !p.is_empty() && *p != "..") {
        base.push(part);
    }
    base.join(RUNS_GROUP)
}

fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

fn mkdir(path: &Path) -> io::Result<()> {
    match std::fs::create_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

impl RunCgroups {
    /// Finds (and creates) the `aivault-runs` directory, or says why
    /// caller-mode runs cannot be ended completely here.
    pub fn base(&self) -> Result<PathBuf, CgroupError> {
        let mut cached = self.base.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(base) = cached.as_ref() {
            return Ok(base.clone());
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let (mount, root) = cgroup2_mount(&mountinfo).ok_or(CgroupError::NoCgroup2)?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|text| own_cgroup(&text))
            .ok_or(CgroupError::OwnCgroup)?;
        let base = runs_base(&mount, &root, &own);
        let parent = base.parent().unwrap_or(&mount).to_path_buf();
        if !is_cgroup2(&parent) {
            return Err(CgroupError::NotCgroup2(parent));
        }
        mkdir(&base).map_err(|e| CgroupError::Create(parent, e))?;
        if !is_cgroup2(&base) {
            return Err(CgroupError::NotCgroup2(base));
        }
        *cached = Some(base.clone());
        Ok(base)
    }

    /// Creates an empty cgroup for one run.
    pub fn create(&self) -> Result<RunCgroup, CgroupError> {
        let base = self.base()?;
        if !self.swept.swap(true, Ordering::Relaxed) {
            sweep_stale(&base);
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let path = base.join(format!("run-{}-{id}", std::process::id()));
        if path.exists() {
            // Left by an earlier daemon with our pid; end it first.
            end(&path);
        }
        std::fs::create_dir(&path).map_err(|e| CgroupError::Create(base.clone(), e))?;
        if !path.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&path);
            return Err(CgroupError::NoKill);
        }
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(path.join("cgroup.procs"))
            .map_err(|e| {
                let _ = std::fs::remove_dir(&path);
                CgroupError::Procs(e)
            })?;
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.clone());
        Ok(RunCgroup { id, path, procs })
    }

    /// The run cgroups that exist now (for shutdown: see [`end_path`]).
    pub fn active(&self) -> Vec<PathBuf> {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn forget(&self, path: &Path) {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(path);
    }

    /// Kills every process of `group`, waits until it is empty and removes
    /// it. False (and the cgroup stays) if it does not empty in time.
    pub fn end(&self, group: RunCgroup) -> bool {
        let RunCgroup { path, procs, .. } = group;
        drop(procs);
        let ended = end(&path);
        if ended {
            self.forget(&path);
        }
        ended
    }
}

impl RunCgroup {
    /// A number unique among this daemon's runs.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open `cgroup.procs`, for the child to join before it executes.
    pub fn procs(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.procs.as_fd()
    }
}

/// Whether `cgroup.events` says no process is left.
fn empty(path: &Path) -> bool {
    std::fs::read_to_string(path.join("cgroup.events"))
        .is_ok_and(|events| events.lines().any(|l| l == "populated 0"))
}

/// `cgroup.kill`, wait for `populated 0` (bounded), `rmdir`. False if the
/// cgroup does not empty in time.
pub fn end_path(path: &Path) -> bool {
    end(path)
}

fn end(path: &Path) -> bool {
    let kill = std::fs::OpenOptions::new()
        .write(true)
        .open(path.join("cgroup.kill"))
        .and_then(|mut f| f.write_all(b"1"));
    if let Err(e) = kill {
        if e.kind() == io::ErrorKind::NotFound {
            return true; // already gone
        }
        tracing::error!(error = %e, cgroup = %path.display(), "cannot kill the run's cgroup");
    }
    let deadline = Instant::now() + EMPTY_TIMEOUT;
    let mut pause = Duration::from_micros(200);
    loop {
        if empty(path) {
            match std::fs::remove_dir(path) {
                Ok(()) => return true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
                Err(e) if Instant::now() >= deadline => {
                    tracing::error!(error = %e, cgroup = %path.display(), "cannot remove the run's cgroup");
                    return false;
                }
                Err(_) => {}
            }
        }
        if Instant::now() >= deadline {
            tracing::error!(cgroup = %path.display(), "processes of a finished run survive cgroup.kill");
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Ends run cgroups left by daemons that no longer run (a crash, `kill -9`).
fn sweep_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let owner = name
            .to_str()
            .and_then(|n| n.strip_prefix("run-"))
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok());
        if let Some(pid) = owner {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                tracing::warn!(cgroup = %entry.path().display(), "ending a stale run cgroup");
                end(&entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const UNIFIED: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
27 21 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn the_cgroup2_mount_is_found_in_hybrid_and_unified_layouts() {
        assert_eq!(
            cgroup2_mount(HYBRID),
            Some(("/sys/fs/cgroup/unified".into(), "/".into()))
        );
        assert_eq!(
            cgroup2_mount(UNIFIED),
            Some(("/sys/fs/cgroup".into(), "/".into()))
        );
        assert_eq!(cgroup2_mount(&HYBRID.replace("cgroup2", "cgroup")), None);
        let escaped = "41 31 0:38 / /mnt/cg\\040v2 rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(escaped),
            Some(("/mnt/cg v2".into(), "/".into()))
        );
    }

    #[test]
    fn the_runs_group_lies_below_the_daemons_own_cgroup() {
        let own = own_cgroup("1:name=systemd:/x\n0::/system.slice/aivaultd.service\n");
        assert_eq!(own.as_deref(), Some("/system.slice/aivaultd.service"));
        assert_eq!(
            runs_base(Path::new("/sys/fs/cgroup"), "/", own.as_deref().unwrap()),
            PathBuf::from("/sys/fs/cgroup/system.slice/aivaultd.service/aivault-runs")
        );
        assert_eq!(
            runs_base(Path::new("/sys/fs/cgroup/unified"), "/", "/"),
            PathBuf::from("/sys/fs/cgroup/unified/aivault-runs")
        );
        // A mount of a subtree: the path is relative to the mount's root.
        assert_eq!(
            runs_base(Path::new("/cg"), "/machine", "/machine/a"),
            PathBuf::from("/cg/a/aivault-runs")
        );
        assert_eq!(own_cgroup("1:name=systemd:/\n"), None);
    }
}
