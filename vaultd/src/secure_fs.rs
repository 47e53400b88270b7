//! Trusted files and durable writes.
//!
//! * [`check_secure_dir`] / [`check_secure_file`] refuse anything that a
//!   non-root user could have written or swapped: the path itself and every
//!   directory on the way to it must be root-owned and not group- or
//!   world-writable (root-owned sticky directories such as `/tmp` are
//!   accepted as ancestors).
//! * [`create_private_dir`] makes a `0700` directory.
//! * [`atomic_write`] and [`atomic_create`] put bytes on disk so that a crash
//!   or power loss leaves either the old file or the new one, never a mix:
//!   temporary file, `fsync`, `rename` (or `link`), `fsync` of the directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Permission bits that let someone other than the owner modify an entry.
const GROUP_OTHER_WRITE: u32 = 0o022;
/// The sticky bit: only an entry's owner may rename or delete it.
const STICKY: u32 = 0o1000;

#[derive(Debug, thiserror::Error)]
pub enum SecureFsError {
    #[error("cannot inspect {}: {source}", path.display())]
    Stat { path: PathBuf, source: io::Error },
    #[error("cannot resolve {}: {source}", path.display())]
    Resolve { path: PathBuf, source: io::Error },
    #[error("{} is owned by uid {uid}, not root", path.display())]
    NotRootOwned { path: PathBuf, uid: u32 },
    #[error("{} is writable by group or others (mode {mode:o})", path.display())]
    Writable { path: PathBuf, mode: u32 },
    #[error("{} is a symbolic link", path.display())]
    Symlink { path: PathBuf },
    #[error("{} is not a regular file", path.display())]
    NotRegularFile { path: PathBuf },
    #[error("{} is not a directory", path.display())]
    NotDirectory { path: PathBuf },
    #[error("{} is owned by uid {uid}, so it cannot be made private", path.display())]
    ForeignOwner { path: PathBuf, uid: u32 },
    #[error("cannot create directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot set permissions of {}: {source}", path.display())]
    Chmod { path: PathBuf, source: io::Error },
    #[error("{} has no file name", path.display())]
    NoFileName { path: PathBuf },
    #[error("cannot pick a temporary file name: {0}")]
    Random(getrandom::Error),
    #[error("cannot create temporary file {}: {source}", path.display())]
    CreateTemp { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot flush {} to disk: {source}", path.display())]
    Sync { path: PathBuf, source: io::Error },
    #[error("cannot replace {}: {source}", path.display())]
    Rename { path: PathBuf, source: io::Error },
    #[error("{} already exists", path.display())]
    Exists { path: PathBuf },
    #[error("cannot create {}: {source}", path.display())]
    Link { path: PathBuf, source: io::Error },
    #[error("cannot flush directory {} to disk: {source}", path.display())]
    SyncDir { path: PathBuf, source: io::Error },
}

type Result<T> = std::result::Result<T, SecureFsError>;

/// Refuses `path` unless it is a root-owned directory that only root can
/// write, reached through trusted directories only.
pub fn check_secure_dir(path: &Path) -> Result<()> {
    let meta = lstat(path)?;
    if meta.file_type().is_symlink() {
        return Err(SecureFsError::Symlink { path: path.into() });
    }
    if !meta.is_dir() {
        return Err(SecureFsError::NotDirectory { path: path.into() });
    }
    check_owner_and_mode(path, &meta)?;
    check_ancestors(path)
}

/// Refuses `path` unless it is a root-owned regular file (not a symlink)
/// that only root can write, reached through trusted directories only.
pub fn check_secure_file(path: &Path) -> Result<()> {
    let meta = lstat(path)?;
    if meta.file_type().is_symlink() {
        return Err(SecureFsError::Symlink { path: path.into() });
    }
    if !meta.is_file() {
        return Err(SecureFsError::NotRegularFile { path: path.into() });
    }
    check_owner_and_mode(path, &meta)?;
    check_ancestors(path)
}

/// Refuses `path`, which need not exist yet, unless every directory on
/// the way to it is trusted: what [`check_secure_dir`] demands of a
/// directory's ancestors, checked before the directory is created.
pub fn check_trusted_ancestors(path: &Path) -> Result<()> {
    check_ancestors(path)
}

fn lstat(path: &Path) -> Result<fs::Metadata> {
    fs::symlink_metadata(path).map_err(|source| SecureFsError::Stat {
        path: path.into(),
        source,
    })
}

fn check_owner_and_mode(path: &Path, meta: &fs::Metadata) -> Result<()> {
    if meta.uid() != 0 {
        return Err(SecureFsError::NotRootOwned {
            path: path.into(),
            uid: meta.uid(),
        });
    }
    if meta.mode() & GROUP_OTHER_WRITE != 0 {
        return Err(SecureFsError::Writable {
            path: path.into(),
            mode: meta.mode() & 0o7777,
        });
    }
    Ok(())
}

/// Checks every directory that a lookup of `path` passes through: each
/// prefix of the path as written (following symlinks, so the directory that
/// actually holds the next component is checked) and each prefix of the
/// resolved parent (the directories a symlink led to).
fn check_ancestors(path: &Path) -> Result<()> {
    let absolute = std::path::absolute(path).map_err(|source| SecureFsError::Resolve {
        path: path.into(),
        source,
    })?;
    let Some(parent) = absolute.parent() else {
        return Ok(()); // `/` itself has no ancestors.
    };
    for dir in prefixes(parent) {
        check_ancestor(&dir)?;
    }
    let resolved = fs::canonicalize(parent).map_err(|source| SecureFsError::Resolve {
        path: parent.into(),
        source,
    })?;
    for dir in prefixes(&resolved) {
        check_ancestor(&dir)?;
    }
    Ok(())
}

/// `/a/b/c` → `/`, `/a`, `/a/b`, `/a/b/c`.
fn prefixes(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut cur = PathBuf::new();
    for comp in path.components() {
        cur.push(comp.as_os_str());
        if !matches!(comp, Component::CurDir) {
            out.push(cur.clone());
        }
    }
    out
}

fn check_ancestor(dir: &Path) -> Result<()> {
    let meta = fs::metadata(dir).map_err(|source| SecureFsError::Stat {
        path: dir.into(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(SecureFsError::NotDirectory { path: dir.into() });
    }
    if meta.uid() != 0 {
        return Err(SecureFsError::NotRootOwned {
            path: dir.into(),
            uid: meta.uid(),
        });
    }
    if meta.mode() & GROUP_OTHER_WRITE != 0 && meta.mode() & STICKY == 0 {
        return Err(SecureFsError::Writable {
            path: dir.into(),
            mode: meta.mode() & 0o7777,
        });
    }
    Ok(())
}

/// `mkdir -p` whose last component is `0700` (created parents are `0755`).
/// An existing directory owned by this process's user is `chmod`ed to `0700`;
/// one owned by anybody else, or a non-directory, is refused.
pub fn create_private_dir(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|source| SecureFsError::CreateDir {
                path: parent.into(),
                source,
            })?;
    }
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(SecureFsError::CreateDir {
                path: path.into(),
                source,
            })
        }
    }
    let meta = lstat(path)?;
    if meta.file_type().is_symlink() {
        return Err(SecureFsError::Symlink { path: path.into() });
    }
    if !meta.is_dir() {
        return Err(SecureFsError::NotDirectory { path: path.into() });
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(SecureFsError::ForeignOwner {
            path: path.into(),
            uid: meta.uid(),
        });
    }
    if meta.mode() & 0o7777 != 0o700 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(|source| {
            SecureFsError::Chmod {
                path: path.into(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically and durably: after `Ok`, the new
/// contents survive a crash or power loss; after `Err` (or a crash at any
/// point) the old file is intact. The file gets exactly `mode`.
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = TempFile::create(path, bytes, mode)?;
    fs::rename(&tmp.path, path).map_err(|source| SecureFsError::Rename {
        path: path.into(),
        source,
    })?;
    tmp.disarm();
    sync_parent(path)
}

/// Like [`atomic_write`], but refuses to replace an existing file
/// ([`SecureFsError::Exists`]): the complete file appears under `path` in one
/// step (`link(2)`), or not at all.
pub fn atomic_create(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = TempFile::create(path, bytes, mode)?;
    match fs::hard_link(&tmp.path, path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(SecureFsError::Exists { path: path.into() })
        }
        Err(source) => {
            return Err(SecureFsError::Link {
                path: path.into(),
                source,
            })
        }
    }
    // Dropping `tmp` unlinks the temporary name; `path` keeps the inode.
    drop(tmp);
    sync_parent(path)
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_parent(path: &Path) -> Result<()> {
    let dir = parent_dir(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| SecureFsError::SyncDir {
            path: dir.into(),
            source,
        })
}

/// A fully written and synced temporary file beside its target; removed on
/// drop unless disarmed (after a successful rename).
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    fn create(target: &Path, bytes: &[u8], mode: u32) -> Result<Self> {
        let name = target
            .file_name()
            .ok_or_else(|| SecureFsError::NoFileName {
                path: target.into(),
            })?;
        let mut rand = [0u8; 8];
        getrandom::getrandom(&mut rand).map_err(SecureFsError::Random)?;
        let suffix: String = rand.iter().map(|b| format!("{b:02x}")).collect();
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp.{}.{suffix}", std::process::id()));
        let path = parent_dir(target).join(tmp_name);

        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|source| SecureFsError::CreateTemp {
                path: path.clone(),
                source,
            })?;
        let tmp = TempFile { path, armed: true };
        // The umask may have removed bits; set exactly what was asked for.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|source| SecureFsError::Chmod {
                path: tmp.path.clone(),
                source,
            })?;
        file.write_all(bytes)
            .map_err(|source| SecureFsError::Write {
                path: tmp.path.clone(),
                source,
            })?;
        file.sync_all().map_err(|source| SecureFsError::Sync {
            path: tmp.path.clone(),
            source,
        })?;
        Ok(tmp)
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// These tests check ownership rules that only root can set up; they
    /// fail, not pass, when run as another user (the suite runs as root).
    fn require_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root: it creates files owned by other users"
        );
    }

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("securefs")
            .tempdir_in("/tmp")
            .unwrap()
    }

    #[test]
    fn trusted_dir_and_file_pass() {
        require_root();
        let dir = tempdir();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        chmod(&file, 0o644);
        check_secure_dir(dir.path()).unwrap();
        check_secure_file(&file).unwrap();
    }

    #[test]
    fn writable_file_and_dir_are_refused() {
        require_root();
        let dir = tempdir();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        chmod(&file, 0o664);
        let e = check_secure_file(&file).unwrap_err();
        assert!(matches!(e, SecureFsError::Writable { .. }), "{e}");
        assert!(e.to_string().contains(&file.display().to_string()));
        chmod(dir.path(), 0o707);
        assert!(matches!(
            check_secure_dir(dir.path()),
            Err(SecureFsError::Writable { .. })
        ));
    }

    #[test]
    fn foreign_owner_is_refused() {
        require_root();
        let dir = tempdir();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        nix::unistd::chown(&file, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let e = check_secure_file(&file).unwrap_err();
        assert!(
            matches!(e, SecureFsError::NotRootOwned { uid: 65534, .. }),
            "{e}"
        );
    }

    #[test]
    fn symlinks_and_wrong_types_are_refused() {
        require_root();
        let dir = tempdir();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        let link = dir.path().join("l");
        symlink(&file, &link).unwrap();
        assert!(matches!(
            check_secure_file(&link),
            Err(SecureFsError::Symlink { .. })
        ));
        assert!(matches!(
            check_secure_file(dir.path()),
            Err(SecureFsError::NotRegularFile { .. })
        ));
        assert!(matches!(
            check_secure_dir(&file),
            Err(SecureFsError::NotDirectory { .. })
        ));
        assert!(matches!(
            check_secure_file(&dir.path().join("missing")),
            Err(SecureFsError::Stat { .. })
        ));
    }

    #[test]
    fn untrusted_ancestors_are_refused_but_sticky_ones_pass() {
        require_root();
        let dir = tempdir();
        let mid = dir.path().join("mid");
        let leaf = mid.join("leaf");
        fs::create_dir_all(&leaf).unwrap();
        chmod(&mid, 0o777);
        let e = check_secure_dir(&leaf).unwrap_err();
        assert!(
            matches!(&e, SecureFsError::Writable { path, .. } if path == &mid),
            "{e}"
        );
        chmod(&mid, 0o1777);
        check_secure_dir(&leaf).unwrap();
        // A sticky directory is fine as an ancestor, not as the target.
        assert!(check_secure_dir(&mid).is_err());
        // Non-root-owned ancestor.
        chmod(&mid, 0o755);
        nix::unistd::chown(&mid, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        assert!(matches!(
            check_secure_dir(&leaf),
            Err(SecureFsError::NotRootOwned { .. })
        ));
    }

    #[test]
    fn ancestors_reached_through_a_symlink_are_checked() {
        require_root();
        let dir = tempdir();
        let open = dir.path().join("open");
        let target = open.join("target");
        fs::create_dir_all(&target).unwrap();
        chmod(&open, 0o777);
        let link = dir.path().join("link");
        symlink(&target, &link).unwrap();
        let file = link.join("f");
        fs::write(&file, b"x").unwrap();
        let e = check_secure_file(&file).unwrap_err();
        assert!(matches!(e, SecureFsError::Writable { .. }), "{e}");
    }

    #[test]
    fn create_private_dir_makes_0700_and_tightens_existing() {
        let dir = tempdir();
        let p = dir.path().join("a/b/c");
        create_private_dir(&p).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&p), 0o700);
        assert_eq!(mode(&dir.path().join("a/b")), 0o755);
        chmod(&p, 0o755);
        create_private_dir(&p).unwrap();
        assert_eq!(mode(&p), 0o700);
        let f = dir.path().join("file");
        fs::write(&f, b"").unwrap();
        assert!(matches!(
            create_private_dir(&f),
            Err(SecureFsError::NotDirectory { .. })
        ));
    }

    #[test]
    fn atomic_write_replaces_with_exact_mode_and_leaves_no_temp() {
        let dir = tempdir();
        let p = dir.path().join("data.bin");
        atomic_write(&p, b"one", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"one");
        atomic_write(&p, b"two", 0o640).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o640);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("data.bin")]);
    }

    #[test]
    fn atomic_write_failure_leaves_old_file_and_no_temp() {
        let dir = tempdir();
        // Renaming a file over a directory fails after the temp file exists.
        let p = dir.path().join("target");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("inside"), b"keep").unwrap();
        let e = atomic_write(&p, b"new", 0o600).unwrap_err();
        assert!(matches!(e, SecureFsError::Rename { .. }), "{e}");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("target")]);
        // Missing directory: nothing to clean up, clean error.
        let gone = dir.path().join("gone/file");
        assert!(matches!(
            atomic_write(&gone, b"x", 0o600),
            Err(SecureFsError::CreateTemp { .. })
        ));
    }

    #[test]
    fn atomic_create_refuses_to_overwrite() {
        let dir = tempdir();
        let p = dir.path().join("key");
        atomic_create(&p, b"first", 0o600).unwrap();
        let e = atomic_create(&p, b"second", 0o600).unwrap_err();
        assert!(matches!(e, SecureFsError::Exists { .. }), "{e}");
        assert_eq!(fs::read(&p).unwrap(), b"first");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
