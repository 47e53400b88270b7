//! Starting the runner: a private directory per run, owned by the run uid,
//! and `aivault-runner` started under that uid with no supplementary groups,
//! a clean environment, and the command's open executable as fd 3.

use std::os::fd::AsRawFd;
use std::os::unix::fs::{lchown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::RunSettings;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot prepare the run directory: {0}")]
    Dir(std::io::Error),
    #[error("cannot start the runner: {0}")]
    Start(std::io::Error),
}

/// A run's private directories: `<runs>/<uid>/{home,tmp}`, all 0700 and
/// owned by the run uid.
#[derive(Debug, Clone)]
pub struct RunDirs {
    pub root: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
}

/// Creates a root-owned 0700 directory (mode set at creation: no chmod that
/// could follow a symlink).
fn root_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(path)
}

/// Hands a directory to the run uid without following symlinks.
fn give(path: &Path, uid: u32) -> std::io::Result<()> {
    lchown(path, Some(uid), Some(uid))
}

/// Creates the run's directories (removing any stale ones of the same uid).
pub fn make_dirs(runs_dir: &Path, uid: u32) -> Result<RunDirs, SpawnError> {
    if !runs_dir.exists() {
        std::fs::create_dir_all(runs_dir).map_err(SpawnError::Dir)?;
    }
    // Run uids must be able to traverse to their own directory, nothing more.
    std::fs::set_permissions(runs_dir, std::fs::Permissions::from_mode(0o711))
        .map_err(SpawnError::Dir)?;
    let root = runs_dir.join(uid.to_string());
    if std::fs::symlink_metadata(&root).is_ok() {
        std::fs::remove_dir_all(&root).map_err(SpawnError::Dir)?;
    }
    let dirs = RunDirs {
        home: root.join("home"),
        tmp: root.join("tmp"),
        root,
    };
    // Everything stays root-owned until the last step, and the run's root
    // directory is handed over last, so the run uid never controls a
    // directory in which root is still creating or changing entries.
    root_dir(&dirs.root).map_err(SpawnError::Dir)?;
    root_dir(&dirs.home).map_err(SpawnError::Dir)?;
    root_dir(&dirs.tmp).map_err(SpawnError::Dir)?;
    give(&dirs.home, uid).map_err(SpawnError::Dir)?;
    give(&dirs.tmp, uid).map_err(SpawnError::Dir)?;
    give(&dirs.root, uid).map_err(SpawnError::Dir)?;
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

/// Starts the runner as `uid`:`uid` (std clears supplementary groups when
/// root sets a uid), in its home, with an empty environment.
pub fn start_runner(
    settings: &RunSettings,
    uid: u32,
    dirs: &RunDirs,
    command: &std::fs::File,
) -> Result<Child, SpawnError> {
    let mut cmd = Command::new(&settings.runner);
    cmd.arg("--socket")
        .arg(&settings.runner_socket)
        .env_clear()
        .current_dir(&dirs.home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .uid(uid)
        .gid(uid);
    crate::sys::inherit_as_fd3(&mut cmd, command.as_raw_fd());
    cmd.spawn().map_err(SpawnError::Start)
}
