//! From a command name to an opened, trusted executable.
//!
//! [`resolve_command`] never consults the caller's `PATH`: a name without `/`
//! is looked up in the policy's trusted search path only, and a name with `/`
//! must be absolute. The path is canonicalized (symbolic links resolved),
//! then the file must be a regular, executable, root-owned file that is not
//! group- or world-writable and not set-user/group-id, and every directory
//! above it must be root-owned and not group- or world-writable — sticky
//! directories such as `/tmp` are refused too. The file is then opened
//! (`O_RDONLY | O_CLOEXEC | O_NOFOLLOW`), the checks are repeated on the open
//! descriptor (`fstat`, same device and inode), and the sha256 is computed
//! from that descriptor. The daemon executes the same open file, so nothing
//! can be swapped in between the check and the run.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Bits that let anyone but the owner modify a file or directory.
const GROUP_OTHER_WRITE: u32 = 0o022;
const ANY_EXEC: u32 = 0o111;
const SETID: u32 = 0o6000;

/// A command ready to run: its canonical path, the open file, its hash.
#[derive(Debug)]
pub struct ResolvedCommand {
    pub path: PathBuf,
    pub file: File,
    pub sha256: [u8; 32],
}

/// Why a command cannot be used. Each names the path and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("empty command name")]
    Empty,
    #[error("{0} is a relative path; name the command by absolute path or by plain name")]
    Relative(String),
    #[error("{0} is not found in the trusted search path")]
    NotFound(String),
    #[error("cannot resolve {}: {source}", path.display())]
    Canonicalize { path: PathBuf, source: io::Error },
    #[error("cannot inspect {}: {source}", path.display())]
    Stat { path: PathBuf, source: io::Error },
    #[error("{} is not a regular file", path.display())]
    NotRegular { path: PathBuf },
    #[error("{} is not executable", path.display())]
    NotExecutable { path: PathBuf },
    #[error("{} is set-user-id or set-group-id", path.display())]
    SetId { path: PathBuf },
    #[error("{} is not owned by root (uid {uid})", path.display())]
    NotRootOwned { path: PathBuf, uid: u32 },
    #[error("{} is writable by group or others (mode {mode:o})", path.display())]
    Writable { path: PathBuf, mode: u32 },
    #[error("directory {} is not owned by root (uid {uid})", path.display())]
    DirNotRootOwned { path: PathBuf, uid: u32 },
    #[error("directory {} is writable by group or others (mode {mode:o})", path.display())]
    DirWritable { path: PathBuf, mode: u32 },
    #[error("cannot open {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("{} changed while it was being opened", path.display())]
    Changed { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Hash { path: PathBuf, source: io::Error },
}

/// Finds, checks, opens and hashes `cmd` (see the module documentation).
pub fn resolve_command(
    cmd: &str,
    search_path: &[PathBuf],
) -> Result<ResolvedCommand, ResolveError> {
    if cmd.is_empty() {
        return Err(ResolveError::Empty);
    }
    let candidate = if cmd.contains('/') {
        if !cmd.starts_with('/') {
            return Err(ResolveError::Relative(cmd.to_owned()));
        }
        PathBuf::from(cmd)
    } else {
        if cmd == "." || cmd == ".." {
            return Err(ResolveError::Relative(cmd.to_owned()));
        }
        search_path
            .iter()
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join(cmd))
            .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file()))
            .ok_or_else(|| ResolveError::NotFound(cmd.to_owned()))?
    };
    let path = fs::canonicalize(&candidate).map_err(|source| ResolveError::Canonicalize {
        path: candidate.clone(),
        source,
    })?;
    let meta = fs::symlink_metadata(&path).map_err(|source| ResolveError::Stat {
        path: path.clone(),
        source,
    })?;
    check_file(&path, &meta)?;
    check_ancestors(&path)?;

    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|source| ResolveError::Open {
            path: path.clone(),
            source,
        })?;
    let opened = file.metadata().map_err(|source| ResolveError::Stat {
        path: path.clone(),
        source,
    })?;
    if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
        return Err(ResolveError::Changed { path });
    }
    check_file(&path, &opened)?;
    let sha256 = hash(&file).map_err(|source| ResolveError::Hash {
        path: path.clone(),
        source,
    })?;
    Ok(ResolvedCommand { path, file, sha256 })
}

fn check_file(path: &Path, meta: &Metadata) -> Result<(), ResolveError> {
    let mode = meta.mode() & 0o7777;
    if !meta.file_type().is_file() {
        return Err(ResolveError::NotRegular { path: path.into() });
    }
    if mode & ANY_EXEC == 0 {
        return Err(ResolveError::NotExecutable { path: path.into() });
    }
    if mode & SETID != 0 {
        return Err(ResolveError::SetId { path: path.into() });
    }
    if meta.uid() != 0 {
        return Err(ResolveError::NotRootOwned {
            path: path.into(),
            uid: meta.uid(),
        });
    }
    if mode & GROUP_OTHER_WRITE != 0 {
        return Err(ResolveError::Writable {
            path: path.into(),
            mode,
        });
    }
    Ok(())
}

/// Every directory above a canonical path: root-owned, writable only by root.
fn check_ancestors(path: &Path) -> Result<(), ResolveError> {
    for dir in path.ancestors().skip(1) {
        let meta = fs::symlink_metadata(dir).map_err(|source| ResolveError::Stat {
            path: dir.into(),
            source,
        })?;
        if meta.uid() != 0 {
            return Err(ResolveError::DirNotRootOwned {
                path: dir.into(),
                uid: meta.uid(),
            });
        }
        if meta.mode() & GROUP_OTHER_WRITE != 0 {
            return Err(ResolveError::DirWritable {
                path: dir.into(),
                mode: meta.mode() & 0o7777,
            });
        }
    }
    Ok(())
}

fn hash(mut file: &File) -> io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::DEFAULT_SEARCH_PATH;
    use std::os::unix::fs::PermissionsExt;

    fn default_path() -> Vec<PathBuf> {
        DEFAULT_SEARCH_PATH.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn true_resolves_to_usr_bin() {
        let r = resolve_command("true", &default_path()).expect("true resolves");
        assert_eq!(r.path, Path::new("/usr/bin/true"));
        let bytes = fs::read("/usr/bin/true").expect("read true");
        let want: [u8; 32] = Sha256::digest(&bytes).into();
        assert_eq!(r.sha256, want);
        // Through a symlinked directory (/bin -> /usr/bin on merged-/usr systems).
        let r = resolve_command("/bin/true", &[]).expect("/bin/true resolves");
        assert_eq!(r.path, Path::new("/usr/bin/true"));
    }

    #[test]
    fn relative_and_missing_are_refused() {
        let e = resolve_command("bin/true", &default_path()).expect_err("relative");
        assert!(matches!(e, ResolveError::Relative(_)), "{e}");
        let e = resolve_command("./true", &default_path()).expect_err("relative");
        assert!(matches!(e, ResolveError::Relative(_)), "{e}");
        let e = resolve_command("no-such-command-aivault", &default_path()).expect_err("missing");
        assert!(
            e.to_string()
                .contains("not found in the trusted search path"),
            "{e}"
        );
        // The caller's PATH is never used: an empty trusted path finds nothing.
        let e = resolve_command("true", &[]).expect_err("no search path");
        assert!(matches!(e, ResolveError::NotFound(_)), "{e}");
        assert!(matches!(resolve_command("", &[]), Err(ResolveError::Empty)));
    }

    #[test]
    fn binary_in_world_writable_dir_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
        let bin = dir.path().join("mytrue");
        fs::copy("/usr/bin/true", &bin).expect("copy");
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod");
        let e = resolve_command(&bin.to_string_lossy(), &[]).expect_err("insecure dir");
        assert!(matches!(e, ResolveError::DirWritable { .. }), "{e}");
        // Found through the search path: same refusal.
        let e = resolve_command("mytrue", &[dir.path().into()]).expect_err("insecure dir");
        assert!(matches!(e, ResolveError::DirWritable { .. }), "{e}");
    }

    #[test]
    fn sticky_world_writable_dir_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o1777)).expect("chmod");
        let bin = dir.path().join("mytrue");
        fs::copy("/usr/bin/true", &bin).expect("copy");
        let e = resolve_command(&bin.to_string_lossy(), &[]).expect_err("sticky dir");
        assert!(matches!(e, ResolveError::DirWritable { .. }), "{e}");
    }

    #[test]
    fn insecure_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let bin = dir.path().join("t");
        fs::copy("/usr/bin/true", &bin).expect("copy");
        let s = bin.to_string_lossy().into_owned();
        // tempdir lives under /tmp (sticky, world-writable): ancestors fail first,
        // so check the file-level verdicts directly.
        for (mode, want) in [
            (0o775, "writable"),
            (0o644, "not executable"),
            (0o4755, "set-user-id"),
        ] {
            fs::set_permissions(&bin, fs::Permissions::from_mode(mode)).expect("chmod");
            let meta = fs::symlink_metadata(&bin).expect("stat");
            let e = check_file(&bin, &meta).expect_err(&s);
            assert!(e.to_string().contains(want), "{mode:o}: {e}");
        }
        nix::unistd::chown(&bin, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod");
        let meta = fs::symlink_metadata(&bin).expect("stat");
        let e = check_file(&bin, &meta).expect_err(&s);
        assert!(e.to_string().contains("is not owned by root"), "{e}");
    }
}
