//! One run from start to end: take a warm runner (see [`super::warm`]) or
//! lease a uid and start one, hand it the job while the decision is made
//! durable, then the go-ahead with the secrets, relay (see
//! [`super::relay`]), and — whatever happens — kill every process of the run
//! uid, remove its directories, free the uid and write the audit record of
//! the outcome.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aivault_proto::{
    EndReason, ErrorCode, Isolation, Limits, Reply, Response, RunEvent, RunExit, RunInput,
    RunnerEvent, RunnerJob, RunnerSecrets, SandboxSpec, WireError,
};
use serde_json::json;
use tokio::net::UnixStream;

use super::cgroup::RunCgroup;
use super::prepare::{PreparedRun, RUN_PATH};
use super::relay::{self, Ends, Relayed, EXIT_RUNNER_FAILED};
use super::spawn::{self, RunDirs};
use super::uidpool::UidLease;
use super::RUNNER_CONNECT_TIMEOUT;
use crate::audit::Outcome;
use crate::ops::Daemon;
use crate::sys::ChildIdentity;

pub use super::relay::{EXIT_OUTPUT_LIMIT, EXIT_TIMEOUT};

/// Uids kept checked and ready for the next runs.
const REFILL: usize = 8;
/// How long the final status may take to reach a caller that does not read.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long teardown waits for a runner to end by itself before the kill
/// (one that has sent its exit status ends within a millisecond or so).
const RUNNER_EXIT_GRACE: Duration = Duration::from_millis(20);

/// Whose identity a run has, and therefore how it is ended.
#[derive(Debug)]
pub(super) enum RunAs {
    /// A leased fresh uid: teardown kills every process of the uid, then
    /// returns it to the pool.
    Lease(UidLease),
    /// The caller's own uid: teardown kills the run's cgroup.
    Caller { uid: u32, cgroup: RunCgroup },
}

impl RunAs {
    fn uid(&self) -> u32 {
        match self {
            RunAs::Lease(lease) => lease.uid(),
            RunAs::Caller { uid, .. } => *uid,
        }
    }
}

/// What a run leaves to tear down.
#[derive(Debug)]
pub(super) struct Leftovers {
    run_as: RunAs,
    dirs: RunDirs,
    runner: Option<crate::jail::Jailed>,
}

/// A started runner and what belongs to it.
struct Started {
    leftovers: Leftovers,
    connection: tokio::sync::oneshot::Receiver<UnixStream>,
}

/// A runner connected and checked by the gate, waiting for its job.
#[derive(Debug)]
pub struct Ready {
    leftovers: Leftovers,
    pub(super) stream: UnixStream,
}

impl Ready {
    pub fn uid(&self) -> u32 {
        self.leftovers.run_as.uid()
    }
}

/// Why a run did not start, and what it leaves to tear down.
type StartError = (String, Option<Box<Leftovers>>);

/// Takes the run's identity: a leased uid, or the caller's uid in a fresh
/// cgroup. Returns it with the child identity and the directory name.
fn identity(
    daemon: &Daemon,
    prepared: &PreparedRun,
) -> Result<(RunAs, ChildIdentity, String), String> {
    let runs = daemon.runs();
    match &prepared.as_caller {
        None => {
            let lease = runs.pool.acquire().map_err(|e| e.to_string())?;
            let uid = lease.uid();
            let who = ChildIdentity {
                uid,
                gid: uid,
                groups: Vec::new(),
                cgroup_procs: None,
            };
            Ok((RunAs::Lease(lease), who, uid.to_string()))
        }
        Some(caller) => {
            let cgroup = runs.cgroups.create().map_err(|e| {
                tracing::error!(error = %e, "cannot create the run's cgroup");
                format!("isolation `caller` needs a run cgroup: {e}")
            })?;
            let who = ChildIdentity {
                uid: caller.uid,
                gid: caller.gid,
                groups: caller.groups.clone(),
                // The cgroup travels with `RunAs::Caller` to the jail host.
                cgroup_procs: None,
            };
            let name = format!("caller-{}", cgroup.id());
            let run_as = RunAs::Caller {
                uid: caller.uid,
                cgroup,
            };
            Ok((run_as, who, name))
        }
    }
}

/// Takes the run's identity, creates its directories and starts the
/// runner (blocking work).
fn start(daemon: &Daemon, prepared: &PreparedRun) -> Result<Started, StartError> {
    let (run_as, who, name) = identity(daemon, prepared).map_err(|e| (e, None))?;
    launch(daemon, run_as, &who, &name)
}

/// Starts a runner for the warm pool: a leased uid, its directories, the
/// runner, and its checked connection.
pub(super) async fn start_warm(daemon: &Arc<Daemon>) -> Result<Ready, String> {
    let d = daemon.clone();
    let started = tokio::task::spawn_blocking(move || {
        let lease = d.runs().pool.acquire().map_err(|e| (e.to_string(), None))?;
        let uid = lease.uid();
        d.runs().warm.leased(uid);
        let who = ChildIdentity {
            uid,
            gid: uid,
            groups: Vec::new(),
            cgroup_procs: None,
        };
        launch(&d, RunAs::Lease(lease), &who, &uid.to_string())
    })
    .await
    .unwrap_or_else(|_| Err(("internal error while starting a runner".into(), None)));
    match connect(started).await {
        Ok(ready) => Ok(ready),
        Err((why, leftovers)) => {
            if let Some(leftovers) = leftovers {
                let d = daemon.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let uid = teardown(&d, *leftovers);
                    d.runs().warm.failed(uid);
                })
                .await;
            }
            Err(why)
        }
    }
}

/// Tears down a runner that never ran anything (warm, discarded).
pub(super) fn discard(daemon: &Daemon, ready: Ready) {
    drop(ready.stream);
    teardown(daemon, ready.leftovers);
}

/// Waits for a started runner's connection.
async fn connect(started: Result<Started, StartError>) -> Result<Ready, StartError> {
    let Started {
        leftovers,
        connection,
    } = started?;
    match tokio::time::timeout(RUNNER_CONNECT_TIMEOUT, connection).await {
        Ok(Ok(stream)) => Ok(Ready { leftovers, stream }),
        _ => Err((
            "the runner did not connect".into(),
            Some(Box::new(leftovers)),
        )),
    }
}

/// A runner for this run, handed its job: a warm one if the run may take
/// one, else one started now. A warm runner that cannot take the job (it
/// died while idle) is discarded for the next, or a new one.
async fn acquire(daemon: &Arc<Daemon>, prepared: &Arc<PreparedRun>) -> Result<Ready, StartError> {
    if prepared.as_caller.is_none() {
        while let Some(ready) = daemon.runs().warm.take(daemon) {
            match hand(&ready, prepared).await {
                Ok(()) => return Ok(ready),
                Err(e) => {
                    tracing::warn!(error = %e, "a warm runner cannot take its job; discarded");
                    let d = daemon.clone();
                    tokio::task::spawn_blocking(move || discard(&d, ready));
                }
            }
        }
    }
    let (d, p) = (daemon.clone(), prepared.clone());
    let started = tokio::task::spawn_blocking(move || start(&d, &p))
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
        hand_job(&ready.stream, &job, &prepared.command.file),
    )
    .await
    .unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the runner did not take its job",
        ))
    })
}

/// Creates the run's directories and starts the runner as `who`, with the
/// gate told to expect it (blocking work).
fn launch(
    daemon: &Daemon,
    run_as: RunAs,
    who: &ChildIdentity,
    name: &str,
) -> Result<Started, StartError> {
    let runs = daemon.runs();
    let dirs = match spawn::make_dirs(&runs.settings.runs_dir, name, who.uid, who.gid) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot create run directory");
            let dirs = RunDirs::named(&runs.settings.runs_dir, name);
            let leftovers = Leftovers {
                run_as,
                dirs,
                runner: None,
            };
            return Err((
                "the run could not be prepared".into(),
                Some(Box::new(leftovers)),
            ));
        }
    };
    let uid = who.uid;
    let cgroup = match &run_as {
        RunAs::Caller { cgroup, .. } => Some(cgroup.procs()),
        RunAs::Lease(_) => None,
    };
    match spawn::start_runner(&runs.jail, &runs.settings, who, cgroup, &dirs) {
        Ok(child) => {
            let pid = child.id();
            let connection = runs.gate.expect(pid, uid);
            Ok(Started {
                leftovers: Leftovers {
                    run_as,
                    dirs,
                    runner: Some(child),
                },
                connection,
            })
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runner");
            let leftovers = Leftovers {
                run_as,
                dirs,
                runner: None,
            };
            Err((
                "the runner could not be started".into(),
                Some(Box::new(leftovers)),
            ))
        }
    }
}

/// Ends a run completely: no process of it survives, its directories go,
/// and only then does a leased uid return to the pool. Returns the run's uid.
fn teardown(daemon: &Daemon, leftovers: Leftovers) -> u32 {
    let Leftovers {
        run_as,
        dirs,
        runner,
    } = leftovers;
    let uid = run_as.uid();
    let runs = daemon.runs();
    let mut runner = runner;
    // Forgotten first, while its pid still names it: once reaped, the pid
    // could be reused by a process that must not be taken for it.
    if let Some(child) = runner.as_ref() {
        runs.gate.forget(child.id());
    }
    // A runner that sent its exit status ends at once; given that moment,
    // it is reaped before the kill, which then usually finds no task of
    // the uid left at the first try (no `/proc` scan, no retry).
    if let Some(child) = runner.as_ref() {
        child.wait_ended_for(RUNNER_EXIT_GRACE);
    }
    let clean = match run_as {
        RunAs::Lease(lease) => {
            // The jail host reaps the runner before and after the kill, so
            // its zombie is not counted as a task of the uid left behind.
            let clean = kill_run_uid(&runs.jail, uid, runner.as_mut());
            if clean {
                Some(lease)
            } else {
                // Never hand out a uid whose processes survive.
                tracing::error!(uid, "withholding the uid of a run whose processes survive");
                std::mem::forget(lease);
                None
            }
        }
        RunAs::Caller { cgroup, .. } => {
            if !daemon.runs().cgroups.end(cgroup) {
                tracing::error!(uid, "processes of a caller-mode run survive");
            }
            None
        }
    };
    if let Some(mut child) = runner {
        runs.jail.wait(&mut child);
    }
    spawn::remove_dirs(&dirs);
    if let Some(lease) = clean {
        drop(lease);
        daemon.runs().pool.refill(REFILL);
    }
    uid
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

/// Decides a run request on a blocking thread ([`Daemon::prepare_run`]);
/// once it is allowed, that same thread goes on to record the decision
/// (no second hand-over before the log's `fsync` starts) while the
/// decision is returned at once, so a runner is taken and handed its job
/// meanwhile. A denial is returned as the policy's error (already audited).
pub async fn decide(
    daemon: &Arc<Daemon>,
    caller: crate::ops::Caller,
    req: aivault_proto::RunRequest,
) -> Result<Decided, WireError> {
    let (decided_tx, decided_rx) = tokio::sync::oneshot::channel();
    let (durable_tx, durable) = tokio::sync::oneshot::channel::<()>();
    let d = daemon.clone();
    let recording = tokio::task::spawn_blocking(move || {
        let prepared = match d.prepare_run(&caller, req) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                let _ = decided_tx.send(Err(e));
                return Ok(());
            }
        };
        let _ = decided_tx.send(Ok(prepared.clone()));
        d.record_run_decision_then(&prepared, move || {
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
pub async fn run(daemon: Arc<Daemon>, decided: Decided, caller: UnixStream, request_id: u64) {
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
    let ready = acquire(&daemon, &prepared).await;
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
    // to the pool. The caller's status is queued first when there is room
    // (the usual case: it is on its way before the teardown competes for
    // the CPU), and otherwise reported while the teardown proceeds.
    let report = report.ok().and_then(|body| to_caller.try_send(body).err());
    let d = daemon.clone();
    let teardown = tokio::task::spawn_blocking(move || leftovers.map(|l| teardown(&d, l)));
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
            audit_exit(&d, &p, &outcome, &exit, run_uid);
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
    // The run's slot is held until nothing of the run is left.
    let _ = teardown.await;
}

fn audit_exit(
    daemon: &Daemon,
    prepared: &PreparedRun,
    outcome: &Relayed,
    exit: &RunExit,
    uid: Option<u32>,
) {
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
            "isolation": prepared.decision.isolation,
            "run_uid": uid,
            "sandbox": outcome.enforcement,
            "exit_code": exit.code,
            "reason": exit.reason.as_str(),
            "duration_ms": exit.duration_ms,
            "bytes_out": exit.bytes_out,
            "redactions": exit.redactions,
        }),
    );
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
async fn hand_job(
    runner: &UnixStream,
    job: &RunnerJob,
    exe: &std::fs::File,
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
            aivault_proto::handoff::send_frame_with_fd(runner.as_fd(), &frame, exe.as_fd())
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
        cwd: prepared.cwd.clone(),
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
    env.extend(prepared.env.iter().cloned());
    RunnerJob {
        argv: prepared.argv.clone(),
        env,
        sandbox: spec,
        max_output: profile.max_output,
    }
}

/// Kills every process of `uid` until none is left (zombies excepted: they
/// run nothing and vanish when reaped), through the jail host, reaping
/// `runner` (the run's, if still unreaped) on the way. False if some
/// survive. The usual run leaves nothing (its runner reaped the command
/// and is reaped here), which the killer itself establishes; only
/// otherwise does `/proc` confirm it.
pub fn kill_run_uid(
    jail: &crate::jail::JailHost,
    uid: u32,
    mut runner: Option<&mut crate::jail::Jailed>,
) -> bool {
    for attempt in 0..200 {
        match jail.kill_uid(uid, runner.as_deref_mut()) {
            Ok(true) => return true,
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, uid, "cannot kill the run's processes"),
        }
        if !super::uidpool::live_processes_of(uid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(if attempt < 10 { 2 } else { 20 }));
    }
    tracing::error!(uid, "processes of a finished run survive repeated SIGKILL");
    false
}
