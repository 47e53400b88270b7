//! Messages of the run path.
//!
//! **Caller ↔ daemon.** A [`crate::RequestBody::Run`] request turns the
//! connection into a run stream: the daemon answers [`crate::Reply::RunStarted`]
//! (or an error), then sends [`RunEvent`]s until [`RunEvent::Exit`]; the
//! caller may send [`RunInput`]s meanwhile. Output bytes are already redacted.
//!
//! **Daemon ↔ runner.** The runner connects to the daemon's runner socket as
//! the run uid; the daemon checks the peer uid and pid against the process it
//! spawned. A runner may then wait idle (a warm runner) until a run takes it.
//! The daemon sends one [`RunnerJob`], with the command's open executable
//! attached as `SCM_RIGHTS` to the frame's first byte; the runner confines
//! itself and answers [`RunnerEvent::Confined`]. Only once the run's decision
//! is durably audited does the daemon send [`RunnerSecrets`], the go-ahead:
//! without it the command never starts. The runner then answers
//! [`RunnerEvent`]s; the daemon forwards [`RunInput`]s.

use serde::{Deserialize, Serialize};

use crate::{Enforcement, SandboxSpec, SecretBytes};

/// One secret the caller asks for, optionally under another variable name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretAsk {
    pub name: String,
    pub env: Option<String>,
}

/// What the caller wants run. The daemon resolves `argv[0]` itself from its
/// trusted search path; nothing here chooses the binary's location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    pub argv: Vec<String>,
    /// Secrets to inject; empty means every secret the matching rule grants.
    pub secrets: Vec<SecretAsk>,
    /// Shorter timeout than the rule's, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// The caller asks for its working directory to be the command's
    /// (only if the rule allows that access). The directory itself travels
    /// as a descriptor: the byte that follows this request's frame carries
    /// it (`SCM_RIGHTS`), opened by the caller with `O_RDONLY|O_DIRECTORY`,
    /// which proves the caller may read it. Never a path.
    pub workdir: Option<WorkdirMode>,
    /// The caller's environment; only names the rule passes through are used.
    pub env: Vec<(String, String)>,
}

/// The access a run has to the caller's working directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkdirMode {
    /// The command sees the directory's tree and cannot change it.
    ReadOnly,
    /// The command may also change it; what it creates is the caller's.
    ReadWrite,
}

impl WorkdirMode {
    /// The mode's stable name, as the CLI, the policy and the audit log
    /// spell it.
    pub fn as_str(&self) -> &'static str {
        match self {
            WorkdirMode::ReadOnly => "read-only",
            WorkdirMode::ReadWrite => "read-write",
        }
    }
}

/// The byte that carries the working directory's descriptor after a run
/// request that asks for one.
pub const WORKDIR_BYTE: u8 = b'W';

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    Exited,
    Signaled,
    Timeout,
    OutputLimit,
    Cancelled,
    /// The runner failed before or while starting the command.
    RunnerFailed,
}

impl EndReason {
    /// Every reason, in declaration order.
    pub const ALL: [EndReason; 6] = [
        EndReason::Exited,
        EndReason::Signaled,
        EndReason::Timeout,
        EndReason::OutputLimit,
        EndReason::Cancelled,
        EndReason::RunnerFailed,
    ];

    /// The reason's stable name, as the audit log, D-Bus and MCP show it
    /// (listed in `docs/protocol.md`). Never derived from `Debug`: renaming
    /// a variant must not change what readers of those surfaces see.
    pub fn as_str(&self) -> &'static str {
        match self {
            EndReason::Exited => "exited",
            EndReason::Signaled => "signaled",
            EndReason::Timeout => "timeout",
            EndReason::OutputLimit => "output_limit",
            EndReason::Cancelled => "cancelled",
            EndReason::RunnerFailed => "runner_failed",
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run ended. `code` follows the shell: 128+N for signal N.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunExit {
    pub code: i32,
    pub reason: EndReason,
    pub duration_ms: u64,
    pub bytes_out: u64,
    pub redactions: u64,
    /// Set when the runner could not start the command (never contains values).
    pub message: Option<String>,
}

/// Daemon → caller, after `RunStarted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunEvent {
    /// Redacted output.
    Output {
        stream: Stream,
        #[serde(with = "crate::bytes")]
        data: Vec<u8>,
    },
    Exit(RunExit),
}

/// Caller → daemon → runner during a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunInput {
    Stdin(#[serde(with = "crate::bytes")] Vec<u8>),
    StdinEof,
    /// Forward a signal (SIGINT, SIGTERM, SIGHUP only).
    Signal(i32),
}

/// Everything the runner needs but the secrets, sent once, with the
/// command's executable attached (`SCM_RIGHTS`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerJob {
    /// argv[0] is the resolved absolute path (informational: the runner
    /// executes the already-open file it inherited).
    pub argv: Vec<String>,
    /// Base environment (PATH, HOME, TMPDIR, LANG, …) and pass-through names.
    pub env: Vec<(String, String)>,
    /// What the run may touch and its limits.
    pub sandbox: SandboxSpec,
    /// Output limit in bytes (stdout + stderr, after redaction).
    pub max_output: u64,
}

/// The go-ahead, sent after [`RunnerJob`] once the decision is audited:
/// (secret name, environment variable, value) for each secret, possibly none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerSecrets {
    pub secrets: Vec<(String, String, SecretBytes)>,
}

/// Runner → daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RunnerEvent {
    /// Confinement applied; what the kernel enforces, for the audit record.
    Confined { enforcement: Enforcement },
    /// Redacted output.
    Output {
        stream: Stream,
        #[serde(with = "crate::bytes")]
        data: Vec<u8>,
    },
    /// The command ended (or could not start).
    Exit {
        code: i32,
        signaled: bool,
        redactions: u64,
        message: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_reason_names_are_distinct_and_stable() {
        let names: Vec<&str> = EndReason::ALL.iter().map(EndReason::as_str).collect();
        // The documented names (docs/protocol.md): changing one breaks
        // readers of the audit log, D-Bus and MCP.
        assert_eq!(
            names,
            [
                "exited",
                "signaled",
                "timeout",
                "output_limit",
                "cancelled",
                "runner_failed"
            ]
        );
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        for r in EndReason::ALL {
            assert_eq!(r.to_string(), r.as_str());
        }
    }
}
