//! One run from start to end: lease a uid, start the runner, hand it the job,
//! stream redacted output to the caller and the caller's input to the
//! command, enforce the timeout and output limit, and — whatever happens —
//! kill every process of the run uid, remove its directories, free the uid
//! and write the audit record of the outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aivault_proto::{
    decode, EndReason, ErrorCode, Reply, Response, RunEvent, RunExit, RunInput, RunnerEvent,
    RunnerJob, Stream, WireError,
};
use serde_json::json;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::prepare::{PreparedRun, RUN_PATH};
use super::spawn::{self, RunDirs};
use crate::audit::Outcome;
use crate::frames;
use crate::ops::Daemon;

/// Uids kept checked and ready for the next runs.
const REFILL: usize = 8;
/// How long a started runner has to connect back.
const RUNNER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Grace between SIGTERM and SIGKILL when a run times out.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// Exit codes for ends the command did not choose (documented in vaultctl).
pub const EXIT_TIMEOUT: i32 = 124;
pub const EXIT_OUTPUT_LIMIT: i32 = 125;
pub const EXIT_RUNNER_FAILED: i32 = 126;

enum Step {
    Runner(Option<RunnerEvent>),
    Caller(Option<RunInput>),
    Deadline,
}

/// Reads frames from `r` into a channel until EOF or a bad frame.
fn pump<R, T>(mut r: R) -> mpsc::Receiver<T>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    T: serde::de::DeserializeOwned + Send + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok(body) = frames::read(&mut r).await {
            let Ok(msg) = decode::<T>(&body) else { break };
            if tx.send(msg).await.is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs a prepared request on the caller's connection, which it consumes.
pub async fn run(daemon: Arc<Daemon>, prepared: PreparedRun, caller: UnixStream, request_id: u64) {
    let started = Instant::now();
    let (caller_r, mut caller_w) = caller.into_split();
    let lease = match daemon.runs().pool.acquire() {
        Ok(l) => l,
        Err(e) => {
            let err = WireError::new(ErrorCode::Busy, e.to_string());
            let _ = frames::send(
                &mut caller_w,
                &Response {
                    id: request_id,
                    result: Err(err),
                },
            )
            .await;
            return;
        }
    };
    let uid = lease.uid();
    let settings = daemon.runs().settings.clone();
    let dirs = match spawn::make_dirs(&settings.runs_dir, uid) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot create run directory");
            let err = WireError::new(ErrorCode::Internal, "the run could not be prepared");
            let _ = frames::send(
                &mut caller_w,
                &Response {
                    id: request_id,
                    result: Err(err),
                },
            )
            .await;
            return;
        }
    };
    let connection = daemon.runs().gate.expect(uid);
    let (outcome, child) = match spawn::start_runner(&settings, uid, &dirs, &prepared.command.file)
    {
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runner");
            (Ended::failed("the runner could not be started"), None)
        }
        Ok(child) => {
            let pid = child.id() as i32;
            let ended = drive(
                &prepared,
                &dirs,
                pid,
                connection,
                caller_r,
                &mut caller_w,
                request_id,
            )
            .await;
            (ended, Some(child))
        }
    };
    let exit = RunExit {
        code: outcome.code,
        reason: outcome.reason,
        duration_ms: started.elapsed().as_millis() as u64,
        bytes_out: outcome.bytes_out,
        redactions: outcome.redactions,
        message: outcome.message.clone(),
    };
    // The caller learns the status at once; the teardown below does not
    // change it, and its failures are the daemon's to log.
    if outcome.started {
        let _ = frames::send(&mut caller_w, &RunEvent::Exit(exit.clone())).await;
    } else {
        let err = WireError::new(
            ErrorCode::Internal,
            outcome.message.clone().unwrap_or_default(),
        );
        let _ = frames::send(
            &mut caller_w,
            &Response {
                id: request_id,
                result: Err(err),
            },
        )
        .await;
    }
    drop(caller_w);

    // Teardown, on every path: no process of the run uid survives, its
    // directories go, and only then does the uid return to the pool.
    let pool = daemon.runs().pool.clone();
    let _ = tokio::task::spawn_blocking(move || {
        kill_run_uid(uid);
        if let Some(mut child) = child {
            let _ = child.wait();
        }
        // Check the next uids now, while no run is waiting on it.
        pool.refill(REFILL);
    })
    .await;
    daemon.runs().gate.forget(uid);
    spawn::remove_dirs(&dirs);
    drop(lease);

    let audited = daemon.audit_event(
        &prepared.caller,
        "run.exit",
        Some(&prepared.decision.rule),
        if outcome.reason == EndReason::Exited && outcome.code == 0 {
            Outcome::Ok
        } else {
            Outcome::Failed
        },
        outcome.message.as_deref(),
        json!({
            "command": prepared.argv[0],
            "argv": prepared.argv_redacted,
            "rule": prepared.decision.rule,
            "isolation": "dynamic-uid",
            "run_uid": uid,
            "sandbox": outcome.enforcement,
            "exit_code": exit.code,
            "reason": format!("{:?}", exit.reason).to_lowercase(),
            "duration_ms": exit.duration_ms,
            "bytes_out": exit.bytes_out,
            "redactions": exit.redactions,
        }),
    );
    if audited.is_err() {
        tracing::error!("the run's exit could not be audited");
    }
}

/// What a run came to.
struct Ended {
    started: bool,
    code: i32,
    reason: EndReason,
    bytes_out: u64,
    redactions: u64,
    message: Option<String>,
    enforcement: serde_json::Value,
}

impl Ended {
    fn failed(message: &str) -> Self {
        Ended {
            started: false,
            code: EXIT_RUNNER_FAILED,
            reason: EndReason::RunnerFailed,
            bytes_out: 0,
            redactions: 0,
            message: Some(message.to_string()),
            enforcement: serde_json::Value::Null,
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    prepared: &PreparedRun,
    dirs: &RunDirs,
    pid: i32,
    connection: tokio::sync::oneshot::Receiver<super::RunnerConn>,
    caller_r: tokio::net::unix::OwnedReadHalf,
    caller_w: &mut tokio::net::unix::OwnedWriteHalf,
    request_id: u64,
) -> Ended {
    let runner = match tokio::time::timeout(RUNNER_CONNECT_TIMEOUT, connection).await {
        Ok(Ok((stream, peer_pid))) if peer_pid == pid => stream,
        Ok(Ok((_, peer_pid))) => {
            tracing::error!(
                expected = pid,
                got = peer_pid,
                "runner connection from an unexpected pid; refused"
            );
            return Ended::failed("the runner could not be verified");
        }
        _ => return Ended::failed("the runner did not connect"),
    };
    let (runner_r, mut runner_w) = runner.into_split();
    let job = job(prepared, dirs);
    if frames::send(&mut runner_w, &job).await.is_err() {
        return Ended::failed("the runner went away before starting");
    }
    drop(job);
    let started = Response {
        id: request_id,
        result: Ok(Reply::RunStarted {
            command: prepared.argv[0].clone(),
        }),
    };
    let mut ended = Ended {
        started: true,
        code: EXIT_RUNNER_FAILED,
        reason: EndReason::RunnerFailed,
        bytes_out: 0,
        redactions: 0,
        message: None,
        enforcement: serde_json::Value::Null,
    };
    if frames::send(caller_w, &started).await.is_err() {
        ended.reason = EndReason::Cancelled;
        return ended;
    }
    let mut from_runner = pump::<_, RunnerEvent>(runner_r);
    let mut from_caller = pump::<_, RunInput>(caller_r);
    let max_output = prepared.decision.sandbox.max_output;
    let deadline = tokio::time::Instant::now() + prepared.timeout;
    loop {
        let step = tokio::select! {
            ev = from_runner.recv() => Step::Runner(ev),
            input = from_caller.recv() => Step::Caller(input),
            _ = tokio::time::sleep_until(deadline) => Step::Deadline,
        };
        match step {
            Step::Runner(Some(RunnerEvent::Confined { enforcement })) => {
                ended.enforcement =
                    serde_json::from_str(&enforcement).unwrap_or(serde_json::Value::Null);
            }
            Step::Runner(Some(RunnerEvent::Output { stream, data })) => {
                let room = max_output.saturating_sub(ended.bytes_out);
                let take = (data.len() as u64).min(room) as usize;
                ended.bytes_out += take as u64;
                if take > 0 {
                    let ev = RunEvent::Output {
                        stream,
                        data: data[..take].to_vec(),
                    };
                    if frames::send(caller_w, &ev).await.is_err() {
                        ended.reason = EndReason::Cancelled;
                        ended.code = 128 + 9;
                        return ended;
                    }
                }
                if take < data.len() {
                    let note = format!(
                        "\n[aivault: output limit of {max_output} bytes reached; run stopped]\n"
                    );
                    let _ = frames::send(
                        caller_w,
                        &RunEvent::Output {
                            stream: Stream::Stderr,
                            data: note.into_bytes(),
                        },
                    )
                    .await;
                    ended.reason = EndReason::OutputLimit;
                    ended.code = EXIT_OUTPUT_LIMIT;
                    return ended;
                }
            }
            Step::Runner(Some(RunnerEvent::Exit {
                code,
                signaled,
                redactions,
                message,
            })) => {
                ended.code = code;
                ended.redactions = redactions;
                ended.message = message;
                ended.reason = if signaled {
                    EndReason::Signaled
                } else {
                    EndReason::Exited
                };
                return ended;
            }
            Step::Runner(None) => {
                ended.message = Some("the runner ended without reporting an exit status".into());
                return ended;
            }
            Step::Caller(Some(input)) => {
                let input = match input {
                    RunInput::Signal(n)
                        if ![libc::SIGINT, libc::SIGTERM, libc::SIGHUP].contains(&n) =>
                    {
                        continue
                    }
                    other => other,
                };
                if frames::send(&mut runner_w, &input).await.is_err() {
                    continue; // the runner is ending; its exit follows
                }
            }
            Step::Caller(None) => {
                // The caller hung up: the run is cancelled.
                ended.reason = EndReason::Cancelled;
                ended.code = 128 + 9;
                return ended;
            }
            Step::Deadline => {
                let _ = frames::send(&mut runner_w, &RunInput::Signal(libc::SIGTERM)).await;
                let grace = tokio::time::sleep(TERM_GRACE);
                tokio::pin!(grace);
                // Let output already produced reach the caller during the grace.
                loop {
                    tokio::select! {
                        ev = from_runner.recv() => match ev {
                            Some(RunnerEvent::Output { stream, data }) => {
                                let room = max_output.saturating_sub(ended.bytes_out) as usize;
                                let data = data[..data.len().min(room)].to_vec();
                                ended.bytes_out += data.len() as u64;
                                let _ = frames::send(caller_w, &RunEvent::Output { stream, data }).await;
                            }
                            Some(RunnerEvent::Exit { redactions, .. }) => { ended.redactions = redactions; break; }
                            Some(_) => {}
                            None => break,
                        },
                        _ = &mut grace => break,
                    }
                }
                ended.reason = EndReason::Timeout;
                ended.code = EXIT_TIMEOUT;
                ended.message = Some(format!(
                    "timed out after {} ms",
                    prepared.timeout.as_millis()
                ));
                return ended;
            }
        }
    }
}

/// The job sent to the runner.
fn job(prepared: &PreparedRun, dirs: &RunDirs) -> RunnerJob {
    let profile = &prepared.decision.sandbox;
    let spec = aivault_runner::SandboxSpec {
        home: dirs.home.clone(),
        tmp: dirs.tmp.clone(),
        read: profile.read.clone(),
        write: profile.write.clone(),
        exec: vec![prepared.command.path.clone()],
        cwd: prepared.cwd.clone(),
        tcp_connect: profile.tcp_connect.clone(),
        tcp_bind: profile.tcp_bind.clone(),
        limits: aivault_runner::Limits {
            memory: profile.memory,
            processes: profile.processes,
            file_size: profile.file_size,
            cpu_seconds: profile.cpu_seconds,
            open_files: 1024,
        },
        require_full_landlock: profile.require_full_landlock,
    };
    let mut env = vec![
        ("PATH".to_string(), RUN_PATH.to_string()),
        ("HOME".to_string(), dirs.home.display().to_string()),
        ("TMPDIR".to_string(), dirs.tmp.display().to_string()),
    ];
    env.extend(prepared.env.iter().cloned());
    RunnerJob {
        argv: prepared.argv.clone(),
        env,
        secrets: prepared.secrets.clone(),
        sandbox: postcard::to_stdvec(&spec).unwrap_or_default(),
        max_output: profile.max_output,
    }
}

/// Kills every process of `uid` until none is left (zombies excepted: they
/// run nothing and vanish when reaped).
pub fn kill_run_uid(uid: u32) {
    for attempt in 0..200 {
        if let Err(e) = crate::sys::kill_all_of_uid(uid) {
            tracing::error!(error = %e, uid, "cannot kill the run's processes");
        }
        if !super::uidpool::live_processes_of(uid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(if attempt < 10 { 2 } else { 20 }));
    }
    tracing::error!(uid, "processes of a finished run survive repeated SIGKILL");
}
