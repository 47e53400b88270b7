//! Starting the runner: a private directory per run, owned by the run's
//! uid, and `aivault-runner` started under the run's identity (a fresh uid
//! with no supplementary groups, or in caller mode the caller's uid, gid
//! and account groups, inside the run's cgroup) with a clean environment.
//! The command's executable reaches the runner later, with its job.

use std::os::fd::BorrowedFd;
use std::os::unix::fs::{lchown, PermissionsExt};
use std::path::{Path, PathBuf};

use super::RunSettings;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot prepare the run directory: {0}")]
    Dir(std::io::Error),
    #[error("cannot start the runner: {0}")]
    Start(#[from] crate::jail::JailError),
    #[error("the runner socket's path is not valid UTF-8")]
    SocketPath,
}

/// A run's private directories: `<runs>/<name>/{home,tmp}`, all 0700 and
/// owned by the run's uid and gid. `<name>` is the run uid for a
/// dynamic-uid run (unique while leased) and `caller-<n>` in caller mode.
#[derive(Debug, Clone)]
pub struct RunDirs {
    pub root: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
    /// Where the caller's working directory is mounted, in the runner's
    /// own mount namespace only (made only for a run that has one; in the
    /// daemon's namespace it stays an empty directory).
    pub work: PathBuf,
}

impl RunDirs {
    /// The directories of run `name` below `runs_dir` (not created).
    pub fn named(runs_dir: &Path, name: &str) -> Self {
        let root = runs_dir.join(name);
        RunDirs {
            home: root.join("home"),
            tmp: root.join("tmp"),
            work: root.join("work"),
            root,
        }
    }
}

/// Creates a root-owned 0700 directory (mode set at creation: no chmod that
/// could follow a symlink).
fn root_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(path)
}

/// Hands a directory to the run's uid and gid without following symlinks.
fn give(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    lchown(path, Some(uid), Some(gid))
}

/// Creates the run's directories (removing any stale ones of the same
/// name), with `work` (root's, empty: a mount point) if `work`.
pub fn make_dirs(
    runs_dir: &Path,
    name: &str,
    uid: u32,
    gid: u32,
    work: bool,
) -> Result<RunDirs, SpawnError> {
    if !runs_dir.exists() {
        std::fs::create_dir_all(runs_dir).map_err(SpawnError::Dir)?;
    }
    // Run uids must be able to traverse to their own directory, nothing more.
    std::fs::set_permissions(runs_dir, std::fs::Permissions::from_mode(0o711))
        .map_err(SpawnError::Dir)?;
    let dirs = RunDirs::named(runs_dir, name);
    if std::fs::symlink_metadata(&dirs.root).is_ok() {
        std::fs::remove_dir_all(&dirs.root).map_err(SpawnError::Dir)?;
    }
    // Everything stays root-owned until the last step, and the run's root
    // directory is handed over last, so the run uid never controls a
    // directory in which root is still creating or changing entries.
    root_dir(&dirs.root).map_err(SpawnError::Dir)?;
    root_dir(&dirs.home).map_err(SpawnError::Dir)?;
    root_dir(&dirs.tmp).map_err(SpawnError::Dir)?;
    if work {
        root_dir(&dirs.work).map_err(SpawnError::Dir)?;
    }
    give(&dirs.home, uid, gid).map_err(SpawnError::Dir)?;
    give(&dirs.tmp, uid, gid).map_err(SpawnError::Dir)?;
    give(&dirs.root, uid, gid).map_err(SpawnError::Dir)?;
    Ok(dirs)
}

/// Removes a run's directories.
pub fn remove_dirs(dirs: &RunDirs) {
    if let Err(e) = std::fs::remove_dir_all(&dirs.root) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::error!(error = %e, dir = %dirs.root.display(), "cannot remove run directory");
        }
    }
}

/// At start-up, removes what runs of an earlier daemon left in `runs_dir`
/// (one killed before it could tear them down): each entry named by a uid
/// for which `in_range` holds, that is a directory (not a symbolic link)
/// owned by that very uid. Nothing else is touched, and `runs_dir` is
/// swept only if it is a root-owned directory itself. The removal does not
/// follow symbolic links below either (`remove_dir_all` unlinks them).
/// Returns how many directories were removed.
pub fn sweep_stale_dirs(runs_dir: &Path, in_range: impl Fn(u32) -> bool) -> usize {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(runs_dir) {
        Ok(m) if m.is_dir() && m.uid() == 0 => {}
        Ok(_) => {
            tracing::warn!(dir = %runs_dir.display(), "the runs directory is not a root-owned directory; not sweeping it");
            return 0;
        }
        Err(_) => return 0,
    }
    let Ok(entries) = std::fs::read_dir(runs_dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let Some(uid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // `DirEntry::metadata` does not follow a symbolic link.
        let stale = entry
            .metadata()
            .is_ok_and(|m| m.is_dir() && m.uid() == uid && in_range(uid));
        if !stale {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::error!(error = %e, uid, "cannot remove a stale run directory");
            }
        }
    }
    if removed > 0 {
        tracing::warn!(
            removed,
            "removed run directories an earlier daemon left behind"
        );
    }
    removed
}

/// Asks the jail host to start the runner as `who` (joining the run's
/// cgroup first if `cgroup` is its `cgroup.procs`), in its home, with an
/// empty environment, stdin and stdout on `/dev/null`; with the caller's
/// working directory mounted on `dirs.work` if `workdir` is given (and the
/// caller's ids to show as the run's, for a fresh uid).
pub fn start_runner(
    jail: &crate::jail::JailHost,
    settings: &RunSettings,
    who: &crate::sys::ChildIdentity,
    cgroup: Option<BorrowedFd<'_>>,
    dirs: &RunDirs,
    workdir: Option<(&super::workdir::Workdir, Option<(u32, u32)>)>,
) -> Result<crate::jail::Jailed, SpawnError> {
    let socket = settings
        .runner_socket
        .to_str()
        .ok_or(SpawnError::SocketPath)?;
    let request = crate::jail::SpawnRequest {
        kind: crate::jail::JailKind::Runner,
        uid: who.uid,
        gid: who.gid,
        groups: who.groups.clone(),
        cwd: dirs.home.clone(),
        args: vec!["--socket".into(), socket.into()],
        join_cgroup: false,
        workdir: workdir.map(|(w, caller)| crate::jail::WorkdirRequest {
            target: dirs.work.clone(),
            caller,
            writable: w.writable(),
        }),
        control: false,
    };
    Ok(jail.spawn(request, cgroup, workdir.map(|(w, _)| w.fd()))?)
}
