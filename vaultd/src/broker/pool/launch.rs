//! A broker's start and end: the blocking part of a start (the init, a
//! leased uid, its directories, the process through the jail host with
//! its control socket as descriptor 3), the wait for its confinement, and
//! the teardown that ends every process of its uid before the uid goes
//! back.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;

use aivault_proto::broker::{BrokerInit, FromBroker, ToBroker};

use super::{BrokerPool, BrokerProcesses, Refused, REFILL};
use crate::broker::control::Control;
use crate::broker::BrokerHost;
use crate::caller::Caller;
use crate::jail::{JailKind, Jailed, SpawnRequest};
use crate::run::spawn::{self, RunDirs};
use crate::run::uidpool::UidLease;

/// What a broker leaves to tear down.
pub(super) struct Leftovers {
    pub(super) lease: UidLease,
    pub(super) dirs: RunDirs,
    pub(super) jailed: Option<Jailed>,
}

impl BrokerPool {
    /// Ends everything of a broker (blocking work on its own thread): every
    /// process of its uid killed, its directories removed, and the uid
    /// returned only if nothing of it survives.
    pub(super) async fn teardown(&self, leftovers: Leftovers) {
        let procs = self.procs.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let Leftovers {
                lease,
                dirs,
                mut jailed,
            } = leftovers;
            let uid = lease.uid();
            let clean = crate::run::runner::kill_run_uid(procs.jail(), uid, jailed.as_mut());
            if let Some(mut j) = jailed {
                procs.jail().wait(&mut j);
            }
            spawn::remove_dirs(&dirs);
            if clean {
                drop(lease);
                procs.uids().refill(REFILL);
            } else {
                tracing::error!(
                    uid,
                    "withholding the uid of a broker whose processes survive"
                );
                std::mem::forget(lease);
            }
        })
        .await;
        self.ended();
    }

    pub(super) fn ended(&self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
        self.torn_down.notify_waiters();
    }
}

/// Sends `Init` and waits for `Confined(Ok)`.
pub(super) async fn confine(control: &Control, init: &BrokerInit) -> Result<(), String> {
    control
        .send(&ToBroker::Init(init.clone()), None)
        .await
        .map_err(|e| format!("cannot send its init: {e}"))?;
    let mut buf = Vec::new();
    match control.recv(&mut buf).await {
        Ok(Some(FromBroker::Confined(Ok(enforcement)))) => {
            tracing::debug!(?enforcement, "broker confined");
            Ok(())
        }
        Ok(Some(FromBroker::Confined(Err(why)))) => {
            Err(format!("it could not confine itself: {why}"))
        }
        Ok(Some(_)) => Err("it spoke before confining itself".into()),
        Ok(None) => Err("it exited before confining itself".into()),
        Err(e) => Err(format!("it broke the protocol: {e}")),
    }
}

pub(super) type Launched = (BrokerInit, Leftovers);

/// The blocking part of a start: the init, a leased uid, its directories,
/// the process with `theirs` as its descriptor 3.
pub(super) fn launch(
    host: &dyn BrokerHost,
    procs: &dyn BrokerProcesses,
    caller: Caller,
    theirs: OwnedFd,
) -> Result<Launched, (Refused, Option<Box<Leftovers>>)> {
    let start = |e: &dyn std::fmt::Display| Refused::Start(e.to_string());
    let mut init = host
        .broker_init(&caller)
        .ok_or((Refused::NoCapability, None))?;
    let lease = procs.uids().acquire().map_err(|e| (start(&e), None))?;
    let uid = lease.uid();
    let name = uid.to_string();
    let dirs = match spawn::make_dirs(procs.runs_dir(), &name, uid, uid, false) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "cannot create a broker's directories");
            let dirs = RunDirs::named(procs.runs_dir(), &name);
            return Err((
                start(&e),
                Some(Box::new(Leftovers {
                    lease,
                    dirs,
                    jailed: None,
                })),
            ));
        }
    };
    init.home = dirs.home.clone();
    init.tmp = dirs.tmp.clone();
    let request = SpawnRequest {
        kind: JailKind::Broker,
        uid,
        gid: uid,
        groups: Vec::new(),
        cwd: dirs.home.clone(),
        args: Vec::new(),
        join_cgroup: false,
        workdir: None,
        control: true,
    };
    match procs.jail().spawn_with_control(request, theirs.as_fd()) {
        Ok(jailed) => Ok((
            init,
            Leftovers {
                lease,
                dirs,
                jailed: Some(jailed),
            },
        )),
        Err(e) => {
            tracing::error!(error = %e, "cannot start a broker");
            Err((
                start(&e),
                Some(Box::new(Leftovers {
                    lease,
                    dirs,
                    jailed: None,
                })),
            ))
        }
    }
}
