//! The sandbox of a run as the daemon specifies it ([`SandboxSpec`], with
//! its [`Limits`] and [`Isolation`]) and as the runner reports it achieved
//! ([`Enforcement`]). Both travel typed in the runner's messages
//! ([`crate::RunnerJob`], [`crate::RunnerEvent::Confined`]); the runner
//! crate applies the one and produces the other.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What the run may touch. Sent by the daemon; all paths are absolute.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SandboxSpec {
    /// Private home directory (read-write), owned by the run uid, mode 0700.
    pub home: PathBuf,
    /// Private temporary directory (read-write), owned by the run uid, 0700.
    pub tmp: PathBuf,
    /// Extra read-only paths from policy.
    pub read: Vec<PathBuf>,
    /// Extra read-write paths from policy.
    pub write: Vec<PathBuf>,
    /// Extra read+execute paths: the allowlisted binary itself when it lives
    /// outside the system directories (e.g. under `/opt`). Nothing else may
    /// be executed except from the system directories.
    #[serde(default)]
    pub exec: Vec<PathBuf>,
    /// The caller's working directory as this run sees it (a mount of it
    /// in the runner's own mount namespace), only if the caller asked and
    /// policy allows it: the command's working directory, read-only unless
    /// `cwd_writable`.
    pub cwd: Option<PathBuf>,
    /// The command may change the tree below `cwd`.
    #[serde(default)]
    pub cwd_writable: bool,
    /// TCP ports the command may connect to (Landlock ABI >= 4).
    pub tcp_connect: Vec<u16>,
    /// TCP ports the command may bind (Landlock ABI >= 4).
    pub tcp_bind: Vec<u16>,
    /// Resource limits.
    pub limits: Limits,
    /// Refuse to run unless every requested Landlock feature is enforced.
    pub require_full_landlock: bool,
    /// Which identity the runner was started under; decides what the
    /// identity check (step 3) accepts.
    #[serde(default)]
    pub isolation: Isolation,
}

/// Under which identity a run executes (the policy's `isolation`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// A fresh uid/gid that no account uses, with no supplementary groups:
    /// the caller cannot read or trace the command.
    #[default]
    DynamicUid,
    /// The caller's own uid, primary gid and supplementary groups (the
    /// daemon takes them from the account database). Weaker: the caller can
    /// read the command's environment while it runs. Still never root, never
    /// group 0, no capabilities.
    Caller,
}

/// Resource limits; each is set as both soft and hard limit, so the command
/// cannot raise it. `u64::MAX` means unlimited.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `RLIMIT_AS`, bytes of address space.
    pub memory: u64,
    /// `RLIMIT_NPROC`, processes/threads of the (fresh, per-run) uid.
    pub processes: u64,
    /// `RLIMIT_FSIZE`, largest file the command may write, bytes.
    pub file_size: u64,
    /// `RLIMIT_CPU`, CPU seconds.
    pub cpu_seconds: u64,
    /// `RLIMIT_NOFILE`, open descriptors.
    pub open_files: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: 4 << 30,
            processes: 256,
            file_size: 1 << 30,
            cpu_seconds: 600,
            open_files: 1024,
        }
    }
}

/// How much of the requested Landlock ruleset the kernel enforces.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Every requested restriction is enforced.
    Full,
    /// Some restrictions are missing because the kernel's ABI is older.
    Partial,
    /// Landlock is unavailable; only uid, rlimits and seccomp apply.
    None,
}

/// What the runner's confinement achieved; reported to the daemon and
/// audited (as JSON, in the `sandbox` field of the run's exit record).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enforcement {
    /// ABI version the kernel reports (0: Landlock unavailable).
    pub landlock_abi: i32,
    /// Achieved Landlock level.
    pub landlock: Level,
    /// TCP bind/connect restricted to the listed ports (ABI >= 4).
    pub net_restricted: bool,
    /// Signals to processes outside the sandbox denied (ABI >= 6).
    pub scoped_signals: bool,
    /// Abstract unix sockets outside the sandbox unreachable (ABI >= 6).
    pub scoped_abstract_unix: bool,
    /// The seccomp deny-list is installed.
    pub seccomp: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode, RunnerEvent, RunnerJob};

    fn spec() -> SandboxSpec {
        SandboxSpec {
            home: "/run/aivault/runs/70001/home".into(),
            tmp: "/run/aivault/runs/70001/tmp".into(),
            read: vec!["/etc/ssl".into()],
            write: vec!["/srv/out".into()],
            exec: vec!["/opt/tool/bin/tool".into()],
            cwd: Some("/home/u/project".into()),
            cwd_writable: true,
            tcp_connect: vec![443, 53],
            tcp_bind: vec![8080],
            limits: Limits {
                memory: 1 << 30,
                processes: 64,
                file_size: u64::MAX,
                cpu_seconds: 30,
                open_files: 256,
            },
            require_full_landlock: true,
            isolation: Isolation::Caller,
        }
    }

    #[test]
    fn a_job_with_its_sandbox_round_trips() {
        let job = RunnerJob {
            argv: vec!["/usr/bin/env".into(), "-0".into()],
            env: vec![("PATH".into(), "/usr/bin".into())],
            sandbox: spec(),
            max_output: 1 << 20,
        };
        let body = encode(&job).expect("encode");
        let back: RunnerJob = decode(&body).expect("decode");
        assert_eq!(back, job);
        // A truncated job is refused, not half-read.
        assert!(decode::<RunnerJob>(&body[..body.len() - 1]).is_err());
    }

    #[test]
    fn the_confined_event_round_trips() {
        let enforcement = Enforcement {
            landlock_abi: 4,
            landlock: Level::Partial,
            net_restricted: true,
            scoped_signals: false,
            scoped_abstract_unix: false,
            seccomp: true,
        };
        let body = encode(&RunnerEvent::Confined { enforcement }).expect("encode");
        match decode::<RunnerEvent>(&body).expect("decode") {
            RunnerEvent::Confined { enforcement: back } => assert_eq!(back, enforcement),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn enforcement_json_keeps_its_audited_shape() {
        // The audit record's `sandbox` field is this JSON; its names are
        // read by people and tools, so they are pinned here.
        let e = Enforcement {
            landlock_abi: 6,
            landlock: Level::Full,
            net_restricted: true,
            scoped_signals: true,
            scoped_abstract_unix: true,
            seccomp: true,
        };
        let v = serde_json::to_value(e).expect("json");
        let mut keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "landlock",
                "landlock_abi",
                "net_restricted",
                "scoped_abstract_unix",
                "scoped_signals",
                "seccomp"
            ]
        );
        assert_eq!(v["landlock"], "full");
        assert_eq!(v["landlock_abi"], 6);
        let levels: Vec<serde_json::Value> = [Level::Full, Level::Partial, Level::None]
            .iter()
            .map(|l| serde_json::to_value(l).expect("json"))
            .collect();
        assert_eq!(levels, ["full", "partial", "none"]);
    }

    #[test]
    fn isolation_names_are_kebab_case() {
        assert_eq!(
            serde_json::to_value(Isolation::DynamicUid).expect("json"),
            "dynamic-uid"
        );
        assert_eq!(
            serde_json::to_value(Isolation::Caller).expect("json"),
            "caller"
        );
    }
}
