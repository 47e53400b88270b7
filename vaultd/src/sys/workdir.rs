//! The mount of a caller's working directory a run is given (only the jail
//! host calls this): a detached clone of the directory's mount
//! (`open_tree(OPEN_TREE_CLONE)`), read-only unless asked otherwise,
//! `nosuid`, `nodev`, `noexec`, and — for a fresh-uid run — *idmapped*
//! (`mount_setattr(MOUNT_ATTR_IDMAP)`, Linux 5.12+) so that what the caller's
//! uid and gid own shows as the run's, and what the run creates lands on
//! disk as the caller's. Any other owner's files show as the overflow id:
//! the run gets "other" permissions on them, as the caller would.
//!
//! The id mapping comes from a user namespace with exactly one uid and one
//! gid line, made here for the purpose: a short-lived child (a clone of
//! the jail host with `CLONE_NEWUSER`, no `CLONE_VM`) whose maps the jail
//! host writes (it holds `CAP_SETUID`/`CAP_SETGID`) and whose namespace it
//! opens, before the child exits. Nothing runs in that namespace.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::GuardedStack;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` (`MOUNT_ATTR_SIZE_VER0`).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Whose ids show as whose: the caller's uid and gid as the run's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub caller_uid: u32,
    pub caller_gid: u32,
    pub run_uid: u32,
    pub run_gid: u32,
}

/// A detached mount of `dir` (its own mount only, not the mounts below it)
/// as described in the module documentation: idmapped if `map` is given,
/// writable only if `writable`. The descriptor is close-on-exec.
pub fn workdir_mount(
    dir: BorrowedFd<'_>,
    map: Option<IdMap>,
    writable: bool,
) -> io::Result<OwnedFd> {
    let userns = map
        .map(user_namespace)
        .transpose()
        .map_err(|e| step("the id mapping's user namespace", e))?;
    // SAFETY: open_tree takes a descriptor, a NUL-terminated path and flags
    // and returns a new descriptor or -1.
    let raw = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            dir.as_raw_fd(),
            c"".as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as libc::c_uint,
        )
    };
    if raw < 0 {
        return Err(step("open_tree", io::Error::last_os_error()));
    }
    // SAFETY: a new descriptor the call returned, owned by nothing else.
    let tree = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    let mut set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
    let mut clear = 0;
    if writable {
        clear |= MOUNT_ATTR_RDONLY;
    } else {
        set |= MOUNT_ATTR_RDONLY;
    }
    if userns.is_some() {
        set |= MOUNT_ATTR_IDMAP;
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: userns.as_ref().map_or(0, |u| u.as_raw_fd() as u64),
    };
    // SAFETY: mount_setattr reads `attr` (a valid struct of the size given)
    // and changes the detached mount `tree` refers to; no other memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if userns.is_some() && e.raw_os_error() == Some(libc::EINVAL) {
            return Err(step(
                "mount_setattr (its file system may not support idmapped mounts, which need Linux 5.12)",
                e,
            ));
        }
        return Err(step("mount_setattr", e));
    }
    Ok(tree)
}

/// `e`, saying which step failed.
fn step(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The namespace's child's pipes: it says it is ready on `ready` and then
/// waits on `read` until the jail host closes `write` (closing its own
/// copies of the ends it does not use, else they would keep the pipes
/// open).
struct Waiter {
    read: libc::c_int,
    write: libc::c_int,
    ready: libc::c_int,
    ready_read: libc::c_int,
}

/// The child in the new user namespace: waits until the jail host closes
/// the pipe (it has opened the namespace by then), then exits.
extern "C" fn wait_then_exit(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to the child's copy of the parent's `Waiter`;
    // only raw system calls follow.
    unsafe {
        let w = &*(arg as *const Waiter);
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as u64,
            0u64,
            0u64,
            0u64,
        );
        // The jail host is not dumpable, and so is this copy of it: its
        // /proc files (uid_map, ns/user) would then need CAP_SYS_PTRACE,
        // which the jail host lacks. Dumpable, they need only its uid,
        // root's; this process holds nothing and executes nothing.
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_DUMPABLE,
            1u64,
            0u64,
            0u64,
            0u64,
        );
        libc::syscall(libc::SYS_close, w.write);
        libc::syscall(libc::SYS_close, w.ready_read);
        libc::syscall(libc::SYS_write, w.ready, b"r".as_ptr(), 1usize);
        libc::syscall(libc::SYS_close, w.ready);
        let mut byte = 0u8;
        loop {
            let n = libc::syscall(libc::SYS_read, w.read, &mut byte as *mut u8, 1usize);
            if n >= 0 || *libc::__errno_location() != libc::EINTR {
                break;
            }
        }
        libc::syscall(libc::SYS_exit_group, 0);
        0
    }
}

/// A user namespace mapping exactly the caller's uid and gid to the run's.
fn user_namespace(map: IdMap) -> io::Result<OwnedFd> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (ready_read, ready) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let waiter = Waiter {
        read: read.as_raw_fd(),
        write: write.as_raw_fd(),
        ready: ready.as_raw_fd(),
        ready_read: ready_read.as_raw_fd(),
    };
    let mut stack = GuardedStack::new(16 * 1024)?;
    // SAFETY: `wait_then_exit` reads only its copy of `waiter` and makes
    // raw system calls (the contract of `clone_copy`).
    let pid = unsafe {
        super::clone_copy(
            wait_then_exit,
            &mut stack,
            libc::CLONE_NEWUSER | libc::SIGCHLD,
            &waiter as *const Waiter as *mut libc::c_void,
        )
    }?;
    drop(ready);
    let opened = (|| {
        // Until the child has made itself dumpable its /proc files are
        // closed to the jail host. (End of file: it died.)
        let mut byte = [0u8; 1];
        loop {
            match nix::unistd::read(ready_read.as_raw_fd(), &mut byte) {
                Ok(1) => break,
                Ok(_) => return Err(io::Error::other("the child ended early")),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let proc = format!("/proc/{pid}");
        std::fs::write(
            format!("{proc}/uid_map"),
            format!("{} {} 1\n", map.caller_uid, map.run_uid),
        )
        .map_err(|e| step("uid_map", e))?;
        std::fs::write(
            format!("{proc}/gid_map"),
            format!("{} {} 1\n", map.caller_gid, map.run_gid),
        )
        .map_err(|e| step("gid_map", e))?;
        std::fs::File::open(format!("{proc}/ns/user"))
            .map(OwnedFd::from)
            .map_err(|e| step("ns/user", e))
    })();
    drop(write);
    drop(read);
    super::wait(pid, super::END_LIMIT)?;
    drop(stack);
    opened
}
