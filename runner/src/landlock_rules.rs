//! Step 5: the Landlock ruleset.
//!
//! Handled (denied unless a rule allows): every filesystem right of ABI 6,
//! TCP bind and connect, and the signal and abstract-unix-socket scopes.
//! Allowed:
//!
//! | path                                   | rights                          |
//! |----------------------------------------|---------------------------------|
//! | `/usr` `/bin` `/sbin` `/lib` `/lib64`  | read, execute                   |
//! | `/etc`, `/run/systemd/resolve`         | read                            |
//! | `/dev/{null,zero,full,random,urandom}` | read, write                     |
//! | `home`, `tmp`, `write`                 | read, write, create, remove     |
//! | `read`, `cwd`                          | read                            |
//! | `cwd` with `cwd_writable`              | read, write, create, remove     |
//! | `exec`                                 | read, execute                   |
//!
//! Everything else — `/proc` (so `/proc/self/environ`), `/sys`, `/root`,
//! `/home`, `/var`, `/run`, `/tmp` — is denied. Nothing writable is
//! executable. Rights the running kernel does not know are dropped
//! (best-effort) and the achieved [`Level`] is reported.

use std::path::Path;

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath, PathFd,
    RestrictionStatus, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetStatus,
    Scope, ABI,
};

use crate::{sys, Level, SandboxError, SandboxSpec};

/// The newest ABI whose rights we request and have tested.
const TARGET_ABI: ABI = ABI::V6;

/// System directories: read and execute (binaries, shared libraries, ld.so).
const SYSTEM_EXEC: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib64"];
/// Read-only system configuration: ld.so.cache, passwd/group (DAC still
/// hides shadow), TLS roots, resolv.conf and its usual symlink target.
const SYSTEM_READ: &[&str] = &["/etc", "/run/systemd/resolve"];
/// Character devices ordinary programs open; no tty, no /dev/shm.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// What Landlock achieved.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    pub(crate) abi: i32,
    pub(crate) level: Level,
    pub(crate) net_restricted: bool,
    pub(crate) scoped: bool,
}

fn read_only() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::ReadDir
}

fn read_exec() -> BitFlags<AccessFs> {
    read_only() | AccessFs::Execute
}

fn read_write() -> BitFlags<AccessFs> {
    read_only()
        | AccessFs::WriteFile
        | AccessFs::Truncate
        | AccessFs::RemoveDir
        | AccessFs::RemoveFile
        | AccessFs::MakeDir
        | AccessFs::MakeReg
        | AccessFs::MakeSym
        | AccessFs::MakeFifo
        | AccessFs::MakeSock
        | AccessFs::Refer
}

fn device() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate
}

/// Opens `path` and builds a rule; directory-only rights are removed for
/// non-directories so the kernel does not reject (or downgrade) the rule.
fn rule(path: &Path, access: BitFlags<AccessFs>) -> std::io::Result<PathBeneath<PathFd>> {
    let is_dir = std::fs::metadata(path)?.is_dir();
    let access = if is_dir {
        access
    } else {
        access & AccessFs::from_file(TARGET_ABI)
    };
    let fd = PathFd::new(path).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(PathBeneath::new(fd, access))
}

fn add(
    ruleset: RulesetCreated,
    role: &'static str,
    index: usize,
    path: &Path,
    access: BitFlags<AccessFs>,
) -> Result<RulesetCreated, SandboxError> {
    let rule = rule(path, access).map_err(|source| SandboxError::LandlockPath {
        role,
        index,
        source,
    })?;
    ruleset.add_rule(rule).map_err(SandboxError::Landlock)
}

fn add_system(
    mut ruleset: RulesetCreated,
    paths: &[&str],
    access: BitFlags<AccessFs>,
) -> Result<RulesetCreated, SandboxError> {
    for (index, path) in paths.iter().enumerate() {
        let path = Path::new(path);
        // Absent on some systems (e.g. /lib64 on aarch64): nothing to allow.
        if !path.exists() {
            continue;
        }
        ruleset = add(ruleset, "system", index, path, access)?;
    }
    Ok(ruleset)
}

fn build(spec: &SandboxSpec) -> Result<RulesetCreated, SandboxError> {
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .and_then(|r| r.handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp))
        .and_then(|r| r.scope(Scope::AbstractUnixSocket | Scope::Signal))
        .and_then(Ruleset::create)
        .map_err(SandboxError::Landlock)?;

    ruleset = add_system(ruleset, SYSTEM_EXEC, read_exec())?;
    ruleset = add_system(ruleset, SYSTEM_READ, read_only())?;
    ruleset = add_system(ruleset, DEVICES, device())?;
    ruleset = add(ruleset, "home", 0, &spec.home, read_write())?;
    ruleset = add(ruleset, "tmp", 0, &spec.tmp, read_write())?;
    for (i, path) in spec.read.iter().enumerate() {
        ruleset = add(ruleset, "read", i, path, read_only())?;
    }
    for (i, path) in spec.write.iter().enumerate() {
        ruleset = add(ruleset, "write", i, path, read_write())?;
    }
    for (i, path) in spec.exec.iter().enumerate() {
        ruleset = add(ruleset, "exec", i, path, read_exec())?;
    }
    if let Some(cwd) = &spec.cwd {
        let access = if spec.cwd_writable {
            read_write()
        } else {
            read_only()
        };
        ruleset = add(ruleset, "cwd", 0, cwd, access)?;
    }
    for &port in &spec.tcp_connect {
        ruleset = ruleset
            .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
            .map_err(SandboxError::Landlock)?;
    }
    for &port in &spec.tcp_bind {
        ruleset = ruleset
            .add_rule(NetPort::new(port, AccessNet::BindTcp))
            .map_err(SandboxError::Landlock)?;
    }
    Ok(ruleset)
}

/// Maps the crate's status to our level.
pub(crate) fn level_of(status: &RestrictionStatus) -> Level {
    match status.ruleset {
        RulesetStatus::FullyEnforced => Level::Full,
        RulesetStatus::PartiallyEnforced => Level::Partial,
        RulesetStatus::NotEnforced => Level::None,
    }
}

/// What a kernel of the given ABI enforces of our request.
pub(crate) fn outcome(abi: i32, level: Level) -> Outcome {
    let enforced = level != Level::None;
    Outcome {
        abi,
        level,
        net_restricted: enforced && abi >= 4,
        scoped: enforced && abi >= 6,
    }
}

pub(crate) fn apply(spec: &SandboxSpec) -> Result<Outcome, SandboxError> {
    let abi = sys::landlock_abi_version();
    let status = build(spec)?
        .restrict_self()
        .map_err(SandboxError::Landlock)?;
    let outcome = outcome(abi, level_of(&status));
    if spec.require_full_landlock && outcome.level != Level::Full {
        return Err(SandboxError::LandlockIncomplete(outcome.level));
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_kernels_report_what_they_lack() {
        let v3 = outcome(3, Level::Partial);
        assert!(!v3.net_restricted && !v3.scoped);
        let v4 = outcome(4, Level::Partial);
        assert!(v4.net_restricted && !v4.scoped);
        let v6 = outcome(6, Level::Full);
        assert!(v6.net_restricted && v6.scoped);
        let none = outcome(0, Level::None);
        assert!(!none.net_restricted && !none.scoped);
    }

    #[test]
    fn nothing_writable_is_executable() {
        assert!(!read_write().contains(AccessFs::Execute));
        assert!(!read_only().contains(AccessFs::Execute));
        assert!(!device().contains(AccessFs::Execute));
    }
}
