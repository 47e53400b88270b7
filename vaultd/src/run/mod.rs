//! The run path: per-run uids, the runner socket, spawning and supervising
//! `aivault-runner`, and tearing every run down completely.
//!
//! * [`uidpool`] leases a fresh uid per run;
//! * [`spawn`] prepares the run's private directories and starts the runner
//!   under that uid with the command's open executable as fd 3;
//! * [`RunnerGate`] accepts runner connections on a separate socket and hands
//!   each to the run that spawned it — only if the peer's uid *and* pid are
//!   the ones spawned;
//! * [`supervise`] moves bytes between caller and runner, enforces the
//!   timeout and output limit, and on every exit path kills all processes of
//!   the run's uid, removes its directories and frees the uid.

pub mod prepare;
pub mod relay;
pub mod spawn;
pub mod supervise;
pub mod uidpool;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;

/// A runner's connection and the pid the kernel reports for it.
pub type RunnerConn = (UnixStream, i32);

/// Runner connections awaited by runs, keyed by run uid.
type Waiters = HashMap<u32, oneshot::Sender<RunnerConn>>;

/// Where runners connect, and who is expected.
#[derive(Clone, Default)]
pub struct RunnerGate {
    waiting: Arc<Mutex<Waiters>>,
}

impl std::fmt::Debug for RunnerGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerGate").finish_non_exhaustive()
    }
}

impl RunnerGate {
    /// Registers a run uid before its runner is spawned; the receiver
    /// yields the first connection from that uid with its kernel-reported
    /// pid, which the run compares with the pid it spawned.
    pub fn expect(&self, uid: u32) -> oneshot::Receiver<RunnerConn> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid, tx);
        rx
    }

    /// Forgets an expected runner (it never connected, or the run ended).
    pub fn forget(&self, uid: u32) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&uid);
    }

    /// Accepts runner connections forever. A connection from a uid no run is
    /// waiting for is closed at once; the pid is checked by the run.
    pub async fn serve(self, listener: UnixListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            };
            let Ok(peer) = crate::sys::peer_identity(&stream) else {
                continue;
            };
            let waiter = self
                .waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&peer.uid);
            match waiter {
                Some(tx) => {
                    let _ = tx.send((stream, peer.pid));
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
    pub runner: PathBuf,
    pub runner_socket: PathBuf,
    pub runs_dir: PathBuf,
    pub max_runs: usize,
    pub max_runs_per_user: usize,
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
}

/// Counts active runs, overall and per caller uid.
#[derive(Debug, Default)]
pub struct RunCounter {
    inner: Mutex<(usize, HashMap<u32, usize>)>,
}

/// Releases a run slot on drop.
#[derive(Debug)]
pub struct RunSlot {
    counter: Arc<RunCounter>,
    uid: u32,
}

impl RunCounter {
    /// Takes a slot, or says which limit is reached.
    pub fn try_start(
        self: &Arc<Self>,
        uid: u32,
        max: usize,
        per_uid: usize,
    ) -> Result<RunSlot, &'static str> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.0 >= max {
            return Err("too many runs are active; try again later");
        }
        let mine = g.1.entry(uid).or_insert(0);
        if *mine >= per_uid {
            return Err("you have too many runs active; wait for one to finish");
        }
        *mine += 1;
        g.0 += 1;
        Ok(RunSlot {
            counter: self.clone(),
            uid,
        })
    }

    pub fn active(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        let mut g = self.counter.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 = g.0.saturating_sub(1);
        if let Some(n) = g.1.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                g.1.remove(&self.uid);
            }
        }
    }
}
