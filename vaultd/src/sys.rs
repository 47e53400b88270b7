//! Every system call the daemon makes that needs more than a safe wrapper.
//!
//! Each `unsafe` block states why it is sound. Everything else in the crate
//! is safe code.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

pub mod sockdiag;
mod spawn;
mod stack;
mod workdir;
pub use spawn::{reap_if_ended, spawn_jailed, wait, JailSpawn, END_LIMIT};
pub use stack::GuardedStack;
pub use workdir::{workdir_mount, IdMap};

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

/// Sends SIGKILL to every process running under `uid`, from a short-lived
/// child that becomes `uid` and calls `kill(-1, SIGKILL)`: the kernel then
/// signals exactly the processes that uid may signal — its own.
///
/// Only the jail host calls this (`crate::jail::host`): the killer is a
/// clone of the *jail host* with a copy of its memory (no `CLONE_VM`, no
/// `CLONE_FILES`), which holds no key. Where `fs.suid_dumpable = 1` leaves
/// it dumpable after the uid change, the run's processes can read and
/// write only that copy: no key, no descriptor (it closes all of them
/// first), no capability. It runs on a guard-paged stack, makes raw system
/// calls only (close its descriptors, no core dumps, no groups,
/// `setresgid`, `setresuid`, `kill`, `exit_group`), with every signal
/// blocked from before the clone. Without `CLONE_VFORK` this thread keeps
/// control, and its wait is bounded ([`END_LIMIT`]): if a run process stops
/// or traces the killer it is killed (the jail host keeps `CAP_KILL` for
/// this: the killer is another uid by then) and failure reported, so the
/// caller tries again.
///
/// Then the killer tells whether any other task of `uid` is left at all —
/// alive, dying or a zombie — without a scan of `/proc`: it lowers its own
/// `RLIMIT_NPROC` to 2 and starts a child that exits at once. The kernel
/// counts the tasks whose real uid is `uid` (the killer included) and
/// refuses the child (`EAGAIN`) exactly when a third would exceed the
/// limit, that is when some other task of `uid` exists. Run processes
/// cannot change their real uid (no capabilities, `no_new_privs`), so none
/// is missed. A first probe at limit 1 checks that the kernel enforces the
/// limit exactly (some 5.14–5.16 kernels allowed one task more); where it
/// does not, the answer is [`Killed::SomeLeft`]. [`Killed::NoneLeft`] lets
/// the caller skip confirming by scan.
pub fn kill_all_of_uid(uid: u32) -> io::Result<Killed> {
    // (uid_t)-1 would mean "unchanged" to setresuid: the killer would stay
    // root and kill everything.
    if uid == 0 || uid == u32::MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to kill uid 0 or -1",
        ));
    }
    let mut stack = GuardedStack::new(16 * 1024)?;
    let mut probe_stack = GuardedStack::new(4 * 1024)?;
    let target = KillerArgs {
        uid,
        probe_stack: probe_stack.top() as usize,
    };
    // SAFETY: `killer` reads only `target`, which lives on this frame until
    // the child is reaped below, and makes raw system calls only; `stack`
    // and `probe_stack` are unmapped only once the child has been reaped
    // (or never, below).
    let pid = unsafe {
        clone_copy(
            killer,
            &mut stack,
            libc::SIGCHLD,
            &target as *const KillerArgs as *mut libc::c_void,
        )
    }?;
    // Bounded: a killer stopped or traced by a run process (it is the run
    // uid from its `setresuid` on) is killed and failure reported, and the
    // caller tries again; the jail host never hangs on it.
    let status = spawn::wait(pid, spawn::END_LIMIT);
    drop((stack, probe_stack));
    let status = status?;
    if libc::WIFSIGNALED(status) {
        return Err(io::Error::other(
            "the killer was stopped or traced by a run process",
        ));
    }
    match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
        (true, KILLER_NONE_LEFT) => Ok(Killed::NoneLeft),
        (true, KILLER_SOME_LEFT) => Ok(Killed::SomeLeft),
        _ => Err(io::Error::other(
            "could not switch to the run uid to kill its processes",
        )),
    }
}

/// Starts `f(arg)` in a child with a copy of this process's memory
/// (`clone(flags)`, never `CLONE_VM`), on the top of `stack` (its copy in
/// the child), with every signal blocked in the calling thread across the
/// clone; the child starts with all signals blocked.
///
/// # Safety
/// `f` may read `arg` and make raw system calls only (no allocation, no
/// lock, no libc wrapper that touches process state). `arg` and `stack`
/// must be valid at the clone.
unsafe fn clone_copy(
    f: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    stack: &mut GuardedStack,
    flags: libc::c_int,
    arg: *mut libc::c_void,
) -> io::Result<libc::pid_t> {
    // The stack grows down from the aligned top of its mapping.
    let top = stack.top();
    // SAFETY: plain-data signal sets initialised by sigfillset/zeroed, and
    // pthread_sigmask on the calling thread only. `clone`'s soundness is
    // this function's contract, passed on to the caller.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(f, top, flags & !libc::CLONE_VM, arg);
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid == -1 {
            return Err(clone_error);
        }
        Ok(pid)
    }
}

/// A pidfd for `pid` (`pidfd_open`, Linux 5.3+): it becomes readable when
/// the process ends and cannot come to name another process.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new
    // descriptor or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just created this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Receives one message into `buf` from a `SOCK_SEQPACKET` socket, with
/// any descriptors passed along (`SCM_RIGHTS`, close-on-exec). A message
/// or descriptor list that did not fit is an error, never a silent cut.
/// `Ok((0, _))` is the peer's orderly close.
pub fn recv_with_fds(sock: &impl AsFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(
            sock.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(io::Error::from)?,
        }
    };
    let mut fds = Vec::new();
    let truncated = msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: the kernel installed these descriptors in this
                // process for this message alone; nothing else owns them.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if truncated {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a message or its descriptors did not fit",
        ));
    }
    Ok((msg.bytes, fds))
}

/// Closes every descriptor above 2 but `keep` (`close_range` around it):
/// the jail host starts with nothing of the daemon's but its socket.
pub fn close_fds_except(keep: std::os::fd::RawFd) -> io::Result<()> {
    let ranges = [(3u32, keep as u32 - 1), (keep as u32 + 1, u32::MAX)];
    for (first, last) in ranges {
        if first > last {
            continue;
        }
        // SAFETY: close_range takes numbers only. The caller runs before
        // anything in this process holds a descriptor in these ranges.
        if unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Takes ownership of descriptor `fd`, inherited at start, if it is a
/// socket (the jail host's to the daemon). Call it once per descriptor,
/// before anything else in the process could have closed or reused it.
pub fn adopt_socket(fd: std::os::fd::RawFd) -> Option<OwnedFd> {
    // SAFETY: fstat writes into a zeroed stat buffer and reads nothing.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a number; an invalid one fails with EBADF.
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    // SAFETY: `fd` is open (fstat succeeded) and, per the contract, owned
    // by nothing else in this process.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Inherited open across exec on purpose; no program started from here
    // on may inherit it.
    nix::fcntl::fcntl(
        owned.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .ok()?;
    Some(owned)
}

/// What [`kill_all_of_uid`] found once every process of the uid was sent
/// SIGKILL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Killed {
    /// No task of the uid is left, not even a zombie.
    NoneLeft,
    /// Some task of the uid still exists: killed processes not yet gone,
    /// or zombies not yet reaped (none of them runs user code again).
    SomeLeft,
}

/// The killer's exit statuses (anything else: it could not become the uid).
const KILLER_NONE_LEFT: i32 = 0;
const KILLER_SOME_LEFT: i32 = 3;

/// What the killer reads: whom to kill, and the top of a small stack for
/// the child it starts to count the uid's tasks.
#[repr(C)]
struct KillerArgs {
    uid: libc::uid_t,
    probe_stack: usize,
}

/// The killer child (see [`kill_all_of_uid`]).
extern "C" fn killer(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to this child's copy of the parent's
    // `KillerArgs`; raw system calls only, no allocation, no lock.
    unsafe {
        let args = &*(arg as *const KillerArgs);
        let uid = args.uid;
        // Its copy of the jail host's descriptors (the socket to the daemon
        // among them) goes before it becomes the uid.
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        set_own_rlimit(libc::RLIMIT_CORE, 0, 0);
        let ok = libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) == 0
            && libc::syscall(libc::SYS_setresgid, uid, uid, uid) == 0
            && libc::syscall(libc::SYS_setresuid, uid, uid, uid) == 0;
        if !ok {
            libc::syscall(libc::SYS_exit_group, 1);
        }
        libc::syscall(libc::SYS_kill, -1, libc::SIGKILL);
        // Count the uid's tasks with probe children under a lowered
        // RLIMIT_NPROC. First at 1: a kernel that counts as documented
        // refuses even this child (the killer and it make two); one that
        // lets a uid exceed its limit by one (Linux 5.14 to 5.16 before a
        // stable fix) starts it, and then the count proves nothing. Then at
        // 2: the child starts exactly when no other task of the uid exists.
        let set_limit = |soft: u64| set_own_rlimit(libc::RLIMIT_NPROC, soft, 2);
        let probe_starts = || {
            // The probe shares this memory and descriptor table and runs
            // until it exits, with this killer suspended (CLONE_VFORK), on
            // its own small stack.
            let probe = libc::clone(
                probe_exits,
                args.probe_stack as *mut libc::c_void,
                libc::CLONE_VM | libc::CLONE_FILES | libc::CLONE_VFORK | libc::SIGCHLD,
                std::ptr::null_mut(),
            );
            if probe > 0 {
                let mut status = 0;
                libc::syscall(
                    libc::SYS_wait4,
                    probe,
                    &mut status as *mut libc::c_int,
                    0,
                    std::ptr::null_mut::<libc::rusage>(),
                );
            }
            probe > 0
        };
        let exact = set_limit(1) && !probe_starts();
        let outcome = if exact && set_limit(2) && probe_starts() {
            KILLER_NONE_LEFT
        } else {
            KILLER_SOME_LEFT
        };
        libc::syscall(libc::SYS_exit_group, outcome);
        0
    }
}

/// Sets a resource limit of the calling process with a raw `prlimit64`
/// (no libc state touched: usable in a raw `clone` child). True on success.
fn set_own_rlimit(resource: libc::__rlimit_resource_t, cur: u64, max: u64) -> bool {
    let limit = libc::rlimit {
        rlim_cur: cur,
        rlim_max: max,
    };
    // SAFETY: prlimit64 on this process reads `limit`, a live local, and
    // writes nothing (no old-limit pointer).
    unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0,
            resource,
            &limit as *const libc::rlimit,
            std::ptr::null_mut::<libc::rlimit>(),
        ) == 0
    }
}

/// The killer's probe child: it exists only to be counted.
extern "C" fn probe_exits(_: *mut libc::c_void) -> libc::c_int {
    // SAFETY: a raw exit; this task touches no memory.
    unsafe {
        libc::syscall(libc::SYS_exit, 0);
    }
    0
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

/// Registers `fd` with the runtime's reactor (readable and writable), for
/// a socket the runtime has no type for (`SOCK_SEQPACKET`). Call it within
/// the runtime.
pub fn async_fd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    use tokio::io::{unix::AsyncFd, Interest};
    // SAFETY: an `OwnedFd` is a valid open descriptor that nothing else
    // closes; the `AsyncFd` owns it from here until it is dropped or taken
    // back, and `as_raw_fd` of an `OwnedFd` always returns that same
    // number.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
        .map_err(io::Error::from)
}

/// The pid a pidfd refers to (from `/proc/self/fdinfo`), if it still runs.
pub fn pidfd_pid(fd: &impl AsFd) -> Option<i32> {
    let info =
        std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|p| p.trim().parse::<i32>().ok())
        .filter(|p| *p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    /// Needs root (CI runs as root): it starts a process under a uid no
    /// account uses and kills it through `kill_all_of_uid`.
    #[test]
    fn the_killer_kills_a_uid_and_tells_whether_any_task_is_left() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root to start a process under another uid"
        );
        // Far above the run range of test daemons, unique to this process.
        let uid = 0x6f00_0000 + std::process::id() % 0x10000;
        assert_eq!(kill_all_of_uid(uid).unwrap(), Killed::NoneLeft);

        let mut sleeper = std::process::Command::new("/bin/sleep")
            .arg("60")
            .uid(uid)
            .gid(uid)
            .spawn()
            .unwrap();
        // Alive, then a zombie until reaped: a task of the uid either way.
        assert_eq!(kill_all_of_uid(uid).unwrap(), Killed::SomeLeft);
        let status = sleeper.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
        assert_eq!(
            kill_all_of_uid(uid).unwrap(),
            Killed::NoneLeft,
            "once reaped, nothing of the uid is left"
        );
        assert!(kill_all_of_uid(0).is_err(), "uid 0 is refused");
        assert!(
            kill_all_of_uid(u32::MAX).is_err(),
            "uid -1 (\"unchanged\" to setresuid) is refused"
        );
    }

    /// Needs root: a child that took another uid and then stopped (as a run
    /// process can stop a jail host's child) is ended by SIGKILL, and the
    /// wait for it returns instead of hanging.
    #[test]
    fn waiting_for_a_stopped_child_of_another_uid_is_bounded() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root: its child changes uid"
        );
        let uid = 0x6e00_0000 + std::process::id() % 0x10000;
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", "kill -STOP $$; exit 0"])
            .uid(uid)
            .gid(uid)
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        // Wait (bounded) until it is stopped: state T in /proc/<pid>/stat.
        let stopped = (0..1000).any(|_| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next());
            if state == Some("T") {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            false
        });
        assert!(stopped, "the child never stopped itself");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(wait(pid, std::time::Duration::from_millis(200)));
        });
        let status = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the wait for a stopped child did not return")
            .unwrap();
        assert!(
            libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
            "the stopped child was not ended by SIGKILL: status {status:#x}"
        );
        drop(child);
    }
}
