//! What every connection of a broker process shares: its capabilities, its
//! upstream connections, the control socket, and the requests waiting for
//! the daemon's answer (matched by request number).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use aivault_proto::broker::{DenyReason, FromBroker};
use aivault_proto::SecretBytes;
use tokio::sync::oneshot;

use crate::capability::Capability;
use crate::control::Control;
use crate::upstream::Upstream;

/// How long a request waits for the daemon's decision.
const AUTHORIZE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the daemon answered to an Authorize.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The credential and the named further secrets of the grant.
    Grant(SecretBytes, Vec<(String, SecretBytes)>),
    Deny {
        reason: DenyReason,
        message: String,
        retry_after_s: Option<u32>,
    },
}

/// State shared by every connection of the process.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) caps: Vec<Capability>,
    pub(crate) upstream: Upstream,
    pub(crate) control: Control,
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next_req: AtomicU64,
}

impl Shared {
    pub(crate) fn new(caps: Vec<Capability>, upstream: Upstream, control: Control) -> Shared {
        Shared {
            caps,
            upstream,
            control,
            pending: Mutex::new(HashMap::new()),
            next_req: AtomicU64::new(1),
        }
    }

    /// Asks the daemon whether request `req` may go ahead. `None`: no
    /// answer (the daemon went away, or took too long).
    pub(crate) async fn authorize(&self, msg: FromBroker, req: u64) -> Option<Answer> {
        let (tx, rx) = oneshot::channel();
        self.pending.lock().ok()?.insert(req, tx);
        if self.control.send(&msg).await.is_err() {
            self.forget(req);
            return None;
        }
        match tokio::time::timeout(AUTHORIZE_TIMEOUT, rx).await {
            Ok(Ok(answer)) => Some(answer),
            _ => {
                self.forget(req);
                None
            }
        }
    }

    pub(crate) fn next_req(&self) -> u64 {
        self.next_req.fetch_add(1, Ordering::Relaxed)
    }

    fn forget(&self, req: u64) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&req);
        }
    }

    pub(crate) fn answer(&self, req: u64, answer: Answer) {
        let waiting = self.pending.lock().ok().and_then(|mut p| p.remove(&req));
        match waiting {
            Some(tx) => {
                let _ = tx.send(answer);
            }
            None => tracing::warn!("an answer for request {req}, which is not waiting"),
        }
    }

    /// Reports the end of a request; a lost report is only logged.
    pub(crate) async fn done(&self, msg: FromBroker) {
        if let Err(e) = self.control.send(&msg).await {
            tracing::warn!("the done report was not sent: {e}");
        }
    }
}
