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

use super::supervise::{self, Ready};
use crate::ops::Daemon;

/// Most warm runners a configuration may ask for.
pub const MAX_WARM: usize = 16;

#[derive(Debug, Default)]
struct Inner {
    ready: Vec<Ready>,
    /// Runners being started for the pool.
    starting: usize,
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

    /// A live warm runner, if one is ready. One found dead (its connection
    /// hung up) is torn down instead.
    pub fn take(&self, daemon: &Arc<Daemon>) -> Option<Ready> {
        loop {
            let ready = self.lock().ready.pop()?;
            if !super::relay::hung_up(ready.stream.as_fd()) {
                return Some(ready);
            }
            tracing::warn!(uid = ready.uid(), "a warm runner went away; discarded");
            let d = daemon.clone();
            tokio::task::spawn_blocking(move || supervise::discard(&d, ready));
        }
    }

    /// The uids of the warm runners now idle.
    pub fn idle_uids(&self) -> Vec<u32> {
        self.lock().ready.iter().map(Ready::uid).collect()
    }

    /// Starts as many runners as the pool lacks, in the background.
    pub fn refill(daemon: &Arc<Daemon>) {
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
                let started = supervise::start_warm(&d).await;
                // Kept if the pool is still open; handed back otherwise.
                let unwanted = {
                    let mut inner = d.runs().warm.lock();
                    inner.starting -= 1;
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
                    let _ = tokio::task::spawn_blocking(move || supervise::discard(&d, ready)).await;
                }
            });
        }
    }

    /// Closes the pool (nothing is added from now on) and tears down every
    /// idle runner; runners still starting are torn down as they arrive.
    pub async fn close(daemon: &Arc<Daemon>) {
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
                supervise::discard(&d, ready);
            }
        })
        .await;
    }
}
