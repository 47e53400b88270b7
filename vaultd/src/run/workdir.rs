//! The caller's working directory, when a run asks for it (`vaultctl run
//! --workdir`): the caller opens the directory itself (`O_RDONLY |
//! O_DIRECTORY`: the kernel checked then that the caller may read it) and
//! sends the descriptor on the byte that follows its run request
//! ([`receive`]). [`check`] makes sure it is a directory opened for
//! reading, learns its path (for the audit record) and opens the same
//! directory in the daemon's own mount namespace, which is what the jail
//! host clones into the run's mount (`crate::sys::workdir_mount`).
//!
//! Only the descriptor counts, never a path the caller names: the
//! directory the daemon opens by path must be the very one the caller
//! opened (same device and inode), or the run is refused.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::Duration;

use aivault_proto::{ErrorCode, WireError, WorkdirMode, WORKDIR_BYTE};
use tokio::net::UnixStream;

/// How long the descriptor may take after its request.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The working directory a run is given.
#[derive(Debug)]
pub struct Workdir {
    /// The directory, opened (`O_PATH`) in the daemon's mount namespace.
    pub dir: OwnedFd,
    /// Where the caller's descriptor points, as the kernel names it.
    pub path: PathBuf,
    pub mode: WorkdirMode,
    /// The caller's uid and gid (`SO_PEERCRED`): shown to a fresh-uid run
    /// as its own.
    pub caller: (u32, u32),
}

/// File systems that are kernel interfaces, never given to a run.
const KERNEL_FILE_SYSTEMS: &[nix::sys::statfs::FsType] = {
    use nix::sys::statfs::*;
    &[
        PROC_SUPER_MAGIC,
        SYSFS_MAGIC,
        CGROUP_SUPER_MAGIC,
        CGROUP2_SUPER_MAGIC,
        DEBUGFS_MAGIC,
        TRACEFS_MAGIC,
        SECURITYFS_MAGIC,
        SELINUX_MAGIC,
        SMACK_MAGIC,
        BPF_FS_MAGIC,
        DEVPTS_SUPER_MAGIC,
        NSFS_MAGIC,
        RDTGROUP_SUPER_MAGIC,
    ]
};

fn bad(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::BadRequest, message)
}

/// Receives the descriptor that follows a run request asking for a working
/// directory: one byte, [`WORKDIR_BYTE`], with exactly one descriptor.
pub async fn receive(stream: &UnixStream) -> Result<OwnedFd, WireError> {
    let none =
        || bad("the run request asks for a working directory but no single descriptor followed it");
    let got = tokio::time::timeout(RECEIVE_TIMEOUT, async {
        loop {
            stream.readable().await?;
            let mut byte = [0u8; 1];
            match stream.try_io(tokio::io::Interest::READABLE, || {
                crate::sys::recv_with_fds(stream, &mut byte)
            }) {
                Ok((n, fds)) => return Ok((n, byte[0], fds)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    match got {
        Err(_) => Err(bad("the working directory's descriptor did not arrive")),
        Ok(Err(e)) => Err(bad(format!(
            "cannot receive the working directory's descriptor: {e}"
        ))),
        Ok(Ok((1, WORKDIR_BYTE, fds))) if fds.len() == 1 => fds.into_iter().next().ok_or_else(none),
        Ok(Ok(_)) => Err(none()),
    }
}

/// Checks the caller's descriptor (see the module documentation).
pub fn check(caller_fd: OwnedFd, mode: WorkdirMode, caller: (u32, u32)) -> Result<Workdir, String> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(caller_fd.as_raw_fd(), FcntlArg::F_GETFL)
        .map_err(|e| format!("cannot inspect the working directory's descriptor: {e}"))?;
    if OFlag::from_bits_truncate(flags).contains(OFlag::O_PATH) {
        return Err(
            "the working directory must be opened for reading (O_RDONLY|O_DIRECTORY), not O_PATH"
                .into(),
        );
    }
    let theirs = nix::sys::stat::fstat(caller_fd.as_raw_fd())
        .map_err(|e| format!("cannot inspect the working directory: {e}"))?;
    if theirs.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err("the working directory's descriptor is not a directory".into());
    }
    // Kernel interfaces are no working directory: a clone of /proc would
    // give the command its own /proc/self/environ, its secrets.
    let fs = nix::sys::statfs::fstatfs(&caller_fd)
        .map_err(|e| format!("cannot inspect the working directory's file system: {e}"))?;
    if KERNEL_FILE_SYSTEMS.contains(&fs.filesystem_type()) {
        return Err(
            "the working directory is on a kernel interface file system (/proc, /sys, …); refused"
                .into(),
        );
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{}", caller_fd.as_raw_fd()))
        .map_err(|e| format!("cannot name the working directory: {e}"))?;
    if !link.is_absolute() || link.to_string_lossy().ends_with(" (deleted)") {
        return Err("the working directory has been removed or is unreachable".into());
    }
    let shown = link.display().to_string();
    let not_here = || {
        format!(
            "the working directory {shown} is not the same directory for the daemon \
             (the caller may be in another mount namespace)"
        )
    };
    let ours = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&link)
        .map_err(|_| not_here())?;
    let meta = ours.metadata().map_err(|_| not_here())?;
    if meta.dev() != theirs.st_dev || meta.ino() != theirs.st_ino {
        return Err(not_here());
    }
    // The same mount, not only the same directory: a caller in a mount
    // namespace of its own (a sandbox with read-only binds, or a tmpfs
    // over a secret below) must not get the daemon's wider view of it.
    let (theirs_mnt, ours_mnt) = (mount_id(&caller_fd), mount_id(&ours));
    if theirs_mnt.is_none() || theirs_mnt != ours_mnt {
        return Err(format!(
            "the working directory {shown} is on another mount for the caller than for the daemon \
             (a mount namespace or bind mount of its own); refused"
        ));
    }
    // What is read-only for the caller stays so: the clone's read-only
    // flag is cleared for read-write.
    let ro = nix::sys::statvfs::fstatvfs(&caller_fd)
        .map(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .map_err(|e| format!("cannot inspect the working directory's mount: {e}"))?;
    if ro && mode == WorkdirMode::ReadWrite {
        return Err(format!(
            "the working directory {shown} is on a read-only mount; it can be given read-only only"
        ));
    }
    // The clone holds that one mount, not the ones below it, which would
    // uncover what they hide: a directory with mounts below is refused.
    if let Some(below) = mount_below(&link)? {
        return Err(format!(
            "the working directory {shown} has a mount below it ({}); choose a directory without one",
            below.display()
        ));
    }
    drop(caller_fd);
    Ok(Workdir {
        dir: OwnedFd::from(ours),
        path: link,
        mode,
        caller,
    })
}

/// The id of the mount a descriptor's file is on (`mnt_id` in
/// `/proc/self/fdinfo`, unique across mount namespaces).
fn mount_id(fd: &impl AsRawFd) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    parse_mnt_id(&info)
}

fn parse_mnt_id(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// A mount point strictly below `dir` in the daemon's mount namespace; an
/// unreadable mount table refuses the directory (never taken for "none").
fn mount_below(dir: &std::path::Path) -> Result<Option<PathBuf>, String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read the mount table to check the working directory: {e}"))?;
    Ok(first_mount_below(&table, dir))
}

fn first_mount_below(mountinfo: &str, dir: &std::path::Path) -> Option<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_octal(p)))
        .find(|p| p != dir && p.starts_with(dir))
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Workdir {
    pub fn writable(&self) -> bool {
        self.mode == WorkdirMode::ReadWrite
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.dir.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_ids_and_mounts_below_are_read_from_the_kernel_tables() {
        assert_eq!(
            parse_mnt_id("pos:\t0\nflags:\t0100000\nmnt_id:\t29\nino:\t12\n"),
            Some(29)
        );
        assert_eq!(parse_mnt_id("pos:\t0\n"), None);
        let table = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                     40 22 0:40 / /home/a/repo\\040x rw - tmpfs none rw\n\
                     41 22 0:41 / /home/a/repo/.secrets rw - tmpfs none rw\n";
        let repo = std::path::Path::new("/home/a/repo");
        assert_eq!(
            first_mount_below(table, repo),
            Some(PathBuf::from("/home/a/repo/.secrets"))
        );
        // `repo x` is a sibling, not below; the directory's own mount is not below it.
        assert_eq!(
            first_mount_below(table, std::path::Path::new("/home/a/repo/.secrets")),
            None
        );
        assert_eq!(
            first_mount_below("40 22 0:40 / /home/a/repo\\040x rw - tmpfs none rw\n", repo),
            None
        );
        assert_eq!(unescape_octal("a\\040b\\011c"), "a b\tc");
        // Our own descriptors have a mount id.
        let f = std::fs::File::open("/").unwrap();
        assert!(mount_id(&f).is_some());
    }

    fn open(path: &str, flags: i32) -> OwnedFd {
        OwnedFd::from(
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(flags)
                .open(path)
                .expect("open"),
        )
    }

    #[test]
    fn a_directory_opened_for_reading_is_taken_with_its_path() {
        let tmp = std::env::temp_dir();
        let w = check(
            open(tmp.to_str().expect("utf-8"), libc::O_DIRECTORY),
            WorkdirMode::ReadOnly,
            (1000, 1000),
        )
        .expect("accepted");
        assert_eq!(w.path, tmp.canonicalize().expect("canonical"));
        assert!(!w.writable());
    }

    #[test]
    fn o_path_descriptors_and_files_are_refused() {
        let e = check(
            open("/", libc::O_PATH | libc::O_DIRECTORY),
            WorkdirMode::ReadOnly,
            (1000, 1000),
        )
        .expect_err("O_PATH");
        assert!(e.contains("O_PATH"), "{e}");
        let e = check(
            open("/proc", libc::O_DIRECTORY),
            WorkdirMode::ReadOnly,
            (1000, 1000),
        )
        .expect_err("/proc");
        assert!(e.contains("kernel interface"), "{e}");
        let e = check(
            open("/proc/self/exe", 0),
            WorkdirMode::ReadOnly,
            (1000, 1000),
        )
        .expect_err("a file");
        assert!(e.contains("not a directory"), "{e}");
    }
}
