//! Starting the runner without copying the daemon: `clone(CLONE_VM |
//! CLONE_VFORK)`, the way `posix_spawn` does it.
//!
//! A `fork` of the multithreaded daemon copies its page tables, write-protects
//! every page (a TLB shootdown on every CPU the daemon ran on) and tears the
//! copy down again at `execve`; on the run path that cost more than the
//! runner's own start. Here the child borrows the daemon's memory, and the
//! calling thread sleeps until the child has executed the runner or died.
//!
//! What makes sharing the memory sound:
//!
//! * everything the child needs (paths, argv, groups) is prepared before the
//!   clone; the child allocates nothing and takes no lock;
//! * the child makes raw system calls only. In particular glibc's
//!   `setresuid` would ask every *daemon* thread to change its ids too (its
//!   thread list lives in the shared memory), so the identity change is
//!   `syscall(SYS_setresuid, …)`, which changes the calling task alone;
//! * every signal is blocked in the calling thread across the clone, so no
//!   daemon signal handler can run on the child's stack; the child resets
//!   every handler to the default and only then unblocks;
//! * a failure is reported through an atomic in the daemon's memory, which
//!   the parent reads after the child is gone from it.

use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use super::ChildIdentity;

/// Size of the child's stack (it calls a handful of system calls).
const STACK: usize = 64 * 1024;

/// The runner to start and how.
#[derive(Debug)]
pub struct RunnerSpawn<'a> {
    pub program: &'a CStr,
    pub argv: &'a [&'a CStr],
    pub cwd: &'a CStr,
    /// Becomes the child's stdin and stdout (stderr is inherited).
    pub null_in: RawFd,
    pub null_out: RawFd,
    pub who: &'a ChildIdentity,
}

/// A started runner; [`Spawned::wait`] reaps it.
#[derive(Debug)]
pub struct Spawned {
    pid: libc::pid_t,
    reaped: bool,
}

impl Spawned {
    pub fn id(&self) -> i32 {
        self.pid
    }

    /// Waits for the runner to end (once).
    pub fn wait(&mut self) -> io::Result<()> {
        if self.reaped {
            return Ok(());
        }
        wait(self.pid)?;
        self.reaped = true;
        Ok(())
    }

    /// Reaps the runner if it has ended; true once it is reaped.
    pub fn try_wait(&mut self) -> bool {
        if self.reaped {
            return true;
        }
        let mut status = 0;
        // SAFETY: `pid` is our unreaped child; `status` is a valid out-pointer.
        if unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) } == self.pid {
            self.reaped = true;
        }
        self.reaped
    }
}

fn wait(pid: libc::pid_t) -> io::Result<()> {
    loop {
        let mut status = 0;
        // SAFETY: `pid` is our unreaped child; `status` is a valid out-pointer.
        if unsafe { libc::waitpid(pid, &mut status, 0) } != -1 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Everything the child reads, prepared by the parent.
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    null_in: RawFd,
    null_out: RawFd,
    cgroup_procs: RawFd,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: *const libc::gid_t,
    ngroups: usize,
    /// 0, or the errno of the step that failed.
    error: AtomicI32,
}

/// The kernel's `struct sigaction` for `rt_sigaction`; all zero is
/// `SIG_DFL` with no flags and an empty mask.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: u64,
    restorer: usize,
    mask: u64,
}

/// Highest signal number + 1.
const NSIG: libc::c_long = 65;

/// Runs in the child, on its own stack, in the daemon's memory.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to the parent's `ChildArgs`, which outlives the
    // child's use of it: the parent is suspended (CLONE_VFORK) until the
    // child executes or exits. Only raw system calls follow; see the module
    // documentation for why that is all the child may do.
    unsafe {
        let a = &*(arg as *const ChildArgs);
        let fail = |a: &ChildArgs| -> libc::c_int {
            a.error.store(*libc::__errno_location(), Ordering::SeqCst);
            libc::syscall(libc::SYS_exit_group, 127);
            127
        };
        let default = KernelSigaction {
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        for signal in 1..NSIG {
            if signal != libc::SIGKILL as libc::c_long && signal != libc::SIGSTOP as libc::c_long {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signal,
                    &default as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
        if a.cgroup_procs >= 0
            && libc::syscall(libc::SYS_write, a.cgroup_procs, b"0".as_ptr(), 1usize) != 1
        {
            return fail(a);
        }
        if libc::syscall(libc::SYS_dup3, a.null_in, 0, 0) == -1
            || libc::syscall(libc::SYS_dup3, a.null_out, 1, 0) == -1
        {
            return fail(a);
        }
        // Nothing of the daemon's beyond 0-2 reaches the runner, even a
        // descriptor some library received without close-on-exec. (Kernels
        // before 5.9 lack close_range; the runner closes them at
        // confinement too.)
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        if libc::syscall(libc::SYS_chdir, a.cwd) == -1 {
            return fail(a);
        }
        if libc::syscall(libc::SYS_setgroups, a.ngroups, a.groups) == -1
            || libc::syscall(libc::SYS_setresgid, a.gid, a.gid, a.gid) == -1
            || libc::syscall(libc::SYS_setresuid, a.uid, a.uid, a.uid) == -1
        {
            return fail(a);
        }
        let empty: u64 = 0;
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        );
        libc::syscall(libc::SYS_execve, a.program, a.argv, a.envp);
        fail(a)
    }
}

/// Starts the runner as described (see the module documentation), in order:
/// join the cgroup (as root), stdin/stdout on `/dev/null`, every other
/// descriptor above 2 closed, the working directory, then `setgroups`, `setresgid`, `setresuid`,
/// and `execve` with an empty environment. Any failing step fails the spawn.
pub fn spawn_runner(spec: &RunnerSpawn<'_>) -> io::Result<Spawned> {
    let mut argv: Vec<*const libc::c_char> = spec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    let args = ChildArgs {
        program: spec.program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: spec.cwd.as_ptr(),
        null_in: spec.null_in,
        null_out: spec.null_out,
        cgroup_procs: spec.who.cgroup_procs.unwrap_or(-1),
        uid: spec.who.uid,
        gid: spec.who.gid,
        groups: spec.who.groups.as_ptr(),
        ngroups: spec.who.groups.len(),
        error: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; STACK];
    // SAFETY: `child` only reads `args` and makes raw system calls (module
    // documentation); CLONE_VFORK keeps this thread, `args`, `argv`, `envp`
    // and `stack` in place until the child no longer uses them.
    let pid = unsafe {
        super::clone_vm(
            child,
            &mut stack,
            libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const ChildArgs as *mut libc::c_void,
        )
    }?;
    drop(stack);
    match args.error.load(Ordering::SeqCst) {
        0 => Ok(Spawned { pid, reaped: false }),
        errno => {
            wait(pid)?;
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}
