//! The broker processes: one `aivault-broker` per caller uid, started on
//! that uid's first connection and handed every later one, stopped when
//! idle, on a policy change and at the daemon's stop.
//!
//! Starting one ([`BrokerPool::dispatch`], the first connection of a uid):
//! the init from [`BrokerHost::broker_init`] (none: the policy gives the
//! caller no capability, and the connection is refused before anything is
//! started), a fresh uid leased from the run uid pool, its private
//! `<runs>/<uid>/{home,tmp}` made as a run's are, a control socket pair,
//! the jail host asked to start [`crate::jail::JailKind::Broker`] under the uid (its
//! own gid, no groups) with the pair's other end as descriptor 3, `Init`
//! sent, and `Confined(Ok)` awaited within [`PoolSettings::start_timeout`].
//! Anything else ends the process and refuses the connection. Concurrent
//! first connections of one uid wait for the same start.
//!
//! Serving: each connection gets the broker's next connection number
//! (1, 2, …) and goes to it attached to `Connection`. One task per broker
//! reads its control socket ([`super::control`]): `Authorize` is decided
//! by [`BrokerHost::authorize`] on a blocking thread (it writes the audit
//! record) and answered `Grant` or `Deny`; `Done` goes to
//! [`BrokerHost::finished`]. The broker is untrusted: a message out of
//! bounds, a connection number it was not given, a request number already
//! in flight, a `Done` for a request not granted, a `TokensRefreshed` for
//! a request not granted refresh material (or a second one), too many
//! requests at once, or a second `Confined` ends it; accepted tokens go to
//! [`BrokerHost::tokens_refreshed`].
//!
//! Ending: a broker with no request in flight and nothing handed to it or
//! asked by it for [`PoolSettings::idle_timeout`] is sent `Shutdown`, as
//! are all of them on [`BrokerPool::policy_changed`] and
//! [`BrokerPool::stop_all`]; one that has not exited after
//! [`PoolSettings::shutdown_grace`], and one that broke the protocol, is
//! killed. Whatever the end (a crash too), its entry goes at once — the
//! next connection starts a new broker —, every process of its uid is
//! killed through the jail host, its directories are removed, and only
//! then does the uid return to the pool.
//!
//! The daemon cannot see a handed connection close (it keeps no copy of
//! it, or the caller would never see the broker close it): "idle" is
//! about requests and hand-overs, so a kept-alive connection with no
//! request for the idle time is closed with its broker.
//!
//! Here: the entries and their life; `pool/launch.rs` a broker's start and
//! teardown; `pool/session.rs` one broker's control task.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aivault_proto::broker::ToBroker;
use tokio::sync::{Notify, OnceCell};

use super::control;
use super::BrokerHost;
use crate::caller::Caller;
use crate::jail::JailHost;
use crate::run::uidpool::UidPool;

mod launch;
mod session;

use launch::{confine, launch};
use session::{send, Broker};

/// Requests one broker may have in flight (asked and not done).
pub const MAX_REQUESTS: usize = 256;
/// Connections whose caller (pid, gid) is remembered per broker; older
/// ones are asked for as the broker's caller.
const REMEMBERED_CONNECTIONS: usize = 1024;
/// How long a message to a broker may wait for room in its socket.
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Uids kept checked and ready after a broker's uid returns.
pub(crate) const REFILL: usize = 8;

/// How the pool times its brokers.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// A broker with nothing to do for this long is stopped.
    pub idle_timeout: Duration,
    /// From start to `Confined`.
    pub start_timeout: Duration,
    /// From `Shutdown` to the kill.
    pub shutdown_grace: Duration,
}

impl PoolSettings {
    pub fn with_idle_timeout(idle_timeout: Duration) -> Self {
        PoolSettings {
            idle_timeout,
            start_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// What the pool needs of the run path to start and end broker
/// processes: the jail hosts, the run uid pool, where run directories go.
pub trait BrokerProcesses: Send + Sync {
    fn jail(&self) -> &JailHost;
    fn uids(&self) -> &UidPool;
    fn runs_dir(&self) -> &Path;
}

/// The run path's pieces of a [`crate::run::RunHost`] (the daemon's
/// `run_host()`), as the pool needs them.
pub struct FromRunHost(pub Arc<dyn crate::run::RunHost>);

impl std::fmt::Debug for FromRunHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FromRunHost").finish_non_exhaustive()
    }
}

impl BrokerProcesses for FromRunHost {
    fn jail(&self) -> &JailHost {
        &self.0.runs().jail
    }
    fn uids(&self) -> &UidPool {
        &self.0.runs().pool
    }
    fn runs_dir(&self) -> &Path {
        &self.0.runs().settings.runs_dir
    }
}

/// Why a connection was not handed to a broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the policy gives this caller no capability")]
    NoCapability,
    #[error("processes of a run may not use the broker")]
    RunUid,
    #[error("the broker could not be started: {0}")]
    Start(String),
    #[error("the policy changed while the broker started; try again")]
    Stale,
    #[error("the broker is gone")]
    Gone,
    #[error("the daemon is stopping")]
    Stopping,
}

/// A refused connection: why, and the connection if it is still here (to
/// tell the caller).
#[derive(Debug)]
pub struct Refusal {
    pub why: Refused,
    pub conn: Option<OwnedFd>,
}

/// One broker as tests and status see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// Whose broker it is.
    pub caller_uid: u32,
    /// The uid it runs under (leased).
    pub uid: u32,
    pub pid: i32,
}

/// The brokers, one per caller uid.
pub struct BrokerPool {
    host: Arc<dyn BrokerHost>,
    procs: Arc<dyn BrokerProcesses>,
    settings: PoolSettings,
    state: Mutex<State>,
    /// Bumped by every policy change and the stop: a broker started under
    /// an older one is not used.
    generation: AtomicU64,
    /// Broker processes not yet torn down.
    live: AtomicUsize,
    torn_down: Notify,
}

impl std::fmt::Debug for BrokerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerPool")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    entries: HashMap<u32, Arc<Entry>>,
    stopping: bool,
}

/// A caller uid's broker, or its start under way.
struct Entry {
    started: OnceCell<Result<Arc<Broker>, Refused>>,
}

impl BrokerPool {
    pub fn new(
        host: Arc<dyn BrokerHost>,
        procs: Arc<dyn BrokerProcesses>,
        settings: PoolSettings,
    ) -> Arc<Self> {
        Arc::new(BrokerPool {
            host,
            procs,
            settings,
            state: Mutex::default(),
            generation: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            torn_down: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `id` is one of the run uids (processes of runs and brokers).
    pub fn is_run_id(&self, id: u32) -> bool {
        self.procs.uids().in_range(id)
    }

    /// The brokers serving now.
    pub fn brokers(&self) -> Vec<BrokerInfo> {
        self.lock()
            .entries
            .values()
            .filter_map(|e| match e.started.get() {
                Some(Ok(b)) => Some(b.info()),
                _ => None,
            })
            .collect()
    }

    /// Broker processes not yet torn down (serving, stopping or starting).
    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Hands `conn`, a connection of `caller` (identified by the kernel),
    /// to the caller's broker, starting it if there is none. The daemon
    /// never reads from `conn`.
    pub async fn dispatch(
        self: &Arc<Self>,
        caller: Caller,
        mut conn: OwnedFd,
    ) -> Result<(), Refusal> {
        let refuse = |why, conn| Err(Refusal { why, conn });
        if self.is_run_id(caller.uid) || self.is_run_id(caller.gid) {
            return refuse(Refused::RunUid, Some(conn));
        }
        // A broker found shutting down (idle, or a policy change) is left
        // to end; the connection goes to a new one.
        for _ in 0..2 {
            let entry = {
                let mut state = self.lock();
                if state.stopping {
                    return refuse(Refused::Stopping, Some(conn));
                }
                state
                    .entries
                    .entry(caller.uid)
                    .or_insert_with(|| {
                        Arc::new(Entry {
                            started: OnceCell::new(),
                        })
                    })
                    .clone()
            };
            let started = entry
                .started
                .get_or_init(|| self.clone().start(caller))
                .await
                .clone();
            let broker = match started {
                Ok(b) => b,
                Err(why) => {
                    self.forget(caller.uid, &entry);
                    // Started under the policy just replaced: once more.
                    if why == Refused::Stale {
                        continue;
                    }
                    return refuse(why, Some(conn));
                }
            };
            match self.hand(&broker, caller, conn).await {
                Ok(()) => return Ok(()),
                Err(Some(back)) => {
                    self.forget(caller.uid, &entry);
                    conn = back;
                }
                Err(None) => return refuse(Refused::Gone, None),
            }
        }
        refuse(Refused::Gone, Some(conn))
    }

    /// Hands one connection over; gives it back if the broker is shutting
    /// down, drops it if the broker failed to take it.
    async fn hand(
        &self,
        broker: &Arc<Broker>,
        caller: Caller,
        conn: OwnedFd,
    ) -> Result<(), Option<OwnedFd>> {
        let Some(number) = broker.number_connection(caller) else {
            return Err(Some(conn));
        };
        let sent = send(
            broker,
            &ToBroker::Connection { conn: number },
            Some(conn.as_fd()),
        )
        .await;
        drop(conn);
        sent.map_err(|()| None)
    }

    /// Removes `entry` for `uid` if it is still the one in place.
    fn forget(&self, uid: u32, entry: &Arc<Entry>) {
        let mut state = self.lock();
        if state
            .entries
            .get(&uid)
            .is_some_and(|e| Arc::ptr_eq(e, entry))
        {
            state.entries.remove(&uid);
        }
    }

    /// Removes the entry holding `broker`, if any.
    fn forget_broker(&self, broker: &Arc<Broker>) {
        let mut state = self.lock();
        let ours = state
            .entries
            .get(&broker.caller.uid)
            .is_some_and(|e| matches!(e.started.get(), Some(Ok(b)) if Arc::ptr_eq(b, broker)));
        if ours {
            state.entries.remove(&broker.caller.uid);
        }
    }

    /// The policy changed: every broker is stopped (its requests in flight
    /// finish), and each caller's next connection starts a new one with
    /// the new policy's init. Cheap and non-blocking: call it right after
    /// the new policy is in force.
    pub fn policy_changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let entries: Vec<_> = self.lock().entries.drain().map(|(_, e)| e).collect();
        for entry in entries {
            if let Some(Ok(b)) = entry.started.get() {
                b.stop.notify_one();
            }
        }
    }

    /// The daemon stops: no broker starts any more, every one is stopped,
    /// and this returns once all are torn down (or after their grace and
    /// the teardown's own bound).
    pub async fn stop_all(&self) {
        self.lock().stopping = true;
        self.policy_changed();
        let bound = self.settings.shutdown_grace + Duration::from_secs(10);
        let _ = tokio::time::timeout(bound, async {
            loop {
                let notified = self.torn_down.notified();
                if self.live() == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }

    /// Starts a broker for `caller` (the first connection of its uid).
    async fn start(self: Arc<Self>, caller: Caller) -> Result<Arc<Broker>, Refused> {
        let generation = self.generation.load(Ordering::SeqCst);
        let (host, procs) = (self.host.clone(), self.procs.clone());
        let (ours, theirs) = control::pair().map_err(|e| Refused::Start(e.to_string()))?;
        self.live.fetch_add(1, Ordering::SeqCst);
        let launched = tokio::task::spawn_blocking(move || launch(&*host, &*procs, caller, theirs))
            .await
            .unwrap_or_else(|_| Err((Refused::Start("the start failed".into()), None)));
        let (init, leftovers) = match launched {
            Ok(l) => l,
            Err((why, leftovers)) => {
                if let Some(l) = leftovers {
                    self.teardown(*l).await;
                } else {
                    self.ended();
                }
                return Err(why);
            }
        };
        let pid = leftovers.jailed.as_ref().map_or(0, |j| j.id());
        let uid = leftovers.lease.uid();
        let confined =
            tokio::time::timeout(self.settings.start_timeout, confine(&ours, &init)).await;
        let refused = match confined {
            Ok(Ok(())) if self.generation.load(Ordering::SeqCst) != generation => {
                Some(Refused::Stale)
            }
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(Refused::Start(why)),
            Err(_) => Some(Refused::Start("it did not confine itself in time".into())),
        };
        if let Some(why) = refused {
            tracing::warn!(uid, pid, caller = caller.uid, error = %why, "a broker did not start");
            self.teardown(leftovers).await;
            return Err(why);
        }
        tracing::info!(uid, pid, caller = caller.uid, "broker started");
        let broker = Arc::new(Broker {
            caller: Caller { pid: 0, ..caller },
            uid,
            pid,
            control: ours,
            inner: Mutex::default(),
            stop: Notify::new(),
        });
        tokio::spawn(self.clone().supervise(broker.clone(), leftovers));
        Ok(broker)
    }
}
