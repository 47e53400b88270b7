//! The broker process confines itself after init and before serving, in
//! this order:
//!
//! 1. `no_new_privs` (so nothing it could run gains privileges, and seccomp
//!    may be installed without a capability);
//! 2. resource limits from the init, and `RLIMIT_CORE` 0 (a core file
//!    would hold credentials in flight);
//! 3. landlock: every filesystem right handled, allowed only beneath its
//!    `home` and `tmp` (read-write) — nothing else is readable, not even
//!    `/etc` (DNS configuration and trust anchors are read or compiled in
//!    before); TCP connect only to the init's ports, TCP bind to none;
//!    signals and abstract unix sockets scoped to the process;
//! 4. seccomp: `execve` and `execveat` fail with `EPERM` (the broker never
//!    runs a program; a compromised broker cannot either).
//!
//! Landlock is applied best-effort (older kernels enforce less); the
//! achieved [`Enforcement`] is reported to the daemon, and with
//! `require_full_landlock` anything short of full enforcement is an error.
//! Confinement applies to the calling thread and threads it starts later:
//! call it before the runtime starts its threads.

use std::collections::BTreeMap;
use std::path::Path;

use aivault_proto::broker::BrokerInit;
use aivault_proto::{Enforcement, Level};
use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, LandlockStatus, NetPort,
    PathBeneath, PathFd, RestrictionStatus, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, ABI,
};
use nix::sys::resource::{setrlimit, Resource};
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
use thiserror::Error;

/// The newest landlock ABI whose rights are asked for.
const TARGET_ABI: ABI = ABI::V6;

#[derive(Debug, Error)]
pub enum ConfineError {
    #[error("no_new_privs could not be set: {0}")]
    NoNewPrivs(nix::Error),
    #[error("{resource} could not be set: {source}")]
    Rlimit {
        resource: &'static str,
        source: nix::Error,
    },
    #[error("the landlock {0} directory cannot be opened: {1}")]
    LandlockPath(&'static str, String),
    #[error("the landlock ruleset failed: {0}")]
    Landlock(landlock::RulesetError),
    #[error("landlock is enforced only {0:?}, and full enforcement is required")]
    LandlockIncomplete(Level),
    #[error("the seccomp filter cannot be built: {0}")]
    SeccompBuild(String),
    #[error("the seccomp filter cannot be installed: {0}")]
    SeccompInstall(String),
}

/// Confines the calling thread (and the threads it starts afterwards).
pub fn confine(init: &BrokerInit) -> Result<Enforcement, ConfineError> {
    nix::sys::prctl::set_no_new_privs().map_err(ConfineError::NoNewPrivs)?;
    rlimits(init)?;
    let (abi, level) = landlock_rules(init)?;
    if init.require_full_landlock && level != Level::Full {
        return Err(ConfineError::LandlockIncomplete(level));
    }
    seccomp()?;
    let enforced = level != Level::None;
    Ok(Enforcement {
        landlock_abi: abi,
        landlock: level,
        net_restricted: enforced && abi >= 4,
        scoped_signals: enforced && abi >= 6,
        scoped_abstract_unix: enforced && abi >= 6,
        seccomp: true,
    })
}

fn rlimits(init: &BrokerInit) -> Result<(), ConfineError> {
    let l = &init.limits;
    let table = [
        (Resource::RLIMIT_CORE, "RLIMIT_CORE", 0),
        (Resource::RLIMIT_NPROC, "RLIMIT_NPROC", l.processes),
        (Resource::RLIMIT_NOFILE, "RLIMIT_NOFILE", l.open_files),
        (Resource::RLIMIT_AS, "RLIMIT_AS", l.memory),
        (Resource::RLIMIT_FSIZE, "RLIMIT_FSIZE", l.file_size),
        (Resource::RLIMIT_CPU, "RLIMIT_CPU", l.cpu_seconds),
    ];
    for (resource, name, value) in table {
        setrlimit(resource, value, value).map_err(|source| ConfineError::Rlimit {
            resource: name,
            source,
        })?;
    }
    Ok(())
}

fn read_write() -> BitFlags<AccessFs> {
    AccessFs::from_all(TARGET_ABI) & !AccessFs::Execute
}

fn dir_rule(role: &'static str, path: &Path) -> Result<PathBeneath<PathFd>, ConfineError> {
    let fd = PathFd::new(path).map_err(|e| ConfineError::LandlockPath(role, e.to_string()))?;
    Ok(PathBeneath::new(fd, read_write()))
}

fn landlock_rules(init: &BrokerInit) -> Result<(i32, Level), ConfineError> {
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .and_then(|r| r.handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp))
        .and_then(|r| r.scope(Scope::AbstractUnixSocket | Scope::Signal))
        .and_then(Ruleset::create)
        .map_err(ConfineError::Landlock)?
        .add_rule(dir_rule("home", &init.home)?)
        .map_err(ConfineError::Landlock)?
        .add_rule(dir_rule("tmp", &init.tmp)?)
        .map_err(ConfineError::Landlock)?;
    for &port in &init.tcp_connect {
        ruleset = ruleset
            .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
            .map_err(ConfineError::Landlock)?;
    }
    let status = ruleset.restrict_self().map_err(ConfineError::Landlock)?;
    Ok((abi_of(&status), level_of(&status)))
}

fn abi_of(status: &RestrictionStatus) -> i32 {
    match status.landlock {
        LandlockStatus::Available {
            effective_abi,
            kernel_abi,
        } => kernel_abi.unwrap_or(effective_abi as i32),
        _ => 0,
    }
}

fn level_of(status: &RestrictionStatus) -> Level {
    match status.ruleset {
        RulesetStatus::FullyEnforced => Level::Full,
        RulesetStatus::PartiallyEnforced => Level::Partial,
        RulesetStatus::NotEnforced => Level::None,
    }
}

/// The system calls refused, and why (everything else is allowed: the
/// containment is landlock's, the uid's and the limits').
const DENY: &[(&str, libc::c_long)] = &[
    // The broker runs no program; a compromised one could run anything the
    // filesystem rules let it open, so it runs none at all.
    ("execve", libc::SYS_execve),
    ("execveat", libc::SYS_execveat),
];

fn seccomp() -> Result<(), ConfineError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| ConfineError::SeccompBuild(e.to_string()))?;
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        DENY.iter().map(|&(_, nr)| (nr, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| ConfineError::SeccompBuild(e.to_string()))?;
    let program: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| ConfineError::SeccompBuild(e.to_string()))?;
    seccompiler::apply_filter(&program).map_err(|e| ConfineError::SeccompInstall(e.to_string()))
}
