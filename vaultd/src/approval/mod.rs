//! Out-of-band human approval of runs.
//!
//! A rule with `approval = ...` (`crate::policy::approval`) makes each run
//! (or the first per login session, or per ttl) wait, before any runner is
//! taken, until a person approves it through a channel the requesting
//! session's processes cannot drive:
//!
//! * [`Approvals`] holds the pending requests: bounded in number (per
//!   requesting uid and in total), each with a deadline;
//! * [`wait::before_run`] is the run path's single wait point: it opens a
//!   request, audits it, tells the caller "awaiting approval", and waits for
//!   the verdict or the deadline (audited too);
//! * [`serve`] answers list / approve / deny from the socket and D-Bus:
//!   an approver must be named by the rule (default: the requester's own
//!   uid), and must be in another login session than the request
//!   ([`session`]: the kernel's audit session id, which a process cannot
//!   change); the polkit channel ([`polkit`]) also has polkitd
//!   authenticate the approver (`org.aivault.approve`, `auth_self`);
//! * [`code`] sends a fresh one-time code to each registered desktop
//!   notifier of an approver in another session; an approval that gives
//!   the code may come from any session.
//!
//! Every request, approval, denial, refusal and timeout is audited through
//! the audit gate.

pub mod code;
pub mod polkit;
pub mod serve;
pub mod session;
pub mod wait;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aivault_proto::{ApprovalChannel, ErrorCode, PendingApproval, WireError};
use serde::Deserialize;
use tokio::sync::{broadcast, oneshot};

use crate::caller::Caller;
use crate::policy::approval::{ApprovalMode, ApprovalRule};

/// Approved rules remembered for `once-per-session` and `ttl`, at most.
const MAX_GRANTS: usize = 4096;

/// `[approval]` in the daemon's configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalConfig {
    /// Seconds a run waits for its approval before it fails.
    pub timeout_secs: u64,
    /// Requests pending at once, all callers together.
    pub max_pending: usize,
    /// Requests pending at once for one requesting uid.
    pub max_pending_per_uid: usize,
    /// The bus polkitd is on: "system" (`DBUS_SYSTEM_BUS_ADDRESS`, else
    /// the standard socket) or a D-Bus address.
    pub polkit_bus: String,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        Self {
            timeout_secs: 120,
            max_pending: 64,
            max_pending_per_uid: 4,
            polkit_bus: "system".into(),
        }
    }
}

impl ApprovalConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.clamp(1, 24 * 3600))
    }
}

/// A person's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approved { by: u32, channel: ApprovalChannel },
    Denied { by: u32 },
}

/// What an approver's request is checked against.
#[derive(Debug, Clone)]
pub struct PendingView {
    pub info: PendingApproval,
    pub requester: Caller,
    /// The requester's audit session, if it had one.
    pub session: Option<u32>,
    pub rule: ApprovalRule,
}

#[derive(Debug)]
struct Pending {
    view: PendingView,
    /// Listed and decidable only once its audit record is written.
    visible: bool,
    deadline: Instant,
    verdict: oneshot::Sender<Verdict>,
    /// One-time codes sent to notifiers; they expire with the request.
    codes: code::Codes,
}

/// An approval that covers later runs of the same rule.
#[derive(Debug)]
struct Grant {
    uid: u32,
    session: u32,
    rule: String,
    until: Option<Instant>,
}

#[derive(Debug, Default)]
struct Table {
    pending: HashMap<u64, Pending>,
    grants: Vec<Grant>,
}

/// Whether an approval by `uid` must come through polkit: the requester's
/// own uid can open another login session without a person (cron, `ssh
/// localhost`), unless the rule says `approval_channel = "session"`.
pub(super) fn own_uid_needs_polkit(view: &PendingView, uid: u32) -> bool {
    uid == view.requester.uid && !view.rule.same_uid_session
}

/// What approval needs of the daemon: its table of requests and the audit
/// gate. The run path's `RunHost` extends it, so the daemon is handed
/// here as itself, and this module depends on nothing of the run path's.
pub trait ApprovalHost: Send + Sync + std::fmt::Debug + 'static {
    fn approvals(&self) -> &Approvals;
    fn audit(&self) -> &crate::audit::gate::AuditGate;
}

/// The pending requests and the approvals still in force. One per daemon.
#[derive(Debug)]
pub struct Approvals {
    pub cfg: ApprovalConfig,
    table: Mutex<Table>,
    announce: broadcast::Sender<PendingApproval>,
    /// Desktop notifiers that get one-time codes.
    pub notifiers: code::Notifiers,
}

impl Approvals {
    pub fn new(cfg: ApprovalConfig) -> Self {
        Approvals {
            cfg,
            table: Mutex::default(),
            announce: broadcast::channel(64).0,
            notifiers: code::Notifiers::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// New pending requests, as they are opened (for the D-Bus signal).
    pub fn subscribe(&self) -> broadcast::Receiver<PendingApproval> {
        self.announce.subscribe()
    }

    /// Whether an earlier approval covers a run of `rule` by `uid` in
    /// `session` (`once-per-session`, `ttl`; never `required`).
    pub fn covered(&self, uid: u32, session: Option<u32>, rule: &str, mode: ApprovalMode) -> bool {
        let Some(session) = session else { return false };
        if mode == ApprovalMode::Required {
            return false;
        }
        let now = Instant::now();
        let mut t = self.lock();
        t.grants.retain(|g| g.until.is_none_or(|u| u > now));
        t.grants
            .iter()
            .any(|g| g.uid == uid && g.session == session && g.rule == rule)
    }

    /// Remembers an approval of `rule` for later runs, if its mode says so.
    pub fn remember(&self, uid: u32, session: Option<u32>, rule: &str, mode: ApprovalMode) {
        let (Some(session), until) = (session, mode) else {
            return;
        };
        let until = match until {
            ApprovalMode::Required => return,
            ApprovalMode::OncePerSession => None,
            ApprovalMode::Ttl(d) => Some(Instant::now() + d),
        };
        let mut t = self.lock();
        if t.grants.len() >= MAX_GRANTS {
            t.grants.remove(0);
        }
        t.grants.push(Grant {
            uid,
            session,
            rule: rule.to_owned(),
            until,
        });
    }

    /// Opens a pending request; refused when the table is full.
    fn open(
        &self,
        view: PendingView,
    ) -> Result<(u64, Instant, oneshot::Receiver<Verdict>), WireError> {
        let deadline = Instant::now() + self.cfg.timeout();
        let mut t = self.lock();
        if t.pending.len() >= self.cfg.max_pending {
            return Err(WireError::new(
                ErrorCode::Busy,
                "too many runs are waiting for approval; try again later",
            ));
        }
        let uid = view.requester.uid;
        let mine = t
            .pending
            .values()
            .filter(|p| p.view.requester.uid == uid)
            .count();
        if mine >= self.cfg.max_pending_per_uid {
            return Err(WireError::new(
                ErrorCode::Busy,
                "you have too many runs waiting for approval",
            ));
        }
        let id = loop {
            let id = random_id()?;
            if id != 0 && !t.pending.contains_key(&id) {
                break id;
            }
        };
        let (tx, rx) = oneshot::channel();
        let mut view = view;
        view.info.id = id;
        view.info.expires_in_ms = self.cfg.timeout().as_millis() as u64;
        t.pending.insert(
            id,
            Pending {
                visible: false,
                view,
                deadline,
                verdict: tx,
                codes: code::Codes::default(),
            },
        );
        Ok((id, deadline, rx))
    }

    /// Makes request `id` visible to approvers and announces it; its
    /// description, or `None` if it is gone.
    fn publish(&self, id: u64) -> Option<PendingApproval> {
        let mut t = self.lock();
        let p = t.pending.get_mut(&id)?;
        p.visible = true;
        let mut info = p.view.info.clone();
        info.expires_in_ms = left(p.deadline);
        let _ = self.announce.send(info.clone());
        Some(info)
    }

    /// A copy of pending request `id`, with its time left.
    pub fn view(&self, id: u64) -> Option<PendingView> {
        let t = self.lock();
        t.pending.get(&id).filter(|p| p.visible).map(|p| {
            let mut v = p.view.clone();
            v.info.expires_in_ms = left(p.deadline);
            v
        })
    }

    /// Every pending request `keep` selects, with its time left.
    pub fn list(&self, keep: impl Fn(&PendingView) -> bool) -> Vec<PendingApproval> {
        let t = self.lock();
        let mut out: Vec<PendingApproval> = t
            .pending
            .values()
            .filter(|p| p.visible && keep(&p.view))
            .map(|p| PendingApproval {
                expires_in_ms: left(p.deadline),
                ..p.view.info.clone()
            })
            .collect();
        out.sort_by_key(|p| p.expires_in_ms);
        out
    }

    /// Takes request `id` out of the table: the verdict's sender, for the
    /// one who decides it. `None` if it is gone (decided or timed out).
    fn take(&self, id: u64) -> Option<oneshot::Sender<Verdict>> {
        self.lock().pending.remove(&id).map(|p| p.verdict)
    }

    /// Adds a code to visible request `id`; false if it is gone.
    fn add_code(&self, id: u64, issued: code::Issued) -> bool {
        let mut t = self.lock();
        match t.pending.get_mut(&id).filter(|p| p.visible) {
            Some(p) => {
                p.codes.add(issued);
                true
            }
            None => false,
        }
    }

    /// Withdraws the code of request `id` sent to `address`.
    fn drop_code(&self, id: u64, address: &str) {
        if let Some(p) = self.lock().pending.get_mut(&id) {
            p.codes.drop_for(address);
        }
    }

    /// Checks a code given for visible request `id` by `uid`; `None` if
    /// the request is gone.
    fn check_code(&self, id: u64, uid: u32, given: &str) -> Option<code::Checked> {
        let mut t = self.lock();
        let p = t.pending.get_mut(&id).filter(|p| p.visible)?;
        Some(p.codes.check(uid, given))
    }

    /// [`Approvals::take`] for an approver: only a visible request.
    fn take_visible(&self, id: u64) -> Option<oneshot::Sender<Verdict>> {
        let mut t = self.lock();
        if !t.pending.get(&id).is_some_and(|p| p.visible) {
            return None;
        }
        t.pending.remove(&id).map(|p| p.verdict)
    }
}

fn left(deadline: Instant) -> u64 {
    deadline
        .saturating_duration_since(Instant::now())
        .as_millis() as u64
}

fn random_id() -> Result<u64, WireError> {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b)
        .map_err(|_| WireError::new(ErrorCode::Internal, "no randomness for a request id"))?;
    Ok(u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(uid: u32) -> PendingView {
        PendingView {
            info: PendingApproval {
                id: 0,
                rule: "r".into(),
                argv: vec!["/bin/true".into()],
                requester_uid: uid,
                requester_pid: 1,
                expires_in_ms: 0,
            },
            requester: Caller {
                uid,
                gid: uid,
                pid: 1,
            },
            session: Some(3),
            rule: ApprovalRule {
                mode: ApprovalMode::Required,
                approvers: None,
                polkit_only: false,
                same_uid_session: false,
            },
        }
    }

    #[test]
    fn the_table_is_bounded_per_uid_and_in_total() {
        let a = Approvals::new(ApprovalConfig {
            max_pending: 3,
            max_pending_per_uid: 2,
            ..Default::default()
        });
        let _one = a.open(view(1000)).expect("first");
        let _two = a.open(view(1000)).expect("second");
        let e = a.open(view(1000)).expect_err("third of one uid");
        assert_eq!(e.code, ErrorCode::Busy);
        let _three = a.open(view(1001)).expect("another uid");
        let e = a.open(view(1002)).expect_err("over the total");
        assert_eq!(e.code, ErrorCode::Busy);
    }

    #[test]
    fn a_request_is_taken_once() {
        let a = Approvals::new(ApprovalConfig::default());
        let (id, _, _rx) = a.open(view(1000)).expect("open");
        assert!(a.view(id).is_none(), "visible before it is published");
        assert!(a.take_visible(id).is_none());
        assert!(a.publish(id).is_some());
        assert!(a.view(id).is_some());
        assert!(a.take(id).is_some());
        assert!(a.take(id).is_none());
        assert!(a.view(id).is_none());
    }

    #[test]
    fn grants_cover_their_session_and_mode_only() {
        let a = Approvals::new(ApprovalConfig::default());
        a.remember(1000, Some(3), "r", ApprovalMode::OncePerSession);
        assert!(a.covered(1000, Some(3), "r", ApprovalMode::OncePerSession));
        assert!(!a.covered(1000, Some(4), "r", ApprovalMode::OncePerSession));
        assert!(!a.covered(1001, Some(3), "r", ApprovalMode::OncePerSession));
        assert!(!a.covered(1000, Some(3), "r", ApprovalMode::Required));
        assert!(!a.covered(1000, None, "r", ApprovalMode::OncePerSession));
        a.remember(1000, Some(5), "t", ApprovalMode::Ttl(Duration::ZERO));
        assert!(!a.covered(1000, Some(5), "t", ApprovalMode::Ttl(Duration::ZERO)));
        a.remember(1000, Some(6), "q", ApprovalMode::Required);
        assert!(!a.covered(1000, Some(6), "q", ApprovalMode::OncePerSession));
    }
}
