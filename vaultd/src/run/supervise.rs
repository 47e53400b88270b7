//! One run from start to end: take a warm runner (see [`super::warm`]) or
//! start one ([`super::runner`]), hand it the job while the decision is
//! made durable, then the go-ahead with the secrets, relay (see
//! [`super::relay`]), and — whatever happens — tear the run down
//! ([`super::runner::teardown`]) and write the audit record of the outcome.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aivault_proto::{
    EndReason, ErrorCode, Isolation, Limits, Reply, Response, RunEvent, RunExit, RunInput,
    RunnerEvent, RunnerJob, RunnerSecrets, SandboxSpec, WireError,
};
use serde_json::json;
use tokio::net::UnixStream;

use super::prepare::{PreparedRun, RUN_PATH};
use super::relay::{self, Ends, Relayed, EXIT_RUNNER_FAILED};
use super::runner::{connect, discard, start, teardown, Ready, StartError};
use super::spawn::RunDirs;
use super::RunHost;
use super::RUNNER_CONNECT_TIMEOUT;
use crate::audit::gate::Entry;
use crate::audit::Outcome;

pub use super::relay::{EXIT_OUTPUT_LIMIT, EXIT_TIMEOUT};

/// How long the final status may take to reach a caller that does not read.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a finished run whose caller waits for its status looks for a
/// free teardown place (the wait ends with the run's own teardown anyway).
const TEARDOWN_PLACE_POLL: Duration = Duration::from_millis(10);
/// A runner for this run, handed its job: a warm one if the run may take
/// one, else one started now. A warm runner that cannot take the job (it
/// died while idle) is discarded for the next, or a new one.
async fn acquire(
    daemon: &Arc<dyn RunHost>,
    prepared: &Arc<PreparedRun>,
) -> Result<Ready, StartError> {
    // A warm runner has its mount namespace already: a run given the
    // caller's working directory starts its own.
    if prepared.as_caller.is_none() && prepared.workdir.is_none() {
        while let Some(ready) = daemon.runs().warm.take(daemon) {
            match hand(&ready, prepared).await {
                Ok(()) => return Ok(ready),
                Err(e) => {
                    tracing::warn!(error = %e, "a warm runner cannot take its job; discarded");
                    let d = daemon.clone();
                    tokio::task::spawn_blocking(move || discard(&*d, ready));
                }
            }
        }
    }
    let (d, p) = (daemon.clone(), prepared.clone());
    let started = tokio::task::spawn_blocking(move || start(&*d, &p))
        .await
        .unwrap_or_else(|_| Err(("internal error while starting the run".into(), None)));
    let ready = connect(started).await?;
    match hand(&ready, prepared).await {
        Ok(()) => Ok(ready),
        Err(e) => {
            tracing::error!(error = %e, "cannot hand the job to the runner");
            Err((
                "the runner went away before starting".into(),
                Some(Box::new(ready.leftovers)),
            ))
        }
    }
}

/// Hands `ready` this run's job. Bounded: a runner that does not read it
/// (a caller-mode runner runs as the caller, who can stop it) fails the
/// run instead of holding it.
async fn hand(ready: &Ready, prepared: &PreparedRun) -> std::io::Result<()> {
    let job = job(prepared, &ready.leftovers.dirs);
    tokio::time::timeout(
        RUNNER_CONNECT_TIMEOUT,
        hand_job(&ready.stream, &job, &[prepared.command.file.as_fd()]),
    )
    .await
    .unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the runner did not take its job",
        ))
    })
}

fn failed(message: &str) -> Relayed {
    Relayed {
        code: EXIT_RUNNER_FAILED,
        reason: EndReason::RunnerFailed,
        bytes_out: 0,
        redactions: 0,
        message: Some(message.to_string()),
        enforcement: None,
    }
}

/// A run the policy allowed, whose decision is being made durable in the
/// audit log.
#[derive(Debug)]
pub struct Decided {
    prepared: Arc<PreparedRun>,
    recording: tokio::task::JoinHandle<Result<(), WireError>>,
    durable: tokio::sync::oneshot::Receiver<()>,
}

impl Decided {
    pub fn prepared(&self) -> &PreparedRun {
        &self.prepared
    }
}

/// Decides a run request on a blocking thread ([`super::prepare::prepare_run`]);
/// once it is allowed, that same thread goes on to record the decision
/// (no second hand-over before the log's `fsync` starts) while the
/// decision is returned at once, so a runner is taken and handed its job
/// meanwhile. A denial is returned as the policy's error (already audited).
pub async fn decide(
    daemon: &Arc<dyn RunHost>,
    caller: crate::caller::Caller,
    req: aivault_proto::RunRequest,
    workdir: Option<std::os::fd::OwnedFd>,
) -> Result<Decided, WireError> {
    let (decided_tx, decided_rx) = tokio::sync::oneshot::channel();
    let (durable_tx, durable) = tokio::sync::oneshot::channel::<()>();
    let d = daemon.clone();
    let recording = tokio::task::spawn_blocking(move || {
        let prepared = match super::prepare::prepare_run(&*d, &caller, req, workdir) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                let _ = decided_tx.send(Err(e));
                return Ok(());
            }
        };
        let _ = decided_tx.send(Ok(prepared.clone()));
        super::prepare::record_run_decision_then(&*d, &prepared, move || {
            let _ = durable_tx.send(());
        })
    });
    match decided_rx.await {
        Ok(Ok(prepared)) => Ok(Decided {
            prepared,
            recording,
            durable,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(WireError::new(
            ErrorCode::Internal,
            "internal error while deciding the run",
        )),
    }
}

/// Runs a decided request on the caller's connection, which it consumes.
/// `slot` is the run's place ([`super::RunContext::admit`]), always given
/// back before the caller is told the exit status: at once when a teardown
/// place is free (see [`super::RunContext::teardowns`]), else when one
/// frees or the run's own teardown ends.
pub async fn run(
    daemon: Arc<dyn RunHost>,
    decided: Decided,
    caller: UnixStream,
    request_id: u64,
    slot: crate::admission::Ticket,
) {
    let started_at = Instant::now();
    let Decided {
        prepared,
        recording,
        durable: durable_rx,
    } = decided;
    let caller_probe = match caller.as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::error!(error = %e, "cannot duplicate the caller socket");
            return;
        }
    };
    let (caller_r, caller_w) = caller.into_split();
    let (to_caller, caller_writer) = relay::writer(caller_w, false);
    let (from_caller, caller_reader) = relay::reader::<_, RunInput>(caller_r);

    // The decision's audit record is being made durable (see `decide`)
    // while a runner is taken (or started) and handed the job, which holds
    // no secret: the runner confines itself meanwhile. The go-ahead with
    // the secrets follows only once the record is durable in the log;
    // without it the command never starts. (The audit anchor is brought up
    // to date right after, off this run's path.)
    // A rule that requires a person's approval waits for it here, before
    // any runner is taken (`crate::approval`); a denial or timeout is the
    // run's refusal.
    let host: Arc<dyn crate::approval::ApprovalHost> = daemon.clone();
    let approved = crate::approval::wait::before_run(
        &host,
        &prepared,
        request_id,
        |r| relay::offer(&to_caller, &r),
        || crate::approval::wait::caller_gone(caller_probe.as_fd()),
    )
    .await;
    let ready = match &approved {
        Ok(()) => acquire(&daemon, &prepared).await,
        Err(e) => Err((e.message.clone(), None)),
    };
    let recorded = match durable_rx.await {
        Ok(()) => {
            tokio::spawn(async move {
                if let Ok(Err(e)) = recording.await {
                    tracing::error!(error = %e.message, "the audit anchor lags the run's decision record");
                }
            });
            Ok(())
        }
        // The record never became durable: the audit's own error.
        Err(_) => recording.await.unwrap_or_else(|_| {
            Err(WireError::new(
                ErrorCode::Internal,
                "internal error while auditing the run",
            ))
        }),
    };
    let recorded = approved.and(recorded);
    let (outcome, started, leftovers) = match (&recorded, ready) {
        (_, Err((message, leftovers))) => (failed(&message), false, leftovers.map(|l| *l)),
        (Err(e), Ok(r)) => (failed(&e.message), false, Some(r.leftovers)),
        (Ok(()), Ok(r)) => {
            let ends = Ends {
                from_runner: tokio::sync::mpsc::channel(1).1,
                to_runner: tokio::sync::mpsc::channel(1).0,
                from_caller,
                to_caller: to_caller.clone(),
                caller_probe,
            };
            let (outcome, started) = drive(&prepared, r.stream, ends, request_id).await;
            (outcome, started, Some(r.leftovers))
        }
    };
    caller_reader.abort();

    let run_uid = leftovers.as_ref().map(|l| l.run_as.uid());
    let mut outcome = outcome;
    if outcome.reason == EndReason::RunnerFailed && daemon.runs().ending_all() {
        // Killed by the daemon's stop: say so, not "the runner failed".
        outcome.reason = EndReason::Cancelled;
        outcome.code = 128 + libc::SIGKILL;
        outcome.message = Some("the daemon is stopping".into());
    }
    if outcome.reason == EndReason::Timeout {
        outcome.message = Some(format!(
            "timed out after {} ms",
            prepared.timeout.as_millis()
        ));
    }
    let exit = RunExit {
        code: outcome.code,
        reason: outcome.reason,
        duration_ms: started_at.elapsed().as_millis() as u64,
        bytes_out: outcome.bytes_out,
        redactions: outcome.redactions,
        message: outcome.message.clone(),
    };
    let report = if started {
        aivault_proto::encode(&RunEvent::Exit(exit.clone()))
    } else {
        let err = match &recorded {
            // The audit's own error, as when a decision cannot be recorded.
            Err(e) => e.clone(),
            Ok(()) => WireError::new(
                ErrorCode::Internal,
                outcome.message.clone().unwrap_or_default(),
            ),
        };
        aivault_proto::encode(&Response {
            id: request_id,
            result: Err(err),
        })
    };
    // Teardown starts at once, on every path: no process of the run
    // survives, its directories go, and only then does a leased uid return
    // to the pool. Nothing waits before it: a command that ignored SIGTERM
    // or left a background process is killed now, not once other runs'
    // teardowns are done.
    let d = daemon.clone();
    let teardown = tokio::task::spawn_blocking(move || leftovers.map(|l| teardown(&*d, l)));
    // The run's place is given back before the status goes out, so a
    // caller that starts its next run as soon as it has this one's status
    // finds it free; what is left of this run then counts against the
    // teardown places. If none is free (earlier runs of this caller, or of
    // all, are still being torn down) the status waits, with the run still
    // in its place, until one is or until this run's own teardown (already
    // under way) is done: teardowns never pile up beyond the run limits,
    // and a caller never holds a place after it has a status.
    let uid = slot.uid();
    let held = loop {
        if let Ok(place) = daemon.runs().teardowns.try_admit(uid) {
            break Some(place);
        }
        if teardown.is_finished() {
            break None;
        }
        tokio::time::sleep(TEARDOWN_PLACE_POLL).await;
    };
    drop(slot);
    let report = report.ok().and_then(|body| to_caller.try_send(body).err());
    if let Some(tokio::sync::mpsc::error::TrySendError::Full(body)) = report {
        let _ = tokio::time::timeout(REPORT_TIMEOUT, to_caller.send(body)).await;
    }
    drop(to_caller);
    // The pool is refilled now that the caller has its status: off the
    // critical path of this run, ahead of the next.
    super::warm::WarmPool::refill(&daemon);
    // The exit is audited while the caller reads its status and the
    // teardown proceeds: the record holds nothing the teardown decides, and
    // finishing it early keeps it out of the way of the next decision.
    let (d, p) = (daemon.clone(), prepared.clone());
    let decided = recorded.is_ok();
    let audited = tokio::task::spawn_blocking(move || {
        // A run whose decision was never recorded has no exit to record.
        if decided {
            audit_exit(&*d, &p, &outcome, &exit, run_uid);
        }
    });
    let mut caller_writer = caller_writer;
    if tokio::time::timeout(REPORT_TIMEOUT, &mut caller_writer)
        .await
        .is_err()
    {
        caller_writer.abort();
    }
    let _ = audited.await;
    // The teardown place (or the run's own) is held until nothing of the
    // run is left.
    let _ = teardown.await;
    drop(held);
}

fn audit_exit(
    daemon: &dyn RunHost,
    prepared: &PreparedRun,
    outcome: &Relayed,
    exit: &RunExit,
    uid: Option<u32>,
) {
    let outcome_kind = if outcome.reason == EndReason::Exited && outcome.code == 0 {
        Outcome::Ok
    } else {
        Outcome::Failed
    };
    let entry = Entry::new(&prepared.caller, "run.exit")
        .name(Some(&prepared.decision.rule))
        .outcome(outcome_kind, outcome.message.as_deref())
        .detail(json!({
            "command": prepared.argv[0],
            "argv": prepared.argv_redacted,
            "rule": prepared.decision.rule,
            "isolation": prepared.decision.isolation,
            "run_uid": uid,
            "sandbox": outcome.enforcement,
            "exit_code": exit.code,
            "reason": exit.reason.as_str(),
            "duration_ms": exit.duration_ms,
            "bytes_out": exit.bytes_out,
            "redactions": exit.redactions,
        }));
    let audited = daemon.audit().record(entry);
    if audited.is_err() {
        tracing::error!("the run's exit could not be audited");
    }
}

/// Sends the go-ahead with the secrets, tells the caller the run started,
/// and relays. Returns the outcome and whether `RunStarted` was sent.
async fn drive(
    prepared: &PreparedRun,
    mut runner: UnixStream,
    mut ends: Ends,
    request_id: u64,
) -> (Relayed, bool) {
    // The go-ahead is written from here, before the relay's tasks exist:
    // between the durable decision record and the command's start there is
    // no hop through another task. Its frame fits the socket's empty buffer
    // (the runner has read its job), so the write does not wait; it is
    // bounded all the same.
    let go = aivault_proto::encode(&RunnerSecrets {
        secrets: prepared.secrets.clone(),
    })
    .map(zeroize::Zeroizing::new);
    let sent = match go {
        Ok(body) => matches!(
            tokio::time::timeout(
                RUNNER_CONNECT_TIMEOUT,
                crate::frames::write(&mut runner, &body)
            )
            .await,
            Ok(Ok(()))
        ),
        Err(_) => false,
    };
    let (runner_r, runner_w) = runner.into_split();
    let (to_runner, runner_writer) = relay::writer(runner_w, true);
    let (from_runner, runner_reader) = relay::reader::<_, RunnerEvent>(runner_r);
    ends.to_runner = to_runner;
    ends.from_runner = from_runner;

    let outcome = 'run: {
        if !sent {
            break 'run (failed("the runner went away before starting"), false);
        }
        let started = Response {
            id: request_id,
            result: Ok(Reply::RunStarted {
                command: prepared.argv[0].clone(),
            }),
        };
        if !relay::offer(&ends.to_caller, &started) {
            let mut out = failed("the caller went away");
            out.reason = EndReason::Cancelled;
            break 'run (out, false);
        }
        let deadline = tokio::time::Instant::now() + prepared.timeout;
        (
            relay::relay(ends, deadline, prepared.decision.sandbox.max_output).await,
            true,
        )
    };
    runner_reader.abort();
    runner_writer.abort();
    outcome
}

/// Sends the job frame with the command's open executable attached; the
/// runner executes exactly that file.
/// Sends `job` with `fds` (the executable first) on its first byte.
pub(super) async fn hand_job(
    runner: &UnixStream,
    job: &RunnerJob,
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> std::io::Result<()> {
    let body = aivault_proto::encode(job).map_err(std::io::Error::other)?;
    if body.len() > aivault_proto::MAX_FRAME {
        return Err(std::io::Error::other("the job exceeds the frame limit"));
    }
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    let mut sent = loop {
        runner.writable().await?;
        match runner.try_io(tokio::io::Interest::WRITABLE, || {
            aivault_proto::handoff::send_frame_with_fds(runner.as_fd(), &frame, fds)
        }) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    };
    while sent < frame.len() {
        runner.writable().await?;
        match runner.try_write(&frame[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The job sent to the runner.
fn job(prepared: &PreparedRun, dirs: &RunDirs) -> RunnerJob {
    let profile = &prepared.decision.sandbox;
    let spec = SandboxSpec {
        home: dirs.home.clone(),
        tmp: dirs.tmp.clone(),
        read: profile.read.clone(),
        write: profile.write.clone(),
        exec: vec![prepared.command.path.clone()],
        cwd: prepared.workdir.as_ref().map(|_| dirs.work.clone()),
        cwd_writable: prepared.workdir.as_ref().is_some_and(|w| w.writable()),
        tcp_connect: profile.tcp_connect.clone(),
        tcp_bind: profile.tcp_bind.clone(),
        limits: Limits {
            memory: profile.memory,
            // RLIMIT_NPROC counts every task of the real uid: in caller mode
            // the caller's own processes count too, so the run's allowance
            // comes on top of what the caller already runs.
            processes: match &prepared.as_caller {
                None => profile.processes,
                Some(caller) => profile.processes.saturating_add(caller.running_tasks),
            },
            file_size: profile.file_size,
            cpu_seconds: profile.cpu_seconds,
            open_files: 1024,
        },
        require_full_landlock: profile.require_full_landlock,
        isolation: match prepared.as_caller {
            None => Isolation::DynamicUid,
            Some(_) => Isolation::Caller,
        },
    };
    let mut env = vec![
        ("PATH".to_string(), RUN_PATH.to_string()),
        ("HOME".to_string(), dirs.home.display().to_string()),
        ("TMPDIR".to_string(), dirs.tmp.display().to_string()),
    ];
    if prepared.workdir.is_some() {
        env.push(("PWD".to_string(), dirs.work.display().to_string()));
    }
    env.extend(prepared.env.iter().cloned());
    RunnerJob {
        argv: prepared.argv.clone(),
        env,
        sandbox: spec,
        max_output: profile.max_output,
    }
}
