//! One broker as the pool follows it: its control task reads what the
//! broker says (each message checked: see the pool's documentation),
//! decides its requests through the host, notices when it is idle, asks it
//! to shut down, and ends it — however it ends, the teardown follows.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aivault_proto::broker::{FromBroker, ToBroker, MAX_CONTROL};
use tokio::sync::Notify;

use super::launch::Leftovers;
use super::{BrokerInfo, BrokerPool, MAX_REQUESTS, REMEMBERED_CONNECTIONS, SEND_TIMEOUT};
use crate::broker::control::Control;
use crate::broker::{Ask, Outcome, Tokens};
use crate::caller::Caller;

/// A broker process as the pool follows it.
pub(super) struct Broker {
    pub(super) caller: Caller,
    pub(super) uid: u32,
    pub(super) pid: i32,
    pub(super) control: Control,
    pub(super) inner: Mutex<Inner>,
    pub(super) stop: Notify,
}

#[derive(Default)]
pub(super) struct Inner {
    /// Connections handed over; numbered 1 to `given`.
    given: u64,
    /// The callers of the latest connections, by number.
    callers: HashMap<u64, Caller>,
    order: VecDeque<u64>,
    /// Requests asked and not done.
    requests: HashMap<u64, Request>,
    last_active: Option<Instant>,
    shutting_down: bool,
    /// A message could not be sent: it is killed.
    broken: Option<String>,
}

pub(super) enum Request {
    Asking,
    Granted {
        caller: Caller,
        capability: String,
        method: String,
        path: String,
        /// Refresh material was granted: one `TokensRefreshed` may come.
        refreshable: bool,
    },
}

impl Broker {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next connection's number, its caller remembered; `None` once
    /// the broker is shutting down (the connection goes to a new one).
    pub(super) fn number_connection(&self, caller: Caller) -> Option<u64> {
        let mut inner = self.lock();
        if inner.shutting_down {
            return None;
        }
        inner.given += 1;
        let number = inner.given;
        inner.callers.insert(number, caller);
        inner.order.push_back(number);
        if inner.order.len() > REMEMBERED_CONNECTIONS {
            if let Some(old) = inner.order.pop_front() {
                inner.callers.remove(&old);
            }
        }
        inner.last_active = Some(Instant::now());
        Some(number)
    }

    pub(super) fn info(&self) -> BrokerInfo {
        BrokerInfo {
            caller_uid: self.caller.uid,
            uid: self.uid,
            pid: self.pid,
        }
    }
}

impl BrokerPool {
    /// Follows one broker until it ends, then tears it down.
    pub(super) async fn supervise(self: Arc<Self>, broker: Arc<Broker>, leftovers: Leftovers) {
        let tick = (self.settings.idle_timeout / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = Vec::with_capacity(MAX_CONTROL + 1);
        let mut kill_at: Option<tokio::time::Instant> = None;
        broker.lock().last_active = Some(Instant::now());
        let why: String = loop {
            tokio::select! {
                got = broker.control.recv(&mut buf) => match got {
                    Ok(Some(msg)) => {
                        if let Err(why) = self.on_message(&broker, msg) {
                            break format!("it broke the protocol: {why}");
                        }
                    }
                    Ok(None) => break "it closed its control socket".into(),
                    Err(e) => break format!("it broke the protocol: {e}"),
                },
                () = broker.stop.notified(), if kill_at.is_none() => {
                    if let Some(why) = broker.lock().broken.take() {
                        break why;
                    }
                    kill_at = Some(self.shut_down(&broker).await);
                }
                _ = ticks.tick() => {
                    if let Some(why) = broker.lock().broken.take() {
                        break why;
                    }
                    if leftovers.jailed.as_ref().is_none_or(|j| j.has_ended()) {
                        break "it exited".into();
                    }
                    match kill_at {
                        Some(at) if tokio::time::Instant::now() >= at => {
                            break "it did not exit after its shutdown".into();
                        }
                        Some(_) => {}
                        None if self.idle(&broker) => {
                            kill_at = Some(self.shut_down(&broker).await);
                        }
                        None => {}
                    }
                }
            }
        };
        broker.lock().shutting_down = true;
        self.forget_broker(&broker);
        tracing::info!(uid = broker.uid, pid = broker.pid, caller = broker.caller.uid, reason = %why, "broker ended");
        self.teardown(leftovers).await;
    }

    /// Whether `broker` has had nothing to do for the idle time.
    fn idle(&self, broker: &Broker) -> bool {
        let inner = broker.lock();
        inner.requests.is_empty()
            && inner
                .last_active
                .is_none_or(|t| t.elapsed() >= self.settings.idle_timeout)
    }

    /// Marks `broker` shutting down (no connection is handed to it any
    /// more), takes it out of the pool and sends `Shutdown`; returns when
    /// it is to be killed if it has not ended.
    async fn shut_down(&self, broker: &Arc<Broker>) -> tokio::time::Instant {
        broker.lock().shutting_down = true;
        self.forget_broker(broker);
        let _ = send(broker, &ToBroker::Shutdown, None).await;
        tokio::time::Instant::now() + self.settings.shutdown_grace
    }

    /// Handles one message of a confined broker; an error ends it.
    fn on_message(
        self: &Arc<Self>,
        broker: &Arc<Broker>,
        msg: FromBroker,
    ) -> Result<(), &'static str> {
        match msg {
            FromBroker::Confined(_) => Err("a second confinement report"),
            FromBroker::Authorize {
                req,
                conn,
                capability,
                method,
                path,
            } => {
                let caller = {
                    let mut inner = broker.lock();
                    if conn == 0 || conn > inner.given {
                        return Err("a connection number it was not given");
                    }
                    if inner.requests.contains_key(&req) {
                        return Err("a request number already in flight");
                    }
                    if inner.requests.len() >= MAX_REQUESTS {
                        return Err("too many requests in flight");
                    }
                    inner.requests.insert(req, Request::Asking);
                    inner.last_active = Some(Instant::now());
                    inner.callers.get(&conn).copied().unwrap_or(broker.caller)
                };
                tokio::spawn(self.clone().authorize(
                    broker.clone(),
                    caller,
                    req,
                    capability,
                    method,
                    path,
                ));
                Ok(())
            }
            FromBroker::Done {
                req,
                status,
                request_bytes,
                response_bytes,
                duration_us,
                error,
            } => {
                let granted = {
                    let mut inner = broker.lock();
                    inner.last_active = Some(Instant::now());
                    match inner.requests.get(&req) {
                        Some(Request::Granted { .. }) => inner.requests.remove(&req),
                        _ => return Err("a done for a request not granted"),
                    }
                };
                let Some(Request::Granted {
                    caller,
                    capability,
                    method,
                    path,
                    ..
                }) = granted
                else {
                    return Err("a done for a request not granted");
                };
                let host = self.host.clone();
                tokio::task::spawn_blocking(move || {
                    host.finished(
                        &caller,
                        &Outcome {
                            capability: &capability,
                            method: &method,
                            path: &path,
                            status,
                            request_bytes,
                            response_bytes,
                            duration_us,
                            error: error.as_deref(),
                        },
                    )
                });
                Ok(())
            }
            FromBroker::TokensRefreshed {
                req,
                access_token,
                expires_in_s,
                refresh_token,
            } => {
                let (caller, capability) = {
                    let mut inner = broker.lock();
                    inner.last_active = Some(Instant::now());
                    match inner.requests.get_mut(&req) {
                        Some(Request::Granted {
                            caller,
                            capability,
                            refreshable: refreshable @ true,
                            ..
                        }) => {
                            *refreshable = false;
                            (*caller, capability.clone())
                        }
                        _ => return Err("tokens for a request not granted refresh material"),
                    }
                };
                let host = self.host.clone();
                let tokens = Tokens {
                    access_token,
                    expires_in_s,
                    refresh_token,
                };
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = host.tokens_refreshed(&caller, &capability, tokens) {
                        tracing::warn!(capability, error = %e, "refreshed tokens not stored");
                    }
                });
                Ok(())
            }
        }
    }

    /// Decides one request on a blocking thread and answers the broker.
    async fn authorize(
        self: Arc<Self>,
        broker: Arc<Broker>,
        caller: Caller,
        req: u64,
        capability: String,
        method: String,
        path: String,
    ) {
        let host = self.host.clone();
        let decided = tokio::task::spawn_blocking(move || {
            let ask = Ask {
                capability: &capability,
                method: &method,
                path: &path,
            };
            let answer = host.authorize(&caller, &ask);
            (answer, capability, method, path)
        })
        .await;
        let answer = match decided {
            Ok((Ok(granted), capability, method, path)) => {
                broker.lock().requests.insert(
                    req,
                    Request::Granted {
                        caller,
                        capability,
                        method,
                        path,
                        refreshable: granted.refreshable,
                    },
                );
                ToBroker::Grant {
                    req,
                    secret: granted.secret,
                    extra: granted.extra,
                }
            }
            Ok((Err(denied), ..)) => {
                broker.lock().requests.remove(&req);
                ToBroker::Deny {
                    req,
                    reason: denied.reason,
                    message: denied.message,
                    retry_after_s: denied.retry_after_s,
                }
            }
            Err(_) => {
                broker.lock().requests.remove(&req);
                ToBroker::Deny {
                    req,
                    reason: aivault_proto::broker::DenyReason::Unavailable,
                    message: "the request could not be decided".into(),
                    retry_after_s: None,
                }
            }
        };
        let _ = send(&broker, &answer, None).await;
    }
}

/// Sends `msg` to `broker` within [`SEND_TIMEOUT`]; a broker that does
/// not take it (it stopped reading) or whose socket failed is marked
/// broken, and its control task kills it.
pub(super) async fn send(
    broker: &Broker,
    msg: &ToBroker,
    conn: Option<std::os::fd::BorrowedFd<'_>>,
) -> Result<(), ()> {
    let why = match tokio::time::timeout(SEND_TIMEOUT, broker.control.send(msg, conn)).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "it does not read its control socket".into(),
    };
    tracing::warn!(uid = broker.uid, error = %why, "cannot send to a broker; ending it");
    broker.lock().broken = Some(why);
    broker.stop.notify_one();
    Err(())
}
