//! One run from start to end: lease a uid, start the runner, hand it the job,
//! relay (see [`super::relay`]), and — whatever happens — kill every process
//! of the run uid, remove its directories, free the uid and write the audit
//! record of the outcome.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aivault_proto::{
    EndReason, ErrorCode, Reply, Response, RunEvent, RunExit, RunInput, RunnerEvent, RunnerJob,
    WireError,
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

/// Whose identity a run has, and therefore how it is ended.
#[derive(Debug)]
enum RunAs {
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
struct Leftovers {
    run_as: RunAs,
    dirs: RunDirs,
    runner: Option<crate::sys::Spawned>,
}

/// A started runner and what belongs to it.
struct Started {
    leftovers: Leftovers,
    connection: tokio::sync::oneshot::Receiver<UnixStream>,
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
                cgroup_procs: Some(cgroup.procs_fd()),
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
    let runs = daemon.runs();
    let (run_as, who, name) = identity(daemon, prepared).map_err(|e| (e, None))?;
    let dirs = match spawn::make_dirs(&runs.settings.runs_dir, &name, who.uid, who.gid) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot create run directory");
            let dirs = RunDirs::named(&runs.settings.runs_dir, &name);
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
    match spawn::start_runner(&runs.settings, &who, &dirs, &prepared.command.file) {
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
    let clean = match run_as {
        RunAs::Lease(lease) => {
            let clean = kill_run_uid(uid);
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
        let pid = child.id();
        let _ = child.wait();
        daemon.runs().gate.forget(pid);
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
        enforcement: serde_json::Value::Null,
    }
}

/// Runs a prepared request on the caller's connection, which it consumes.
pub async fn run(daemon: Arc<Daemon>, prepared: PreparedRun, caller: UnixStream, request_id: u64) {
    let started_at = Instant::now();
    let prepared = Arc::new(prepared);
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

    // The decision's audit record is made durable while the runner starts:
    // the runner gets nothing (no job, no secret, no command) before the
    // record is written, and is torn down if it cannot be.
    let (d, p) = (daemon.clone(), prepared.clone());
    let recorded = tokio::task::spawn_blocking(move || d.record_run_decision(&p));
    let (d, p) = (daemon.clone(), prepared.clone());
    let setup = tokio::task::spawn_blocking(move || start(&d, &p));
    let recorded = recorded.await.unwrap_or_else(|_| {
        Err(WireError::new(
            ErrorCode::Internal,
            "internal error while auditing the run",
        ))
    });
    let setup = setup
        .await
        .unwrap_or_else(|_| Err(("internal error while starting the run".into(), None)));

    let (outcome, started, leftovers) = match (&recorded, setup) {
        (Err(e), Ok(s)) => (failed(&e.message), false, Some(s.leftovers)),
        (_, Err((message, leftovers))) => (failed(&message), false, leftovers.map(|l| *l)),
        (Ok(()), Ok(s)) => {
            let ends = Ends {
                from_runner: tokio::sync::mpsc::channel(1).1,
                to_runner: tokio::sync::mpsc::channel(1).0,
                from_caller,
                to_caller: to_caller.clone(),
                caller_probe,
            };
            let (outcome, started) =
                drive(&prepared, &s.leftovers.dirs, s.connection, ends, request_id).await;
            (outcome, started, Some(s.leftovers))
        }
    };
    caller_reader.abort();

    // Teardown starts at once, on every path: no process of the run
    // survives, its directories go, and only then does a leased uid return
    // to the pool. The caller's status is reported meanwhile.
    let run_uid = leftovers.as_ref().map(|l| l.run_as.uid());
    let d = daemon.clone();
    let teardown = tokio::task::spawn_blocking(move || leftovers.map(|l| teardown(&d, l)));

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
    if let Ok(body) = report {
        let _ = tokio::time::timeout(REPORT_TIMEOUT, to_caller.send(body)).await;
    }
    drop(to_caller);
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

/// Connects the runner, sends the job, tells the caller the run started,
/// and relays. Returns the outcome and whether `RunStarted` was sent.
async fn drive(
    prepared: &PreparedRun,
    dirs: &RunDirs,
    connection: tokio::sync::oneshot::Receiver<UnixStream>,
    mut ends: Ends,
    request_id: u64,
) -> (Relayed, bool) {
    // The gate hands over only a connection from the spawned pid and uid.
    let runner = match tokio::time::timeout(RUNNER_CONNECT_TIMEOUT, connection).await {
        Ok(Ok(stream)) => stream,
        _ => return (failed("the runner did not connect"), false),
    };
    let (runner_r, runner_w) = runner.into_split();
    let (to_runner, runner_writer) = relay::writer(runner_w, true);
    let (from_runner, runner_reader) = relay::reader::<_, RunnerEvent>(runner_r);
    ends.to_runner = to_runner;
    ends.from_runner = from_runner;

    let outcome = 'run: {
        let job = job(prepared, dirs);
        let sent = relay::offer(&ends.to_runner, &job);
        drop(job);
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
            None => aivault_runner::Isolation::DynamicUid,
            Some(_) => aivault_runner::Isolation::Caller,
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
        secrets: prepared.secrets.clone(),
        sandbox: postcard::to_stdvec(&spec).unwrap_or_default(),
        max_output: profile.max_output,
    }
}

/// Kills every process of `uid` until none is left (zombies excepted: they
/// run nothing and vanish when reaped). False if some survive.
pub fn kill_run_uid(uid: u32) -> bool {
    for attempt in 0..200 {
        if let Err(e) = crate::sys::kill_all_of_uid(uid) {
            tracing::error!(error = %e, uid, "cannot kill the run's processes");
        }
        if !super::uidpool::live_processes_of(uid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(if attempt < 10 { 2 } else { 20 }));
    }
    tracing::error!(uid, "processes of a finished run survive repeated SIGKILL");
    false
}
