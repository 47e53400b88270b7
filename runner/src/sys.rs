//! Every raw system call of the runner crate lives here.
//!
//! The rest of the crate is `unsafe`-free; each block below carries a SAFETY
//! comment that says why that particular call is sound. Functions return
//! `nix::Error` (an errno) so callers can wrap them in their step's error
//! variant.
#![allow(unsafe_code)]

use nix::errno::Errno;

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
