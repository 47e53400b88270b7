//! Starting a jailed program: a `clone` of the jail host (no `CLONE_VM`, no
//! `CLONE_VFORK`), the child changing its identity and executing the
//! program.
//!
//! Only the jail host (`crate::jail::host`) calls this. The child gets a
//! *copy* of the jail host's memory, never a share of it: between its
//! `setresuid` and its `execve` a child is a process of the run's uid,
//! dumpable wherever `fs.suid_dumpable = 1`, and a process of that uid
//! (the caller's own, in caller mode) could write into a shared memory and
//! so into a root process. Writing into the copy gains nothing: it is
//! already that uid, without capabilities, and it holds no key and no
//! descriptor of the host's. The jail host is small, so the copy is cheap;
//! the daemon, whose memory is large and holds the keys, never clones.
//!
//! How the child is written:
//!
//! * everything it needs (paths, argv, groups) is prepared before the
//!   clone; it makes raw system calls only and runs on a stack of its own
//!   with a guard page below it;
//! * `no_new_privs` is set before `execve`, so the program cannot gain
//!   privileges through a set-id file or file capabilities;
//! * every signal is blocked in the calling thread across the clone; the
//!   child resets every handler to the default and only then unblocks;
//! * a failing step writes its errno to a close-on-exec pipe; the jail host
//!   reads it until end-of-file (the program was executed, or the child
//!   died), for a bounded time: a child stopped before its `execve` (a
//!   caller-mode run's uid is the caller's, who may signal it) is killed,
//!   never waited for, so no run can stall the jail host.

use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use super::ChildIdentity;

/// Size of the child's stack (it calls a handful of system calls).
const STACK: usize = 64 * 1024;

/// How long a child may take from the clone to its `execve`.
const EXEC_TIMEOUT: Duration = Duration::from_secs(5);

/// The program to start and how.
#[derive(Debug)]
pub struct JailSpawn<'a> {
    pub program: &'a CStr,
    pub argv: &'a [&'a CStr],
    pub cwd: &'a CStr,
    /// Becomes the child's stdin and stdout (stderr is inherited).
    pub null_in: RawFd,
    pub null_out: RawFd,
    pub who: &'a ChildIdentity,
    /// A detached mount (`super::workdir_mount`) and where to attach it:
    /// the child enters a mount namespace of its own first, so the mount
    /// exists there alone.
    pub workdir: Option<(RawFd, &'a CStr)>,
    /// A control socket that becomes the child's descriptor 3 (the only
    /// descriptor above 2 it keeps).
    pub control: Option<RawFd>,
}

/// Reaps the child `pid` if it has ended; true once it is reaped (or is
/// no child of this process any more).
pub fn reap_if_ended(pid: libc::pid_t) -> bool {
    let mut status = 0;
    // SAFETY: waitpid on one pid with a valid out-pointer; WNOHANG never
    // blocks.
    match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
        0 => false,
        -1 => io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD),
        _ => true,
    }
}

/// How long [`wait`] gives a child to end, before and after SIGKILL.
pub const END_LIMIT: Duration = Duration::from_secs(2);

/// Reaps the child `pid` if it has ended: its wait status, `None` while it
/// runs (or is stopped).
fn try_reap(pid: libc::pid_t) -> io::Result<Option<i32>> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on one pid with a valid out-pointer; WNOHANG never
        // blocks.
        match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
            0 => return Ok(None),
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            -1 => return Err(io::Error::last_os_error()),
            _ => return Ok(Some(status)),
        }
    }
}

/// Waits at most `limit` for the child `pid` to end (a pidfd when the
/// kernel has them, else polling).
fn ended_within(
    pid: libc::pid_t,
    pidfd: Option<&OwnedFd>,
    limit: Duration,
) -> io::Result<Option<i32>> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = try_reap(pid)? {
            return Ok(Some(status));
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        match pidfd {
            Some(fd) => {
                let ms = PollTimeout::try_from(left.as_millis().min(60_000) as i32)
                    .unwrap_or(PollTimeout::ZERO);
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, ms) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            None => std::thread::sleep(left.min(Duration::from_millis(1))),
        }
    }
}

/// Waits for the child `pid` to end and reaps it, returning its wait
/// status — bounded: a child that has not ended within `limit` (stopped by
/// a run process, traced, or stuck) is sent SIGKILL and given `limit`
/// again. A child that even then is not reaped is an error of kind
/// `TimedOut`: it is left (and whatever it uses with it), and the caller
/// must not wait for it again.
pub fn wait(pid: libc::pid_t, limit: Duration) -> io::Result<i32> {
    let pidfd = super::pidfd_open(pid).ok();
    if let Some(status) = ended_within(pid, pidfd.as_ref(), limit)? {
        return Ok(status);
    }
    // SAFETY: `pid` is our unreaped child, so it names exactly that
    // process; SIGKILL ends it even while stopped or traced.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    match ended_within(pid, pidfd.as_ref(), limit)? {
        Some(status) => Ok(status),
        None => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("child {pid} did not end even after SIGKILL"),
        )),
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
    /// The working directory's detached mount, or -1.
    workdir_mount: RawFd,
    /// Its mount point, resolved without following symbolic links.
    workdir_target: *const libc::c_char,
    workdir_how: libc::open_how,
    /// The control socket to put on descriptor 3, or -1; never 3 itself
    /// (the parent makes sure), nor is the report pipe then.
    control: RawFd,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: *const libc::gid_t,
    ngroups: usize,
    /// The write end of the report pipe (close-on-exec).
    report: RawFd,
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

const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// Highest signal number + 1.
const NSIG: libc::c_long = 65;

/// Runs in the child, on its own stack, in a copy of the jail host's memory.
extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to the child's copy of the parent's `ChildArgs`,
    // valid until the child executes or exits. Only raw system calls follow.
    unsafe {
        let a = &*(arg as *const ChildArgs);
        let fail = |a: &ChildArgs| -> libc::c_int {
            let errno: libc::c_int = *libc::__errno_location();
            libc::syscall(
                libc::SYS_write,
                a.report,
                &errno as *const libc::c_int,
                std::mem::size_of::<libc::c_int>(),
            );
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
        // The working directory's mount, in a mount namespace of the
        // run's own (a copy of the jail host's, every mount made private
        // first so that nothing propagates back to the host's): it exists
        // for the run's processes alone and goes with the last of them.
        // The mount point is opened without following symbolic links, as
        // root, before any process of the run exists.
        if a.workdir_mount >= 0 {
            if libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS) == -1
                || libc::syscall(
                    libc::SYS_mount,
                    std::ptr::null::<libc::c_char>(),
                    c"/".as_ptr(),
                    std::ptr::null::<libc::c_char>(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null::<libc::c_void>(),
                ) == -1
            {
                return fail(a);
            }
            let target = libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                a.workdir_target,
                &a.workdir_how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            );
            if target == -1
                || libc::syscall(
                    libc::SYS_move_mount,
                    a.workdir_mount,
                    c"".as_ptr(),
                    target as libc::c_int,
                    c"".as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
                ) == -1
            {
                return fail(a);
            }
        }
        // Nothing of the jail host's beyond 0-2 reaches the program (its
        // socket to the daemon above all), before the uid changes. (Kernels
        // before 5.9 lack close_range; the runner closes them at
        // confinement too.)
        // A control socket goes to descriptor 3 (without close-on-exec),
        // and is then the one kept above 2. Both it and the report pipe
        // are above 3 here (the parent made sure), so the copy replaces
        // nothing in use.
        let mut first_closed = 3u32;
        if a.control >= 0 {
            if libc::syscall(libc::SYS_dup3, a.control, 3, 0) == -1 {
                return fail(a);
            }
            first_closed = 4;
        }
        let report = a.report as u32;
        if report > first_closed {
            libc::syscall(libc::SYS_close_range, first_closed, report - 1, 0u32);
        }
        libc::syscall(libc::SYS_close_range, report + 1, u32::MAX, 0u32);
        // The working directory is entered as the new uid, so a directory
        // the run's uid controls (its home, which it could swap for a
        // symlink) cannot lead root anywhere.
        if libc::syscall(libc::SYS_setgroups, a.ngroups, a.groups) == -1
            || libc::syscall(libc::SYS_setresgid, a.gid, a.gid, a.gid) == -1
            || libc::syscall(libc::SYS_setresuid, a.uid, a.uid, a.uid) == -1
            || libc::syscall(libc::SYS_chdir, a.cwd) == -1
            || libc::syscall(
                libc::SYS_prctl,
                libc::PR_SET_NO_NEW_PRIVS,
                1u64,
                0u64,
                0u64,
                0u64,
            ) == -1
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

/// Starts the program as described (see the module documentation), in
/// order: join the cgroup (as root), stdin/stdout on `/dev/null`, the
/// working directory's mount in a mount namespace of its own, every
/// other descriptor above 2 closed, then `setgroups`, `setresgid`,
/// `setresuid`, the working directory, `no_new_privs`, and `execve` with an
/// empty environment. Any failing step fails the spawn. Returns the
/// child's pid; the caller reaps it.
pub fn spawn_jailed(spec: &JailSpawn<'_>) -> io::Result<libc::pid_t> {
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // With a control socket for descriptor 3, neither it nor the report
    // pipe may be 3 in the child: copies above 3 (close-on-exec) if so.
    let (report_w, control) = match spec.control {
        None => (report_w, None),
        Some(fd) => {
            let copy = above_3(report_w.as_raw_fd())?;
            // The parent must hold no write end but the one it drops below.
            drop(report_w);
            (copy, Some(above_3(fd)?))
        }
    };
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
        workdir_mount: spec.workdir.map_or(-1, |(fd, _)| fd),
        workdir_target: spec
            .workdir
            .map_or(std::ptr::null(), |(_, target)| target.as_ptr()),
        control: control.as_ref().map_or(-1, |c| c.as_raw_fd()),
        workdir_how: {
            // SAFETY: `open_how` is plain data; all zero is a valid value.
            let mut how: libc::open_how = unsafe { std::mem::zeroed() };
            how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
            how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
            how
        },
        uid: spec.who.uid,
        gid: spec.who.gid,
        groups: spec.who.groups.as_ptr(),
        ngroups: spec.who.groups.len(),
        report: report_w.as_raw_fd(),
    };
    let mut stack = super::GuardedStack::new(STACK)?;
    // SAFETY: `child` reads only its copy of `args` and makes raw system
    // calls (module documentation).
    let pid = unsafe {
        super::clone_copy(
            child,
            &mut stack,
            libc::SIGCHLD,
            &args as *const ChildArgs as *mut libc::c_void,
        )
    }?;
    drop(stack);
    drop(report_w);
    match read_report(report_r.as_fd()) {
        Ok(None) => Ok(pid),
        Ok(Some(errno)) => {
            wait(pid, END_LIMIT)?;
            Err(io::Error::from_raw_os_error(errno))
        }
        Err(e) => {
            // SAFETY: `pid` is our unreaped child, so it names that process.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            wait(pid, END_LIMIT)?;
            Err(e)
        }
    }
}

/// A close-on-exec copy of `fd` numbered above 3.
fn above_3(fd: RawFd) -> io::Result<OwnedFd> {
    let raw = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(4))?;
    // SAFETY: F_DUPFD_CLOEXEC just made this descriptor; nothing else
    // owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

/// Reads the child's report: `None` at end-of-file (executed, or died
/// without a word), the errno of a failed step, or an error when nothing
/// came within [`EXEC_TIMEOUT`].
fn read_report(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<Option<i32>> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = std::time::Instant::now() + EXEC_TIMEOUT;
    let mut buf = [0u8; 4];
    let mut got = 0;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::ZERO);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the child did not execute its program in time",
                ))
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        match nix::unistd::read(fd.as_raw_fd(), &mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::Error::other("a torn report from the child")),
            Ok(n) => {
                got += n;
                if got == buf.len() {
                    return Ok(Some(i32::from_ne_bytes(buf)));
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}
