//! The run path: per-run uids, the runner socket, spawning and supervising
//! `aivault-runner`, and tearing every run down completely.
//!
//! * [`uidpool`] leases a fresh uid per run;
//! * [`cgroup`] gives each `isolation = "caller"` run its own cgroup v2, the
//!   only way to end it completely when it shares the caller's uid;
//! * [`spawn`] prepares the run's private directories and starts the runner
//!   under the run's identity;
//! * [`warm`] keeps a few runners started ahead of any run, idle under
//!   their own leased uids;
//! * [`RunnerGate`] accepts runner connections on a separate socket and hands
//!   each to the run that spawned it — only if the peer's pid *and* uid are
//!   the ones spawned;
//! * [`runner`] starts a runner under the run's identity through the jail
//!   host and, whatever happens, tears the run down;
//! * [`supervise`] hands the runner its job (the command's open executable
//!   attached) while the decision is audited, then the go-ahead with the
//!   secrets; moves bytes between caller and runner, enforces the
//!   timeout and output limit, and on every exit path kills every process of
//!   the run (its uid, or its cgroup), removes its directories and frees the
//!   uid.

pub mod cgroup;
pub mod prepare;
pub mod relay;
pub mod runner;
pub mod spawn;
pub mod supervise;
pub mod uidpool;
pub mod upstream;
pub mod warm;
pub mod workdir;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;

/// The run path's shared pieces: the uid pool, the runner gate, the run
/// counter, the settings, caller-mode cgroups, the warm pool and the jail
/// hosts. One per daemon.
#[derive(Debug)]
pub struct RunContext {
    pub pool: uidpool::UidPool,
    pub gate: RunnerGate,
    /// Runs at once, all callers together and per caller uid. A run's
    /// place is given back once its exit status is on its way to the caller.
    pub admission: Arc<crate::admission::Admission>,
    /// Runs whose caller has its status but whose teardown is not finished,
    /// under the same limits as `admission`: a run that finds no place here
    /// keeps its run place, and the caller waits for its status, until an
    /// earlier teardown or its own ends. So at most twice the run limits' worth of runs
    /// exist at once, and at most half of them are being torn down.
    pub teardowns: Arc<crate::admission::Admission>,
    pub settings: RunSettings,
    /// Per-run cgroups of caller-mode runs.
    pub cgroups: cgroup::RunCgroups,
    /// Runners started ahead of any run.
    pub warm: warm::WarmPool,
    /// The only processes that start and kill processes under run uids.
    pub jail: crate::jail::JailHost,
    /// Set once the daemon, stopping, ends the runs still active.
    pub ending_all: std::sync::atomic::AtomicBool,
    /// Runs waiting for a person's approval (`crate::approval`).
    pub approvals: crate::approval::Approvals,
}

/// What the run path needs from the daemon, and nothing more: its own
/// pieces, the audit gate, the policy in force, and a granted secret's
/// value. The daemon (`ops::Daemon`) implements it; the run path never
/// sees the vault, the key or the configuration.
pub trait RunHost: crate::approval::ApprovalHost {
    fn runs(&self) -> &RunContext;
    /// The policy in force (a snapshot).
    fn policy(&self) -> Arc<crate::policy::Policy>;
    fn is_sealed(&self) -> bool;
    /// Decrypts a secret for a run the policy allowed.
    fn secret_for_run(
        &self,
        scope: crate::store::Scope,
        name: &str,
    ) -> Result<aivault_proto::SecretBytes, aivault_proto::WireError>;
    /// The names of the secrets in one scope (for a rule's patterns).
    fn secret_names(&self, scope: crate::store::Scope) -> Vec<String>;
    /// When a secret expires (unix seconds), if it is set and has an expiry.
    fn secret_expiry(&self, scope: crate::store::Scope, name: &str) -> Option<u64>;
}

impl RunContext {
    /// Whether no run is active or being torn down.
    pub fn idle(&self) -> bool {
        self.admission.active() == 0 && self.teardowns.active() == 0
    }

    /// A run slot for `uid`, held until nothing of the run is left; or the
    /// reason there is none, for the caller.
    pub fn admit(&self, uid: u32) -> Result<crate::admission::Ticket, &'static str> {
        use crate::admission::Refusal;
        self.admission.try_admit(uid).map_err(|r| match r {
            Refusal::Total => "too many runs are active; try again later",
            Refusal::PerUid => "you have too many runs active; wait for one to finish",
        })
    }

    /// The daemon is stopping and ends the runs still active: their end
    /// is reported as a cancellation by the stop, not a runner failure.
    pub fn end_all(&self) {
        self.ending_all
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether [`RunContext::end_all`] was called.
    pub fn ending_all(&self) -> bool {
        self.ending_all.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// How long a runner has to connect back after it was started.
pub const RUNNER_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A run waiting for its runner: the uid it was started as.
#[derive(Debug)]
struct Waiter {
    uid: u32,
    tx: oneshot::Sender<UnixStream>,
}

/// A connection from a child of the jail host that arrived before its run
/// registered the child's pid (the runner may connect before `spawn`
/// returns to the daemon).
#[derive(Debug)]
struct Early {
    pid: i32,
    uid: u32,
    stream: UnixStream,
    at: Instant,
}

#[derive(Debug, Default)]
struct Expected {
    /// Keyed by runner pid: pids are unique among live processes, uids are
    /// not (caller-mode runs of one user run under the same uid).
    waiting: HashMap<i32, Waiter>,
    early: Vec<Early>,
}

/// Where runners connect, and who is expected.
#[derive(Clone)]
pub struct RunnerGate {
    expected: Arc<Mutex<Expected>>,
    /// The jail hosts' pids: every runner is a child of one.
    parents: Vec<i32>,
}

impl std::fmt::Debug for RunnerGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerGate").finish_non_exhaustive()
    }
}

/// Whether `pid` is a child of one of `parents` (`/proc/<pid>/stat`,
/// field 4).
fn is_child_of(pid: i32, parents: &[i32]) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let ppid = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse::<i32>().ok());
    ppid.is_some_and(|p| parents.contains(&p))
}

impl RunnerGate {
    /// A gate for runners started by the jail hosts `parents`.
    pub fn new(parents: Vec<i32>) -> Self {
        RunnerGate {
            expected: Arc::default(),
            parents,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Expected> {
        self.expected.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a runner just spawned as `pid` under `uid`; the receiver
    /// yields its connection once one arrives from exactly that pid and uid
    /// (at once if it already has).
    pub fn expect(&self, pid: i32, uid: u32) -> oneshot::Receiver<UnixStream> {
        let (tx, rx) = oneshot::channel();
        let mut expected = self.lock();
        match expected.early.iter().position(|e| e.pid == pid) {
            Some(i) => {
                let early = expected.early.swap_remove(i);
                if early.uid == uid {
                    let _ = tx.send(early.stream);
                } else {
                    tracing::error!(
                        pid,
                        expected = uid,
                        got = early.uid,
                        "runner connected under an unexpected uid; refused"
                    );
                }
            }
            None => {
                expected.waiting.insert(pid, Waiter { uid, tx });
            }
        }
        rx
    }

    /// Forgets an expected runner (it never connected, or the run ended).
    pub fn forget(&self, pid: i32) {
        let mut expected = self.lock();
        expected.waiting.remove(&pid);
        expected.early.retain(|e| e.pid != pid);
    }

    /// Accepts runner connections forever. A connection is handed to the
    /// run that spawned its pid if the uid matches too; one from another
    /// child of the daemon is held briefly for its run to register; any
    /// other is closed at once.
    pub async fn serve(self, listener: UnixListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let Ok(peer) = crate::sys::peer_identity(&stream) else {
                continue;
            };
            let waiter = self.lock().waiting.remove(&peer.pid);
            match waiter {
                Some(w) if w.uid == peer.uid => {
                    let _ = w.tx.send(stream);
                }
                Some(w) => {
                    tracing::error!(
                        pid = peer.pid,
                        expected = w.uid,
                        got = peer.uid,
                        "runner connected under an unexpected uid; refused"
                    );
                }
                None if is_child_of(peer.pid, &self.parents) => {
                    let mut expected = self.lock();
                    expected
                        .early
                        .retain(|e| e.at.elapsed() < RUNNER_CONNECT_TIMEOUT);
                    // A run registers right after spawning; re-check now
                    // that the lock is held, so no registration is missed.
                    match expected.waiting.remove(&peer.pid) {
                        Some(w) if w.uid == peer.uid => {
                            let _ = w.tx.send(stream);
                        }
                        Some(_) => {}
                        None => expected.early.push(Early {
                            pid: peer.pid,
                            uid: peer.uid,
                            stream,
                            at: Instant::now(),
                        }),
                    }
                }
                None => {
                    tracing::warn!(
                        uid = peer.uid,
                        pid = peer.pid,
                        "unexpected connection on the runner socket; closed"
                    );
                }
            }
        }
    }
}

/// Paths and limits of the run path, derived from the daemon configuration.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub runner_socket: PathBuf,
    pub runs_dir: PathBuf,
}

impl RunSettings {
    /// The runner binary: `$AIVAULT_RUNNER` is never consulted (the
    /// environment is not configuration); the configured path, else a
    /// sibling of the daemon's own executable, else the packaged location.
    pub fn locate_runner(configured: Option<&Path>) -> PathBuf {
        if let Some(p) = configured {
            return p.to_path_buf();
        }
        if let Some(sibling) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("aivault-runner")))
            .filter(|p| p.exists())
        {
            return sibling;
        }
        PathBuf::from("/usr/libexec/aivault/aivault-runner")
    }

    /// The broker binary (`aivault-broker`, the program of
    /// [`crate::jail::JailKind::Broker`]), found like the runner: the
    /// configured path, else a sibling of the daemon's executable, else the
    /// packaged location.
    pub fn locate_broker(configured: Option<&Path>) -> PathBuf {
        if let Some(p) = configured {
            return p.to_path_buf();
        }
        if let Some(sibling) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("aivault-broker")))
            .filter(|p| p.exists())
        {
            return sibling;
        }
        PathBuf::from("/usr/libexec/aivault/aivault-broker")
    }

    /// The gateway binary (`aivault-gateway`, the program of
    /// [`crate::jail::JailKind::Gateway`]), found like the broker.
    pub fn locate_gateway() -> PathBuf {
        if let Some(sibling) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("aivault-gateway")))
            .filter(|p| p.exists())
        {
            return sibling;
        }
        PathBuf::from("/usr/libexec/aivault/aivault-gateway")
    }
}
