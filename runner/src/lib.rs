//! Self-confinement of `aivault-runner`.
//!
//! The runner is started by `aivaultd` under a fresh, unprivileged uid/gid
//! with no supplementary groups and no capabilities. Right before it
//! executes the allowlisted command it calls [`confine`] with a
//! [`SandboxSpec`]; the call is irreversible and applies, in this order
//! (see `docs/runner-sandbox.md`):
//!
//! 1. close every descriptor above 2 except an explicit keep-list,
//! 2. resource limits (`RLIMIT_CORE` 0, `NPROC`, `NOFILE`, `AS`, `FSIZE`, `CPU`),
//! 3. identity check: not root, one uid, one gid, no groups (the caller's
//!    own groups in [`Isolation::Caller`]), no capabilities — the different
//!    uid is what keeps `/proc/<pid>/environ` from the caller,
//! 4. `PR_SET_NO_NEW_PRIVS`,
//! 5. Landlock (filesystem, TCP ports, signal and abstract-socket scopes),
//! 6. seccomp deny-list ([`seccomp`] holds the table).
//!
//! It returns an [`Enforcement`] that says what the kernel actually enforces,
//! for the daemon to audit. [`SandboxError`] has one variant per step.
//!
//! `aivault-runner` itself splits the steps: [`lock_down`] (4 and 6) as soon
//! as it starts, before it waits for a job, then [`confine_locked`] (1, 2,
//! 3, 5) once the job is there. The end state is the same.
#![deny(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};

mod fds;
pub mod handoff;
mod identity;
mod landlock_rules;
mod limits;
pub mod seccomp;
pub mod sys;

pub use aivault_proto::sandbox::{Enforcement, Isolation, Level, Limits, SandboxSpec};

/// A failed confinement step. The process must not exec after any of these.
/// Messages carry no secret values; paths are named by role and index only.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Step 1.
    #[error("closing inherited file descriptors failed")]
    CloseFds(#[source] nix::Error),
    /// Step 2.
    #[error("setting {resource} failed")]
    Rlimit {
        /// Name of the limit, e.g. `RLIMIT_NPROC`.
        resource: &'static str,
        /// Kernel error.
        #[source]
        source: nix::Error,
    },
    /// Step 3.
    #[error("refusing to confine: {0}")]
    Identity(&'static str),
    /// Step 4.
    #[error("setting no_new_privs failed")]
    NoNewPrivs(#[source] nix::Error),
    /// Step 5: a path named in the spec cannot be opened.
    #[error("landlock: cannot open {role} path #{index}")]
    LandlockPath {
        /// `home`, `tmp`, `read`, `write`, `exec` or `cwd`.
        role: &'static str,
        /// Position in its list (0 for single paths).
        index: usize,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Step 5: building or applying the ruleset failed.
    #[error("landlock ruleset failed")]
    Landlock(#[source] landlock::RulesetError),
    /// Step 5: `require_full_landlock` is set and the kernel falls short.
    #[error("landlock enforcement is {0:?} but full enforcement is required")]
    LandlockIncomplete(Level),
    /// Step 6: compiling the filter failed.
    #[error("compiling the seccomp filter failed")]
    SeccompBuild(#[source] seccompiler::BackendError),
    /// Step 6: installing the filter failed.
    #[error("installing the seccomp filter failed")]
    SeccompApply(#[source] seccompiler::Error),
}

/// Confines the calling process and returns what is enforced.
///
/// Irreversible. Call it in the runner right before `exec`, from the thread
/// that will exec: Landlock and seccomp apply to the calling thread and are
/// inherited across `execve` and by every child. Closes every descriptor
/// above 2; use [`confine_keeping`] to keep the daemon connection.
pub fn confine(spec: &SandboxSpec) -> Result<Enforcement, SandboxError> {
    confine_keeping(spec, &[])
}

/// [`confine`], keeping the given descriptors open (e.g. the daemon
/// connection). Kept descriptors should be close-on-exec unless the command
/// is meant to inherit them.
pub fn confine_keeping(
    spec: &SandboxSpec,
    keep: &[BorrowedFd<'_>],
) -> Result<Enforcement, SandboxError> {
    // 1. No inherited descriptor may leak into the command.
    let keep: Vec<i32> = keep.iter().map(AsRawFd::as_raw_fd).collect();
    fds::close_all_except(&keep).map_err(SandboxError::CloseFds)?;

    // 2. Resource limits (core dumps off: a core holds the environment).
    limits::apply(&spec.limits)?;

    // 3. The uid boundary protects /proc/<pid>/environ; make sure it exists.
    identity::check_unprivileged(spec.isolation)?;

    // 4. No set-uid/file-capability gains across exec; required by Landlock
    //    and seccomp for unprivileged callers.
    nix::sys::prctl::set_no_new_privs().map_err(SandboxError::NoNewPrivs)?;

    // 5. Landlock.
    let landlock = landlock_rules::apply(spec)?;

    // 6. Seccomp, last: nothing after it but returning and exec.
    seccomp::apply().map_err(seccomp_error)?;
    Ok(enforcement(&landlock))
}

fn seccomp_error(e: seccomp::SeccompError) -> SandboxError {
    match e {
        seccomp::SeccompError::Build(e) => SandboxError::SeccompBuild(e),
        seccomp::SeccompError::Apply(e) => SandboxError::SeccompApply(e),
    }
}

/// Proof that [`lock_down`] ran in this process.
#[derive(Debug)]
pub struct LockedDown(());

/// Steps 4 and 6 ahead of the others: `no_new_privs` and the seccomp
/// deny-list need nothing from a job, and installing the filters is the
/// most expensive step (the kernel prepares each program), so the runner
/// applies them before it waits for its job — a warm runner while idle.
/// Irreversible. The deny-list refuses nothing the remaining steps use
/// (`close_range`, `prlimit64`, `landlock_*`).
pub fn lock_down() -> Result<LockedDown, SandboxError> {
    nix::sys::prctl::set_no_new_privs().map_err(SandboxError::NoNewPrivs)?;
    seccomp::apply().map_err(seccomp_error)?;
    Ok(LockedDown(()))
}

/// After [`lock_down`]: steps 1, 2, 3 and 5, in that order, keeping the
/// given descriptors. The end state is that of [`confine_keeping`].
pub fn confine_locked(
    spec: &SandboxSpec,
    keep: &[BorrowedFd<'_>],
    _locked: &LockedDown,
) -> Result<Enforcement, SandboxError> {
    let keep: Vec<i32> = keep.iter().map(AsRawFd::as_raw_fd).collect();
    fds::close_all_except(&keep).map_err(SandboxError::CloseFds)?;
    limits::apply(&spec.limits)?;
    identity::check_unprivileged(spec.isolation)?;
    let landlock = landlock_rules::apply(spec)?;
    Ok(enforcement(&landlock))
}

fn enforcement(landlock: &landlock_rules::Outcome) -> Enforcement {
    Enforcement {
        landlock_abi: landlock.abi,
        landlock: landlock.level,
        net_restricted: landlock.net_restricted,
        scoped_signals: landlock.scoped,
        scoped_abstract_unix: landlock.scoped,
        seccomp: true,
    }
}
