//! Step 3: the identity precondition.
//!
//! What keeps the caller from reading `/proc/<pid>/environ` of the command
//! (and from ptracing it) is that the command runs under a uid the caller
//! does not own: procfs checks `PTRACE_MODE_READ` against the target's
//! credentials. `PR_SET_DUMPABLE` would not help — `execve` resets it. So
//! before confining we assert the boundary is really there: no root, a
//! single uid and gid, no supplementary groups, no capabilities.
//!
//! In [`Isolation::Caller`] runs there is no such boundary by design; the
//! runner then carries the caller's supplementary groups, and the check
//! still refuses root, group 0, differing ids and capabilities.

use nix::unistd::{getgroups, getresgid, getresuid};

use crate::{sys, Isolation, SandboxError};

pub(crate) fn check_unprivileged(isolation: Isolation) -> Result<(), SandboxError> {
    let uids = getresuid().map_err(|_| SandboxError::Identity("cannot read uids"))?;
    let gids = getresgid().map_err(|_| SandboxError::Identity("cannot read gids"))?;
    if uids.real.is_root() || uids.effective.is_root() || uids.saved.is_root() {
        return Err(SandboxError::Identity("running as root"));
    }
    if uids.real != uids.effective || uids.real != uids.saved {
        return Err(SandboxError::Identity(
            "real, effective and saved uid differ",
        ));
    }
    if gids.real.as_raw() == 0 || gids.effective.as_raw() == 0 || gids.saved.as_raw() == 0 {
        return Err(SandboxError::Identity("running with gid 0"));
    }
    if gids.real != gids.effective || gids.real != gids.saved {
        return Err(SandboxError::Identity(
            "real, effective and saved gid differ",
        ));
    }
    let groups = getgroups().map_err(|_| SandboxError::Identity("cannot read groups"))?;
    if groups.iter().any(|g| g.as_raw() == 0) {
        return Err(SandboxError::Identity("running with supplementary group 0"));
    }
    if isolation == Isolation::DynamicUid && groups.iter().any(|&g| g != gids.real) {
        return Err(SandboxError::Identity("supplementary groups present"));
    }
    let (effective, permitted) =
        sys::capabilities().map_err(|_| SandboxError::Identity("cannot read capabilities"))?;
    if effective != 0 || permitted != 0 {
        return Err(SandboxError::Identity("capabilities present"));
    }
    Ok(())
}
