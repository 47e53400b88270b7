//! Every raw system call of the runner crate lives here.
//!
//! The rest of the crate is `unsafe`-free; each block below carries a SAFETY
//! comment that says why that particular call is sound. Functions return
//! `nix::Error` (an errno) so callers can wrap them in their step's error
//! variant.
#![allow(unsafe_code)]

use std::ffi::c_char;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::unistd::Pid;
use zeroize::Zeroizing;

/// `close_range(2)` flag value 0: close (not merely mark close-on-exec).
const CLOSE_RANGE_CLOSE: libc::c_uint = 0;

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`.
const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;

fn cerr(ret: libc::c_long) -> Result<libc::c_long, Errno> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of descriptors the kernel installed in this process
/// for one received `SCM_RIGHTS` message.
pub fn adopt_received_fds(raw: Vec<RawFd>) -> impl Iterator<Item = OwnedFd> {
    raw.into_iter().map(|r| {
        // SAFETY: the kernel just installed these numbers in this process
        // for the message `recvmsg` returned; nothing else owns them, and
        // each is taken exactly once.
        unsafe { OwnedFd::from_raw_fd(r) }
    })
}

/// Takes ownership of descriptor `fd` as this process inherited it at
/// `exec` (a jailed process's control socket, descriptor 3), if it is open.
/// Call it once per number, before anything else could have opened it.
pub fn adopt_inherited_fd(fd: RawFd) -> Option<OwnedFd> {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).ok()?;
    // SAFETY: the number is open (checked just now) and was installed by
    // exec from the parent's attachment; the caller takes it exactly once
    // at start, so no other object of this process owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Closes every descriptor in `first..=last` (inclusive, as raw numbers).
pub(crate) fn close_range(first: u32, last: u32) -> Result<(), Errno> {
    // SAFETY: close_range takes two integers and a flag word and touches no
    // memory of ours. Closing descriptors is sound here because the caller
    // (step 1 of `confine`) owns the whole process and keeps no Rust object
    // that refers to the closed numbers except those on its keep-list, which
    // lie outside every range passed in.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            libc::c_uint::from(first),
            libc::c_uint::from(last),
            CLOSE_RANGE_CLOSE,
        )
    };
    cerr(ret).map(drop)
}

/// Closes one descriptor by number, ignoring `EBADF` (fallback for kernels
/// before 5.9 that lack `close_range`).
pub(crate) fn close_one(fd: i32) {
    // SAFETY: same argument as `close_range`: the number is not on the
    // keep-list and no Rust object of this process owns it any more once
    // confinement has begun. close(2) reads no memory.
    let _ = unsafe { libc::close(fd) };
}

/// The Landlock ABI version the running kernel implements, or 0 when Landlock
/// is not built in or disabled at boot.
pub fn landlock_abi_version() -> i32 {
    // SAFETY: with a NULL attribute pointer and size 0 the kernel reads no
    // user memory; the VERSION flag only returns an integer.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0_usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if ret < 0 {
        0
    } else {
        i32::try_from(ret).unwrap_or(i32::MAX)
    }
}

/// Effective and permitted capability sets of the calling thread, as read by
/// `capget(2)` (version 3, both 32-bit halves merged).
pub(crate) fn capabilities() -> Result<(u64, u64), Errno> {
    let mut header = libc_cap_header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [libc_cap_data::default(); 2];
    // SAFETY: `header` and `data` are live, properly aligned repr(C) values of
    // the layout capget(2) documents for version 3 (a header and an array of
    // two data structs); the kernel writes at most those two structs.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_capget,
            std::ptr::addr_of_mut!(header),
            data.as_mut_ptr(),
        )
    };
    cerr(ret)?;
    let effective = u64::from(data[0].effective) | (u64::from(data[1].effective) << 32);
    let permitted = u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32);
    Ok((effective, permitted))
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct libc_cap_header {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct libc_cap_data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Probe helpers: each attempts one operation the sandbox must forbid, with
/// arguments that would make it succeed unconfined, and undoes any effect.
/// Used by the `aivault-probe` binary; not part of the supported API.
#[doc(hidden)]
pub mod probe {
    use nix::errno::Errno;

    use super::cerr;

    /// `io_uring_setup(1, &params)`; closes the ring if one was created.
    pub fn io_uring_setup() -> Result<(), Errno> {
        // struct io_uring_params is 120 bytes; zeroed means "defaults".
        let mut params = [0_u64; 15];
        // SAFETY: `params` is a live, zeroed, 8-aligned buffer of exactly
        // sizeof(struct io_uring_params) bytes that the kernel may write.
        let fd =
            cerr(unsafe { libc::syscall(libc::SYS_io_uring_setup, 1_u32, params.as_mut_ptr()) })?;
        super::close_one(i32::try_from(fd).unwrap_or(-1));
        Ok(())
    }

    /// `keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)`.
    pub fn keyctl() -> Result<(), Errno> {
        const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
        const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
        // SAFETY: all three arguments are integers; the kernel reads and
        // writes no user memory for this operation.
        cerr(unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                KEYCTL_GET_KEYRING_ID,
                KEY_SPEC_SESSION_KEYRING,
                0_i64,
            )
        })
        .map(drop)
    }

    /// Raw `clone(CLONE_NEWUSER | SIGCHLD)`; a child that gets created exits
    /// at once with `_exit(0)` and is reaped.
    pub fn clone_newuser() -> Result<(), Errno> {
        let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong;
        // SAFETY: without CLONE_VM the child gets a copy of the address space
        // (fork semantics) and a NULL stack means "same stack pointer", which
        // is valid in the copy. The child runs nothing but `_exit`, which is
        // async-signal-safe, so no lock or allocator state is touched.
        let pid = cerr(unsafe {
            libc::syscall(libc::SYS_clone, flags, 0_usize, 0_usize, 0_usize, 0_usize)
        })?;
        if pid == 0 {
            // SAFETY: see above; terminates the child immediately.
            unsafe { libc::_exit(0) };
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(-1));
        let _ = nix::sys::wait::waitpid(pid, None);
        Ok(())
    }

    /// Raw `clone3(NULL, 0)`; the sandbox answers `ENOSYS` (unconfined the
    /// kernel answers `EINVAL` for the undersized argument).
    pub fn clone3() -> Result<(), Errno> {
        // SAFETY: a NULL pointer with size 0 is rejected before the kernel
        // reads or writes anything; no process can be created.
        cerr(unsafe { libc::syscall(libc::SYS_clone3, 0_usize, 0_usize) }).map(drop)
    }
}

/// Issues a system call whose arguments are plain integers (test-only).
///
/// Callers pass only integers, NULL or deliberately invalid addresses, so the
/// kernel can never write into memory this process uses.
#[cfg(test)]
pub(crate) fn raw_syscall(nr: libc::c_long, args: [u64; 6]) -> Result<i64, Errno> {
    // SAFETY: test-only; every call site (the seccomp table tests) passes
    // integers, NULL, or the unmapped address 1 for pointer arguments, so the
    // kernel either rejects the call or reads/writes no memory of ours. The
    // calls are made on a dedicated thread under the filter being tested, and
    // none of the argument combinations can create a process or thread.
    let ret = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) };
    cerr(ret)
}

// ------------------------------------------------------------ runner process
//
// What follows serves the `aivault-runner` binary: the child's side of
// fork/exec, and a pidfd to learn when the command exits.

/// `pidfd_open(pid, 0)`: a close-on-exec descriptor that polls readable when
/// the process exits (Linux 5.3+; `ENOSYS` before).
pub fn pidfd_open(pid: Pid) -> Result<OwnedFd, Errno> {
    // SAFETY: both arguments are integers; the kernel reads no memory of ours.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0_u32) };
    let fd = RawFd::try_from(cerr(ret)?).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel just created this descriptor for us; nothing else
    // refers to the number, so the OwnedFd is its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `argv` and `envp` prepared before `fork`, so the child needs no
/// allocation: NUL-terminated entries (wiped on drop, since the environment
/// holds the secrets) and NULL-terminated pointer arrays into them.
pub struct ExecVectors {
    /// Kept alive (and unmodified) while the pointers below refer to them.
    _argv: Vec<Zeroizing<Vec<u8>>>,
    _envp: Vec<Zeroizing<Vec<u8>>>,
    argv_ptrs: Vec<*const c_char>,
    envp_ptrs: Vec<*const c_char>,
}

impl ExecVectors {
    /// Every entry must end with its only NUL byte (`EINVAL` otherwise);
    /// `argv` must not be empty.
    pub fn new(
        argv: Vec<Zeroizing<Vec<u8>>>,
        envp: Vec<Zeroizing<Vec<u8>>>,
    ) -> Result<ExecVectors, Errno> {
        let valid = |e: &Zeroizing<Vec<u8>>| {
            e.iter().position(|&b| b == 0) == Some(e.len().wrapping_sub(1))
        };
        if argv.is_empty() || !argv.iter().all(valid) || !envp.iter().all(valid) {
            return Err(Errno::EINVAL);
        }
        // The heap buffers do not move when the Vecs holding them move, so
        // the pointers stay valid as long as the entries live unmodified.
        let ptrs = |v: &[Zeroizing<Vec<u8>>]| -> Vec<*const c_char> {
            v.iter()
                .map(|e| e.as_ptr().cast::<c_char>())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        Ok(ExecVectors {
            argv_ptrs: ptrs(&argv),
            envp_ptrs: ptrs(&envp),
            _argv: argv,
            _envp: envp,
        })
    }
}

impl std::fmt::Debug for ExecVectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecVectors")
            .field("argc", &(self.argv_ptrs.len() - 1))
            .field("envc", &(self.envp_ptrs.len() - 1))
            .finish_non_exhaustive()
    }
}

/// Descriptors the command's process starts from.
#[derive(Debug, Clone, Copy)]
pub struct ChildFds<'a> {
    /// The executable, run with `execveat(exe, "", …, AT_EMPTY_PATH)`.
    pub exe: BorrowedFd<'a>,
    /// Become the command's descriptors 0, 1 and 2. Must be numbered above
    /// 2 (the runner keeps 0–2 open, so new descriptors always are).
    pub stdio: [BorrowedFd<'a>; 3],
    /// Write end of a close-on-exec pipe: receives the errno (4 bytes,
    /// native endian) if exec fails, and is closed by a successful exec.
    pub status: BorrowedFd<'a>,
}

/// Starts the command: a child that shares the runner's memory until it
/// executes (`clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn` does, with
/// the runner suspended meanwhile) starts a new session, moves `fds.stdio`
/// to 0/1/2, restores the default `SIGPIPE` action and an empty signal
/// mask, and executes `fds.exe`. If that fails it reports errno on
/// `fds.status` and exits with 127. Returns the child's pid.
///
/// Sharing the memory spares copying the runner's page tables and the
/// copy-on-write faults that follow a `fork` in both processes (measured:
/// docs/benchmarks.md).
pub fn fork_exec(fds: &ChildFds<'_>, vectors: &ExecVectors) -> Result<Pid, Errno> {
    let stdio = fds.stdio.map(|fd| fd.as_raw_fd());
    if stdio.iter().any(|&fd| fd <= 2) {
        return Err(Errno::EINVAL);
    }
    let args = ChildArgs {
        exe: fds.exe.as_raw_fd(),
        stdio,
        status: fds.status.as_raw_fd(),
        argv: vectors.argv_ptrs.as_ptr(),
        envp: vectors.envp_ptrs.as_ptr(),
    };
    // The child's own stack: it runs only `child_exec`, a few frames deep.
    let mut stack = vec![0u8; 64 * 1024];
    // SAFETY: `stack` and `args` (and the vectors it points into) outlive
    // the child's use of them: `CLONE_VFORK` suspends this thread until the
    // child has executed or exited, and both live on past this call. The
    // stack top is 16-byte aligned inside `stack`. Every signal is blocked
    // across the clone, so no handler can run on the child's stack before
    // it resets the mask right before `execveat`. The child runs
    // `spawned_child` only (see there).
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len()) as usize & !15;
        let mut all = std::mem::zeroed::<libc::sigset_t>();
        let mut old = std::mem::zeroed::<libc::sigset_t>();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            spawned_child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::addr_of!(args) as *mut libc::c_void,
        );
        let err = Errno::last();
        libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(err);
        }
        pid
    };
    drop(stack);
    Ok(Pid::from_raw(pid))
}

/// What the command's child needs, prepared before the clone.
struct ChildArgs {
    exe: RawFd,
    stdio: [RawFd; 3],
    status: RawFd,
    argv: *const *const c_char,
    envp: *const *const c_char,
}

/// Entry point of the command's child (see [`fork_exec`]).
extern "C" fn spawned_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive while the parent is
    // suspended by `CLONE_VFORK`, that is for this child's whole life
    // before exec; its pointers satisfy `child_exec`'s contract.
    unsafe {
        let a = &*(arg as *const ChildArgs);
        child_exec(a.exe, a.stdio, a.status, a.argv, a.envp)
    }
}

/// The child's side of [`fork_exec`]; never returns.
///
/// # Safety
///
/// Call only in the child started by [`fork_exec`], which shares the
/// suspended runner's memory: it may make system calls through libc's
/// thin wrappers (which take no lock and allocate nothing), write to its own
/// stack and to `errno`, nothing else. `argv` and `envp` must be
/// NULL-terminated arrays of NUL-terminated strings that stay valid (the
/// parent's [`ExecVectors`] guarantees this).
unsafe fn child_exec(
    exe: RawFd,
    stdio: [RawFd; 3],
    status: RawFd,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> ! {
    let fail = |status: RawFd| -> ! {
        let errno = Errno::last_raw().to_ne_bytes();
        // SAFETY: write(2) and _exit(2) are async-signal-safe; `errno` is a
        // live 4-byte array. Nothing can be done if the write fails.
        unsafe {
            let _ = libc::write(status, errno.as_ptr().cast(), errno.len());
            libc::_exit(127)
        }
    };
    // SAFETY: every call in this block is async-signal-safe (setsid, dup2,
    // signal/sigaction, sigemptyset, sigprocmask, syscall(execveat)) and
    // takes integers or pointers to memory that is live in this child.
    unsafe {
        // Own session: a terminal's job-control signals do not reach it.
        libc::setsid();
        for (target, &fd) in (0..).zip(stdio.iter()) {
            // dup2 clears close-on-exec on the copy; every fd is > 2.
            if libc::dup2(fd, target) < 0 {
                fail(status);
            }
        }
        // Rust's runtime ignores SIGPIPE and ignored signals survive exec.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::syscall(
            libc::SYS_execveat,
            exe,
            c"".as_ptr(),
            argv,
            envp,
            libc::AT_EMPTY_PATH,
        );
    }
    fail(status)
}
