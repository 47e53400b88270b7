//! `aivault-runner`: started by `aivaultd` for one run; see the library
//! (`aivault_runner`) for the self-confinement it applies before exec.
//!
//! The daemon starts it as the run's fresh uid (or, in caller mode, as the
//! caller inside the run's cgroup) with `--socket <PATH>`, a clean
//! environment, stdin and stdout on `/dev/null` and stderr on the daemon's
//! log. It may be started ahead of any run (a warm runner) and wait idle,
//! holding nothing, until a run takes it. In order:
//!
//! 1. [`lock_down`]: `no_new_privs` and the seccomp filters, which need
//!    nothing from a job; connect to the socket; read one [`RunnerJob`]
//!    with the command's open executable attached
//!    ([`aivault_runner::handoff`]; close-on-exec), and for an MCP
//!    gateway's upstream server the socket that is its stdin and stdout,
//! 2. check the job and create the pipes ([`job::stage`], [`exec`]),
//! 3. [`confine_locked`] (descriptors, rlimits, identity, Landlock),
//!    keeping the socket, the executable and the pipes, report
//!    `Confined` (or `Exit` 126 and stop: never run unconfined),
//! 4. wait for the go-ahead, [`RunnerSecrets`], which the daemon sends only
//!    once the run's decision is durably audited; build the redaction
//!    patterns and the command's `argv`/`envp` ([`job::Staged::arm`]),
//! 5. fork and `execveat(exe, "", …, AT_EMPTY_PATH)`; wipe the parent's copy
//!    of the environment,
//! 6. pump input, output and signals until the command ends ([`pump`]),
//!    then report `Exit`.
//!
//! Exit status of the runner: 0 once an `Exit` event was sent, 1 on a
//! protocol or connection failure or when the daemon withdrew the run
//! before its go-ahead (the daemon then treats the run as failed), 2 when
//! started without `--socket`.
//!
//! Nothing here prints a secret value or the job's environment to stderr.

mod exec;
mod job;
mod pump;
mod wire;

use std::ffi::OsString;
use std::os::fd::{AsFd, IntoRawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use aivault_proto::{FrameError, RunnerEvent, RunnerJob, RunnerSecrets};
use aivault_runner::handoff::{recv_job_frame, HandoffError};
use aivault_runner::{confine_locked, lock_down};
use nix::fcntl::{fcntl, FcntlArg};
use zeroize::Zeroizing;

/// Exit code reported when the command could not be started.
const CANNOT_START: i32 = 126;

const USAGE: &str = "aivault-runner is started by aivaultd";

/// Why the runner stopped without reporting an `Exit`.
#[derive(Debug, thiserror::Error)]
enum RunnerError {
    #[error("cannot connect to the daemon")]
    Connect(#[source] std::io::Error),
    #[error("daemon connection failed")]
    Frame(#[source] FrameError),
    #[error("cannot receive the job")]
    Handoff(#[source] HandoffError),
    #[error("malformed job")]
    Job(#[source] FrameError),
    #[error("malformed go-ahead")]
    Secrets(#[source] FrameError),
    /// The daemon closed the connection before the go-ahead: the run was
    /// withdrawn (its decision could not be audited, or the daemon stops).
    #[error("run withdrawn before it started")]
    Withdrawn,
    #[error("run aborted")]
    Pump(#[source] pump::PumpError),
}

fn main() -> ExitCode {
    let Some(socket) = parse_args(std::env::args_os().skip(1)) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    ensure_std_fds();
    match run(&socket) {
        Ok(()) => ExitCode::SUCCESS,
        // Nothing to report: the daemon knows why it withdrew the run.
        Err(RunnerError::Withdrawn) => ExitCode::from(1),
        Err(e) => {
            eprintln!("aivault-runner: {}", chain(&e));
            ExitCode::from(1)
        }
    }
}

/// Exactly `--socket <PATH>` or `--socket=<PATH>`.
fn parse_args(mut args: impl Iterator<Item = OsString>) -> Option<PathBuf> {
    let first = args.next()?;
    let path = if first == "--socket" {
        args.next()?
    } else {
        let rest = first.to_str()?.strip_prefix("--socket=")?;
        OsString::from(rest)
    };
    (args.next().is_none() && !path.is_empty()).then(|| PathBuf::from(path))
}

/// Makes sure 0, 1 and 2 are open (on `/dev/null` if not), so no pipe or
/// socket of ours is ever numbered below 3.
fn ensure_std_fds() {
    for fd in 0..=2 {
        if fcntl(fd, FcntlArg::F_GETFD).is_err() {
            // The lowest free number is taken: this very `fd`.
            if let Ok(file) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
            {
                // Stays open for the life of the process.
                let _ = file.into_raw_fd();
            }
        }
    }
}

fn run(socket: &std::path::Path) -> Result<(), RunnerError> {
    // no_new_privs and seccomp before the job arrives (a warm runner is
    // locked down while idle); a failure is reported once there is a job
    // to fail.
    let locked = lock_down();
    let mut sock = UnixStream::connect(socket).map_err(RunnerError::Connect)?;

    // A warm runner waits here, idle, until a run takes it.
    // A second descriptor: the command talks over that socket (its stdin
    // and stdout) instead of the pumped pipes; only stderr is pumped.
    let (body, exe, stdio) = match recv_job_frame(&mut sock) {
        Ok(received) => received,
        Err(HandoffError::Frame(FrameError::Closed)) => return Err(RunnerError::Withdrawn),
        Err(e) => return Err(RunnerError::Handoff(e)),
    };
    let job: RunnerJob = aivault_proto::decode(&body).map_err(RunnerError::Job)?;
    drop(body);

    let mut staged = match job::stage(job) {
        Ok(staged) => staged,
        Err(e) => return report_failure(&mut sock, CANNOT_START, e.to_string()),
    };

    let pipes = match exec::Pipes::new() {
        Ok(pipes) => pipes,
        Err(e) => {
            let message = format!("cannot start: creating pipes failed: {}", e.desc());
            return report_failure(&mut sock, CANNOT_START, message);
        }
    };

    let mut keep = vec![sock.as_fd(), exe.as_fd()];
    keep.extend(stdio.as_ref().map(|s| s.as_fd()));
    keep.extend(pipes.all());
    let confined = locked.and_then(|locked| confine_locked(&staged.spec, &keep, &locked));
    let enforcement = match confined {
        Ok(enforcement) => enforcement,
        Err(e) => {
            eprintln!("aivault-runner: {}", chain(&e));
            drop(keep);
            return report_failure(&mut sock, CANNOT_START, format!("sandbox: {e}"));
        }
    };
    drop(keep);
    // The caller's working directory (a mount in this runner's own mount
    // namespace) becomes the command's, which inherits the runner's.
    if let Some(cwd) = &staged.spec.cwd {
        if let Err(e) = std::env::set_current_dir(cwd) {
            let message = format!("sandbox: cannot enter the working directory: {e}");
            return report_failure(&mut sock, CANNOT_START, message);
        }
    }
    send(&mut sock, &RunnerEvent::Confined { enforcement })?;

    // The go-ahead holds the secret values: wipe the frame once decoded.
    let body = match aivault_proto::read_frame(&mut sock) {
        Ok(body) => Zeroizing::new(body),
        Err(FrameError::Closed) => return Err(RunnerError::Withdrawn),
        Err(e) => return Err(RunnerError::Frame(e)),
    };
    let secrets: RunnerSecrets = aivault_proto::decode(&body).map_err(RunnerError::Secrets)?;
    drop(body);
    let job::Armed { patterns, vectors } = match staged.arm(secrets) {
        Ok(armed) => armed,
        Err(e) => return report_failure(&mut sock, CANNOT_START, e.to_string()),
    };

    // Only a fresh run uid may be swept with kill(-1) (see `pump::run`).
    let sweep_uid = staged.spec.isolation == aivault_runner::Isolation::DynamicUid;
    let spawned = exec::spawn(
        exe.as_fd(),
        pipes,
        stdio.as_ref().map(|s| s.as_fd()),
        &vectors,
    );
    // The parent has no use for the environment (it holds the secrets),
    // nor for the command's socket.
    drop(vectors);
    drop(exe);
    drop(stdio);
    let started = match spawned {
        Ok(started) => started,
        Err(e) => return report_failure(&mut sock, e.exit_code(), e.to_string()),
    };

    let outcome = pump::run(&mut sock, started, &patterns, sweep_uid).map_err(RunnerError::Pump)?;
    drop(patterns);
    send(
        &mut sock,
        &RunnerEvent::Exit {
            code: outcome.code,
            signaled: outcome.signaled,
            redactions: outcome.redactions,
            message: None,
        },
    )
}

/// Reports a run that never started.
fn report_failure(sock: &mut UnixStream, code: i32, message: String) -> Result<(), RunnerError> {
    send(
        sock,
        &RunnerEvent::Exit {
            code,
            signaled: false,
            redactions: 0,
            message: Some(message),
        },
    )
}

fn send(sock: &mut UnixStream, event: &RunnerEvent) -> Result<(), RunnerError> {
    wire::send(sock, event).map_err(RunnerError::Frame)
}

/// An error and its sources, for the daemon's log.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::parse_args;
    use std::ffi::OsString;
    use std::path::PathBuf;

    fn parse(args: &[&str]) -> Option<PathBuf> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn only_the_socket_flag_is_accepted() {
        assert_eq!(parse(&["--socket", "/run/x"]), Some("/run/x".into()));
        assert_eq!(parse(&["--socket=/run/x"]), Some("/run/x".into()));
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&["--socket"]), None);
        assert_eq!(parse(&["--socket="]), None);
        assert_eq!(parse(&["--socket", "/a", "extra"]), None);
        assert_eq!(parse(&["--help"]), None);
    }
}
