//! Step 2: resource limits, each set as soft and hard limit.
//!
//! `RLIMIT_NPROC` counts processes per real uid; the run's uid is fresh, so
//! the limit bounds exactly this run's process tree. `RLIMIT_CORE` is 0
//! because a core file would contain the environment, i.e. the secrets.

use nix::sys::resource::{setrlimit, Resource};

use crate::{Limits, SandboxError};

/// The limits in the order they are applied, with their names for errors.
pub(crate) fn table(limits: &Limits) -> [(Resource, &'static str, u64); 6] {
    [
        (Resource::RLIMIT_CORE, "RLIMIT_CORE", 0),
        (Resource::RLIMIT_NPROC, "RLIMIT_NPROC", limits.processes),
        (Resource::RLIMIT_NOFILE, "RLIMIT_NOFILE", limits.open_files),
        (Resource::RLIMIT_AS, "RLIMIT_AS", limits.memory),
        (Resource::RLIMIT_FSIZE, "RLIMIT_FSIZE", limits.file_size),
        (Resource::RLIMIT_CPU, "RLIMIT_CPU", limits.cpu_seconds),
    ]
}

pub(crate) fn apply(limits: &Limits) -> Result<(), SandboxError> {
    for (resource, name, value) in table(limits) {
        setrlimit(resource, value, value).map_err(|source| SandboxError::Rlimit {
            resource: name,
            source,
        })?;
    }
    Ok(())
}
