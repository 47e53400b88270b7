//! Warm runners: a few runners started ahead of any run, each under its own
//! leased uid with its private directories made, connected and checked by
//! the [`super::RunnerGate`], waiting idle for a job.
//!
//! Starting a runner (directories, clone, exec, the dynamic loader, the
//! connection back) is most of a short run's cost; a run that takes a warm
//! runner skips all of it. A warm runner holds nothing worth having: no job,
//! no executable, no secret, and no process but itself runs under its uid.
//! It learns what it runs only when a run hands it the job, and follows the
//! same steps from there as a runner started for the run.
//!
//! Only fresh-uid runs take warm runners: a caller-mode runner must start as
//! the caller, inside the run's cgroup. A pool of 0 (`[runs] warm_runners`)
//! turns the pool off. A run refills the pool once its caller has the exit
//! status, so refilling stays off the runs' critical path; at shutdown the
//! pool is closed and every warm runner torn down like a finished run.

use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use super::runner::{self, Ready, RunAs};
use super::RunHost;
use crate::sys::ChildIdentity;

/// Most warm runners a configuration may ask for.
pub const MAX_WARM: usize = 16;

#[derive(Debug, Default)]
struct Inner {
    ready: Vec<Ready>,
    /// Runners being started for the pool.
    starting: usize,
    /// The uids of those that have one yet.
    starting_uids: Vec<u32>,
    closed: bool,
}

/// The idle runners, and how many there should be.
#[derive(Debug)]
pub struct WarmPool {
    target: usize,
    inner: Mutex<Inner>,
}

impl WarmPool {
    pub fn new(target: usize) -> Self {
        WarmPool {
            target: target.min(MAX_WARM),
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The longest-waiting warm runner, if one is ready. Any found dead
    /// (its connection hung up) is torn down instead.
    pub fn take(&self, daemon: &Arc<dyn RunHost>) -> Option<Ready> {
        let (taken, dead) = {
            let mut inner = self.lock();
            let (dead, live): (Vec<Ready>, Vec<Ready>) = std::mem::take(&mut inner.ready)
                .into_iter()
                .partition(|r| super::relay::hung_up(r.stream.as_fd()));
            inner.ready = live;
            let taken = (!inner.ready.is_empty()).then(|| inner.ready.remove(0));
            (taken, dead)
        };
        if !dead.is_empty() {
            tracing::warn!(count = dead.len(), "warm runners went away; discarded");
            let d = daemon.clone();
            tokio::task::spawn_blocking(move || {
                for ready in dead {
                    runner::discard(&*d, ready);
                }
            });
        }
        taken
    }

    /// The uids of the warm runners now idle or being started.
    pub fn uids(&self) -> Vec<u32> {
        let inner = self.lock();
        let mut uids: Vec<u32> = inner.ready.iter().map(Ready::uid).collect();
        uids.extend(&inner.starting_uids);
        uids
    }

    /// A runner being started for the pool has leased `uid`.
    pub(super) fn leased(&self, uid: u32) {
        self.lock().starting_uids.push(uid);
    }

    /// A runner started for the pool under `uid` failed and is torn down.
    pub(super) fn failed(&self, uid: u32) {
        self.lock().starting_uids.retain(|&u| u != uid);
    }

    /// Whether the pool is at rest: closed, or full and starting none.
    pub fn settled(&self) -> bool {
        let inner = self.lock();
        inner.closed || (inner.starting == 0 && inner.ready.len() >= self.target)
    }

    /// Starts as many runners as the pool lacks, in the background.
    pub fn refill(daemon: &Arc<dyn RunHost>) {
        let pool = &daemon.runs().warm;
        let missing = {
            let mut inner = pool.lock();
            if inner.closed {
                return;
            }
            let missing = pool
                .target
                .saturating_sub(inner.ready.len() + inner.starting);
            inner.starting += missing;
            missing
        };
        for _ in 0..missing {
            let d = daemon.clone();
            tokio::spawn(async move {
                let started = start_one(&d).await;
                // Kept if the pool is still open; handed back otherwise.
                let unwanted = {
                    let mut inner = d.runs().warm.lock();
                    inner.starting -= 1;
                    if let Ok(ready) = &started {
                        let uid = ready.uid();
                        inner.starting_uids.retain(|&u| u != uid);
                    }
                    match started {
                        Ok(ready) if !inner.closed => {
                            inner.ready.push(ready);
                            None
                        }
                        Ok(ready) => Some(ready),
                        Err(why) => {
                            tracing::warn!(error = %why, "cannot start a warm runner");
                            None
                        }
                    }
                };
                if let Some(ready) = unwanted {
                    let _ = tokio::task::spawn_blocking(move || runner::discard(&*d, ready)).await;
                }
            });
        }
    }

    /// Closes the pool (nothing is added from now on) and tears down every
    /// idle runner; runners still starting are torn down as they arrive.
    pub async fn close(daemon: &Arc<dyn RunHost>) {
        let idle = {
            let mut inner = daemon.runs().warm.lock();
            inner.closed = true;
            std::mem::take(&mut inner.ready)
        };
        if idle.is_empty() {
            return;
        }
        let d = daemon.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for ready in idle {
                runner::discard(&*d, ready);
            }
        })
        .await;
    }
}

/// Starts a runner for the pool: a leased uid, its directories, the
/// runner, and its checked connection.
async fn start_one(daemon: &Arc<dyn RunHost>) -> Result<Ready, String> {
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
        runner::launch(&*d, RunAs::Lease(lease), &who, &uid.to_string(), None)
    })
    .await
    .unwrap_or_else(|_| Err(("internal error while starting a runner".into(), None)));
    match runner::connect(started).await {
        Ok(ready) => Ok(ready),
        Err((why, leftovers)) => {
            if let Some(leftovers) = leftovers {
                let d = daemon.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let uid = runner::teardown(&*d, *leftovers);
                    d.runs().warm.failed(uid);
                })
                .await;
            }
            Err(why)
        }
    }
}
