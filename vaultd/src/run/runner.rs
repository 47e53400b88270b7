//! A runner's life outside its run: start one under the run's identity
//! (a leased fresh uid, or the caller's in a fresh cgroup) through the jail
//! host, wait for it to connect through the gate, and — whatever happens —
//! tear it down: kill every process of the run, remove its directories and
//! free the uid. [`super::supervise`] drives a run between the two;
//! [`super::warm`] starts runners ahead of any run.

use std::time::Duration;

use tokio::net::UnixStream;

use super::cgroup::RunCgroup;
use super::prepare::PreparedRun;
use super::spawn::{self, RunDirs};
use super::uidpool::UidLease;
use super::RunHost;
use super::RUNNER_CONNECT_TIMEOUT;
use crate::sys::ChildIdentity;

/// Uids kept checked and ready for the next runs.
const REFILL: usize = 8;
/// How often a runner that has not connected yet is checked for having
/// ended (a non-blocking `poll` of its pidfd).
const ENDED_POLL: Duration = Duration::from_millis(5);
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
    pub(super) fn uid(&self) -> u32 {
        match self {
            RunAs::Lease(lease) => lease.uid(),
            RunAs::Caller { uid, .. } => *uid,
        }
    }
}

/// What a run leaves to tear down.
#[derive(Debug)]
pub(super) struct Leftovers {
    pub(super) run_as: RunAs,
    pub(super) dirs: RunDirs,
    pub(super) runner: Option<crate::jail::Jailed>,
}

/// A started runner and what belongs to it.
pub(super) struct Started {
    leftovers: Leftovers,
    connection: tokio::sync::oneshot::Receiver<UnixStream>,
}

/// A runner connected and checked by the gate, waiting for its job.
#[derive(Debug)]
pub struct Ready {
    pub(super) leftovers: Leftovers,
    pub(super) stream: UnixStream,
}

impl Ready {
    pub fn uid(&self) -> u32 {
        self.leftovers.run_as.uid()
    }
}

/// Why a run did not start, and what it leaves to tear down.
pub(super) type StartError = (String, Option<Box<Leftovers>>);

/// Takes the run's identity: a leased uid, or the caller's uid in a fresh
/// cgroup. Returns it with the child identity and the directory name.
fn identity(
    daemon: &dyn RunHost,
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
pub(super) fn start(daemon: &dyn RunHost, prepared: &PreparedRun) -> Result<Started, StartError> {
    let (run_as, who, name) = identity(daemon, prepared).map_err(|e| (e, None))?;
    launch(daemon, run_as, &who, &name, prepared.workdir.as_ref())
}

/// Tears down a runner that never ran anything (warm, discarded).
pub(super) fn discard(daemon: &dyn RunHost, ready: Ready) {
    drop(ready.stream);
    teardown(daemon, ready.leftovers);
}

/// Waits for a started runner's connection: at most
/// [`RUNNER_CONNECT_TIMEOUT`], and no longer than the runner lives (its
/// pidfd is looked at every [`ENDED_POLL`] meanwhile), so a runner that
/// cannot start — a broken binary, a sandbox it cannot set up — fails the
/// run at once.
pub(super) async fn connect(started: Result<Started, StartError>) -> Result<Ready, StartError> {
    let Started {
        leftovers,
        mut connection,
    } = started?;
    let waited = tokio::select! {
        c = &mut connection => c.map_err(|_| "the runner did not connect"),
        () = runner_ended(leftovers.runner.as_ref()) => {
            // It may have connected just before it ended: then handing it
            // its job fails instead, as for any runner that goes away.
            connection.try_recv().map_err(|_| "the runner exited before connecting")
        },
        () = tokio::time::sleep(RUNNER_CONNECT_TIMEOUT) => Err("the runner did not connect in time"),
    };
    match waited {
        Ok(stream) => Ok(Ready { leftovers, stream }),
        Err(why) => {
            tracing::error!(reason = why, "the runner did not start");
            Err((why.into(), Some(Box::new(leftovers))))
        }
    }
}

/// Resolves once `runner` has ended; never without one.
async fn runner_ended(runner: Option<&crate::jail::Jailed>) {
    let Some(runner) = runner else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(ENDED_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if runner.has_ended() {
            return;
        }
    }
}

/// Creates the run's directories and starts the runner as `who`, with the
/// gate told to expect it (blocking work).
pub(super) fn launch(
    daemon: &dyn RunHost,
    run_as: RunAs,
    who: &ChildIdentity,
    name: &str,
    workdir: Option<&super::workdir::Workdir>,
) -> Result<Started, StartError> {
    let runs = daemon.runs();
    let made = spawn::make_dirs(
        &runs.settings.runs_dir,
        name,
        who.uid,
        who.gid,
        workdir.is_some(),
    );
    let dirs = match made {
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
    // A fresh uid sees the caller's files as its own; a caller-mode run
    // is the caller.
    let workdir = workdir.map(|w| match &run_as {
        RunAs::Lease(_) => (w, Some(w.caller)),
        RunAs::Caller { .. } => (w, None),
    });
    match spawn::start_runner(&runs.jail, &runs.settings, who, cgroup, &dirs, workdir) {
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
            // What failed with the working directory (a filesystem without
            // idmapped mounts, say) is the caller's to know; the message
            // names no path.
            let why = match workdir {
                Some(_) => format!("the runner could not be started: {e}"),
                None => "the runner could not be started".into(),
            };
            Err((why, Some(Box::new(leftovers))))
        }
    }
}

/// Ends a run completely: no process of it survives, its directories go,
/// and only then does a leased uid return to the pool. Returns the run's uid.
pub(super) fn teardown(daemon: &dyn RunHost, leftovers: Leftovers) -> u32 {
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
