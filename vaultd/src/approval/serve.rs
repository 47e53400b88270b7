//! List, approve and deny, for every front end (the socket and D-Bus):
//! the caller is who the kernel or the bus says, never an argument.
//!
//! An approval is accepted only if, in this order:
//! 1. the request is pending (and its own record is written);
//! 2. the rule names the caller as an approver (default: the requester's uid);
//! 3. the caller's process is in another login session than the request
//!    (`session` channel: it must be in one; `polkit` channel: the two may
//!    both be outside any session, as desktop programs are);
//! 4. for the `polkit` channel (the only one a rule with
//!    `approval_channel = "polkit"` accepts), polkitd authorizes the
//!    caller's process for `org.aivault.approve` after its agent has asked
//!    the user.
//!
//! An approval with a one-time code ([`super::code`]) replaces 3. and 4.:
//! the code must be one sent to a notifier of the caller's uid (in another
//! session than the request), from whatever session it is given; a rule
//! that accepts polkit only refuses it, and [`code::MAX_WRONG_CODES`]
//! wrong codes revoke the request's codes.
//!
//! Each refusal and each verdict is audited before it takes effect.

use std::sync::Arc;

use aivault_proto::approval::format_id;
use aivault_proto::{ApprovalChannel, ApprovalRequest, ErrorCode, Reply, WireError};
use serde_json::json;

use super::code::{self, Checked};
use super::polkit::{self, About, Subject};
use super::ApprovalHost;
use super::{session, PendingView, Verdict};
use crate::audit::gate::Entry;
use crate::caller::Caller;

/// Answers one approvals request from `caller`.
pub async fn serve(
    daemon: &Arc<dyn ApprovalHost>,
    caller: Caller,
    req: ApprovalRequest,
) -> Result<Reply, WireError> {
    let groups = {
        let (uid, gid) = (caller.uid, caller.gid);
        tokio::task::spawn_blocking(move || crate::sys::account_groups(uid, gid))
            .await
            .unwrap_or_default()
    };
    let approvals = &daemon.approvals();
    let may_decide = |v: &PendingView| {
        v.rule
            .may_approve(v.requester.uid, caller.uid, caller.gid, &groups)
    };
    match req {
        ApprovalRequest::List => {
            Ok(Reply::Approvals(approvals.list(|v| {
                caller.is_root() || v.requester.uid == caller.uid || may_decide(v)
            })))
        }
        ApprovalRequest::Deny { id } => {
            let op = "approval.deny";
            let Some(view) = approvals.view(id) else {
                return Err(refuse(daemon, caller, op, id, not_pending(id)).await);
            };
            if !may_decide(&view) && view.requester.uid != caller.uid {
                let e = WireError::new(
                    ErrorCode::PermissionDenied,
                    format!("you may not decide approval request {}", format_id(id)),
                );
                return Err(refuse(daemon, caller, op, id, e).await);
            }
            settle(
                daemon,
                caller,
                &view,
                Verdict::Denied { by: caller.uid },
                None,
            )
            .await
        }
        ApprovalRequest::ApproveCode { id, code } => {
            let op = "approval.approve";
            let Some(view) = approvals.view(id) else {
                return Err(refuse(daemon, caller, op, id, not_pending(id)).await);
            };
            if !may_decide(&view) {
                return Err(refuse(daemon, caller, op, id, not_named(&view)).await);
            }
            if view.rule.polkit_only {
                return Err(refuse(daemon, caller, op, id, polkit_only(&view)).await);
            }
            if super::own_uid_needs_polkit(&view, caller.uid) {
                return Err(refuse(daemon, caller, op, id, needs_polkit(&view)).await);
            }
            let Some(checked) = approvals.check_code(id, caller.uid, &code) else {
                return Err(refuse(daemon, caller, op, id, not_pending(id)).await);
            };
            let hex = format_id(id);
            match checked {
                Checked::Right { session, address } => {
                    let verdict = Verdict::Approved {
                        by: caller.uid,
                        channel: ApprovalChannel::Code,
                    };
                    let mine = session::audit_session(caller.pid);
                    let via = json!({ "notifier": address, "notifier_session": session });
                    settle_with(daemon, caller, &view, verdict, mine, via).await
                }
                Checked::None { revoked } => {
                    let why = if revoked {
                        format!("the codes of approval request {hex} were revoked after {} wrong ones: approve it another way", code::MAX_WRONG_CODES)
                    } else {
                        format!("no code was sent for approval request {hex} to a notifier of yours: approve it another way")
                    };
                    let e = WireError::new(ErrorCode::PermissionDenied, why);
                    Err(refuse(daemon, caller, op, id, e).await)
                }
                Checked::Wrong { left } => {
                    let why = if left == 0 {
                        format!("wrong code for approval request {hex}; it was the last try: its codes are revoked")
                    } else {
                        format!("wrong code for approval request {hex} ({left} tries left)")
                    };
                    let e = WireError::new(ErrorCode::PermissionDenied, why);
                    let e = refuse(daemon, caller, op, id, e).await;
                    if left == 0 {
                        revoked(daemon, caller, &view).await;
                    }
                    Err(e)
                }
            }
        }
        ApprovalRequest::Approve { id, channel } => {
            let op = "approval.approve";
            let Some(view) = approvals.view(id) else {
                return Err(refuse(daemon, caller, op, id, not_pending(id)).await);
            };
            if !may_decide(&view) {
                return Err(refuse(daemon, caller, op, id, not_named(&view)).await);
            }
            if view.rule.polkit_only && channel != ApprovalChannel::Polkit {
                return Err(refuse(daemon, caller, op, id, polkit_only(&view)).await);
            }
            if channel != ApprovalChannel::Polkit && super::own_uid_needs_polkit(&view, caller.uid)
            {
                return Err(refuse(daemon, caller, op, id, needs_polkit(&view)).await);
            }
            let mine = session::audit_session(caller.pid);
            let why = match channel {
                ApprovalChannel::Session => session::refuse(mine, view.session),
                ApprovalChannel::Polkit => match (mine, view.session) {
                    (Some(a), Some(r)) if a == r => session::refuse(mine, view.session),
                    _ => None,
                },
                ApprovalChannel::Code => {
                    Some("an approval with a code must give the code (vaultctl approvals approve ID --code CODE)".into())
                }
            };
            if let Some(why) = why {
                let e = WireError::new(ErrorCode::PermissionDenied, why);
                return Err(refuse(daemon, caller, op, id, e).await);
            }
            if channel == ApprovalChannel::Polkit {
                if let Err(e) = ask_polkit(daemon, caller, &view).await {
                    return Err(refuse(daemon, caller, op, id, e).await);
                }
            }
            let verdict = Verdict::Approved {
                by: caller.uid,
                channel,
            };
            settle(daemon, caller, &view, verdict, mine).await
        }
    }
}

/// Has polkit authenticate the user of `caller`'s process.
async fn ask_polkit(
    daemon: &Arc<dyn ApprovalHost>,
    caller: Caller,
    view: &PendingView,
) -> Result<(), WireError> {
    let approvals = &daemon.approvals();
    let start_time = session::start_time(caller.pid).ok_or_else(|| {
        WireError::new(
            ErrorCode::PermissionDenied,
            "cannot identify the approving process for polkit",
        )
    })?;
    let subject = Subject {
        pid: caller.pid,
        start_time,
        uid: caller.uid,
    };
    let about = About {
        request: format_id(view.info.id),
        rule: view.info.rule.clone(),
        command: view.info.argv.first().cloned().unwrap_or_default(),
    };
    let within = std::time::Duration::from_millis(view.info.expires_in_ms);
    match polkit::authorized(&approvals.cfg.polkit_bus, subject, &about, within).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(WireError::new(
            ErrorCode::PermissionDenied,
            "polkit did not authorize the approval (authentication failed, was dismissed, or no polkit agent could ask)",
        )),
        Err(e) => {
            tracing::warn!(error = %e, "polkit check failed");
            Err(WireError::new(ErrorCode::PermissionDenied, e.to_string()))
        }
    }
}

/// Takes the request, audits the verdict, then hands it to the waiting run.
async fn settle(
    daemon: &Arc<dyn ApprovalHost>,
    caller: Caller,
    view: &PendingView,
    verdict: Verdict,
    approver_session: Option<u32>,
) -> Result<Reply, WireError> {
    settle_with(
        daemon,
        caller,
        view,
        verdict,
        approver_session,
        serde_json::Value::Null,
    )
    .await
}

/// [`settle`], with more for the record (`via`: an object, or null).
async fn settle_with(
    daemon: &Arc<dyn ApprovalHost>,
    caller: Caller,
    view: &PendingView,
    verdict: Verdict,
    approver_session: Option<u32>,
    via: serde_json::Value,
) -> Result<Reply, WireError> {
    let id = view.info.id;
    let (op, channel) = match verdict {
        Verdict::Approved { channel, .. } => ("approval.approve", Some(channel.as_str())),
        Verdict::Denied { .. } => ("approval.deny", None),
    };
    let Some(tx) = daemon.approvals().take_visible(id) else {
        let e = WireError::new(
            ErrorCode::NotFound,
            format!(
                "approval request {} was decided or timed out meanwhile",
                format_id(id)
            ),
        );
        return Err(refuse(daemon, caller, op, id, e).await);
    };
    let mut detail = json!({
        "id": format_id(id),
        "requester_uid": view.requester.uid,
        "requester_pid": view.requester.pid,
        "requester_session": view.session,
        "approver_session": approver_session,
        "channel": channel,
        "argv": view.info.argv,
    });
    if let (Some(d), serde_json::Value::Object(more)) = (detail.as_object_mut(), via) {
        d.extend(more);
    }
    let (d, rule) = (daemon.clone(), view.info.rule.clone());
    let recorded = tokio::task::spawn_blocking(move || {
        d.audit()
            .record(Entry::new(&caller, op).name(Some(&rule)).detail(detail))
    })
    .await
    .unwrap_or_else(|_| Err(WireError::new(ErrorCode::Internal, "internal error")));
    // Without its record the verdict is not given: dropping the sender
    // fails the waiting run.
    recorded?;
    let _ = tx.send(verdict);
    Ok(Reply::Done { version: None })
}

fn not_named(view: &PendingView) -> WireError {
    WireError::new(
        ErrorCode::PermissionDenied,
        format!(
            "you may not approve request {}: rule {} names who may",
            format_id(view.info.id),
            view.info.rule
        ),
    )
}

fn needs_polkit(view: &PendingView) -> WireError {
    WireError::new(
        ErrorCode::PermissionDenied,
        format!(
            "approving a run of your own uid needs polkit (vaultctl approvals approve --polkit): \
             a process of your uid can open another session by itself; rule {} may accept it \
             without polkit with approval_channel = \"session\"",
            view.info.rule
        ),
    )
}

fn polkit_only(view: &PendingView) -> WireError {
    WireError::new(
        ErrorCode::PermissionDenied,
        format!(
            "rule {} accepts approvals through polkit only: use vaultctl approvals approve --polkit",
            view.info.rule
        ),
    )
}

/// Records that request `view`'s codes were revoked after too many wrong
/// ones (the request itself stays pending for the other channels).
async fn revoked(daemon: &Arc<dyn ApprovalHost>, caller: Caller, view: &PendingView) {
    let (d, rule) = (daemon.clone(), view.info.rule.clone());
    let detail = json!({
        "id": format_id(view.info.id),
        "wrong_codes": code::MAX_WRONG_CODES,
        "requester_uid": view.requester.uid,
    });
    let _ = tokio::task::spawn_blocking(move || {
        d.audit().record(
            Entry::new(&caller, "approval.code_revoked")
                .name(Some(&rule))
                .detail(detail),
        )
    })
    .await;
}

fn not_pending(id: u64) -> WireError {
    WireError::new(
        ErrorCode::NotFound,
        format!("no pending approval request {}", format_id(id)),
    )
}

/// Audits a refused approvals request and returns the refusal.
async fn refuse(
    daemon: &Arc<dyn ApprovalHost>,
    caller: Caller,
    op: &'static str,
    id: u64,
    e: WireError,
) -> WireError {
    let d = daemon.clone();
    let session = session::audit_session(caller.pid);
    tokio::task::spawn_blocking(move || {
        let detail = json!({
            "id": format_id(id),
            "code": e.code.as_str(),
            "approver_session": session,
        });
        d.audit().deny(Entry::new(&caller, op).detail(detail), e)
    })
    .await
    .unwrap_or_else(|_| WireError::new(ErrorCode::Internal, "internal error"))
}
