//! Every system call the daemon makes that needs more than a safe wrapper.
//!
//! Each `unsafe` block states why it is sound. Everything else in the crate
//! is safe code.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

mod spawn;
pub use spawn::{spawn_runner, RunnerSpawn, Spawned};

/// `SO_PEERPIDFD` (Linux 6.5+); not yet exported by every libc crate release.
const SO_PEERPIDFD: libc::c_int = 77;

/// Who is on the other end of a Unix stream socket, as the kernel recorded it
/// at `connect()` time. Nothing here comes from the peer's own words.
#[derive(Debug)]
pub struct PeerIdentity {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    /// A pidfd for the peer process where the kernel offers one: unlike `pid`,
    /// it cannot come to name a different process after the peer exits.
    pub pidfd: Option<OwnedFd>,
}

/// Reads `SO_PEERCRED` (and `SO_PEERPIDFD` when available) from a connected socket.
pub fn peer_identity(sock: &impl AsFd) -> io::Result<PeerIdentity> {
    let cred = getsockopt(sock, PeerCredentials).map_err(io::Error::from)?;
    Ok(PeerIdentity {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
        pidfd: peer_pidfd(sock.as_fd().as_raw_fd()),
    })
}

fn peer_pidfd(fd: std::os::fd::RawFd) -> Option<OwnedFd> {
    let mut pidfd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `pidfd` and `len` are valid, properly sized out-parameters for a
    // getsockopt returning an int; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut pidfd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 && pidfd >= 0 {
        // SAFETY: the kernel just created this descriptor for us; nothing
        // else owns it.
        Some(unsafe { OwnedFd::from_raw_fd(pidfd) })
    } else {
        None
    }
}

/// Raises the soft open-file limit to the hard limit so connection limits,
/// not the fd table, decide when callers are turned away.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    Ok(hard)
}

/// Who a runner runs as, and where it starts.
#[derive(Debug, Clone)]
pub struct ChildIdentity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: empty for a fresh run uid, the caller's groups
    /// from the account database in caller mode.
    pub groups: Vec<u32>,
    /// An open `cgroup.procs` the child joins first, while still root.
    pub cgroup_procs: Option<std::os::fd::RawFd>,
}

/// Sends SIGKILL to every process running under `uid`, by forking a child
/// that becomes `uid` and calls `kill(-1, SIGKILL)`: the kernel then signals
/// exactly the processes that uid may signal — its own. The child blocks
/// every signal it can and may not dump core (it is a copy of the daemon's
/// memory); if a run process manages to stop it, the parent kills it and
/// reports failure so the caller tries again.
pub fn kill_all_of_uid(uid: u32) -> io::Result<()> {
    if uid == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to kill uid 0",
        ));
    }
    // SAFETY: the daemon is multithreaded, so the child may only make
    // async-signal-safe calls: sigfillset/sigprocmask, setrlimit, setgroups,
    // setresgid, setresuid, kill and _exit are plain system calls (or pure
    // functions on a stack buffer) and allocate nothing.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; `_exit` never returns and skips atexit handlers.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            let ok = libc::setgroups(0, std::ptr::null()) == 0
                && libc::setresgid(uid, uid, uid) == 0
                && libc::setresuid(uid, uid, uid) == 0;
            if ok {
                libc::kill(-1, libc::SIGKILL);
                libc::_exit(0);
            }
            libc::_exit(1);
        }
    }
    let mut status = 0;
    // SAFETY: `pid` is our own child; `status` is a valid out-pointer.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    if libc::WIFSTOPPED(status) {
        // SAFETY: `pid` is our stopped, unreaped child, so it names exactly
        // that process; SIGKILL ends it even while stopped.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, &mut status, 0);
        }
        return Err(io::Error::other("the killer was stopped by a run process"));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(io::Error::other(
            "could not switch to the run uid to kill its processes",
        ));
    }
    Ok(())
}

/// The account of `uid` from the user and group databases: its primary
/// gid and every group it belongs to (primary included).
pub fn account(uid: u32) -> Option<(u32, Vec<u32>)> {
    use nix::unistd::{getgrouplist, Gid, Uid, User};
    let user = User::from_uid(Uid::from_raw(uid)).ok()??;
    let name = std::ffi::CString::new(user.name).ok()?;
    let groups = getgrouplist(&name, user.gid).ok()?;
    Some((
        user.gid.as_raw(),
        groups.into_iter().map(Gid::as_raw).collect(),
    ))
}

/// Supplementary groups of the account `uid`, from the group database.
pub fn account_groups(uid: u32, gid: u32) -> Vec<u32> {
    use nix::unistd::{getgrouplist, Gid, Uid, User};
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return vec![gid];
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return vec![gid];
    };
    getgrouplist(&name, Gid::from_raw(gid))
        .map(|g| g.into_iter().map(Gid::as_raw).collect())
        .unwrap_or_else(|_| vec![gid])
}

/// Takes the first socket passed by systemd socket activation (`LISTEN_FDS`,
/// checked against `LISTEN_PID` by `sd_notify::listen_fds`), if any.
pub fn inherited_listener() -> Option<std::os::unix::net::UnixListener> {
    let fd = sd_notify::listen_fds().ok()?.next()?;
    // SAFETY: systemd passed this descriptor to us (LISTEN_PID matched and
    // the environment was consumed), so nothing else in the process owns it.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    listener.set_nonblocking(true).ok()?;
    Some(listener)
}
