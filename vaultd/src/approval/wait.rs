//! The run path's wait point: before a runner is taken, a run whose rule
//! requires approval waits here — bounded — for a person's verdict.

use std::sync::Arc;

use aivault_proto::{ErrorCode, PendingApproval, Reply, Response, WireError};
use serde_json::json;

use super::ApprovalHost;
use super::{session, PendingView, Verdict};
use crate::audit::gate::Entry;
use crate::audit::Outcome;
use crate::run::prepare::PreparedRun;

/// How often a waiting run looks whether its caller hung up.
const CALLER_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// Waits for the approval of `prepared`, if its rule requires one. `tell`
/// sends the caller the "awaiting approval" reply (under `request_id`);
/// `hung_up` says whether the caller has gone (its request is then
/// withdrawn). `Ok` once approved (or covered by an earlier approval); else
/// the refusal: denied, timed out, withdrawn, table full, or the audit's
/// own error.
pub async fn before_run(
    daemon: &Arc<dyn ApprovalHost>,
    prepared: &PreparedRun,
    request_id: u64,
    tell: impl FnOnce(Response) -> bool,
    hung_up: impl Fn() -> bool,
) -> Result<(), WireError> {
    let Some(rule) = prepared.decision.approval.clone() else {
        return Ok(());
    };
    let approvals = &daemon.approvals();
    let caller = prepared.caller;
    let requester_session = session::audit_session(caller.pid);
    let rule_name = prepared.decision.rule.clone();
    if approvals.covered(caller.uid, requester_session, &rule_name, rule.mode) {
        let (d, name) = (daemon.clone(), rule_name.clone());
        return blocking(move || {
            d.audit().record(
                Entry::new(&caller, "approval.covered")
                    .name(Some(&name))
                    .detail(json!({ "session": requester_session })),
            )
        })
        .await;
    }
    let view = PendingView {
        info: PendingApproval {
            id: 0,
            rule: rule_name.clone(),
            argv: prepared.argv_redacted.clone(),
            requester_uid: caller.uid,
            requester_pid: caller.pid,
            expires_in_ms: 0,
        },
        requester: caller,
        session: requester_session,
        rule: rule.clone(),
    };
    let (id, deadline, mut verdict) = match approvals.open(view) {
        Ok(opened) => opened,
        Err(e) => {
            let (d, name) = (daemon.clone(), rule_name.clone());
            return Err(refusal(move || {
                d.audit()
                    .deny(Entry::new(&caller, "approval.request").name(Some(&name)), e)
            })
            .await);
        }
    };
    // Audited before anyone can see it: approvers find it (and the D-Bus
    // signal announces it) only once this record is durable.
    let record = {
        let (d, name, argv) = (
            daemon.clone(),
            rule_name.clone(),
            prepared.argv_redacted.clone(),
        );
        let timeout_ms = approvals.cfg.timeout().as_millis() as u64;
        blocking(move || {
            d.audit().record(
                Entry::new(&caller, "approval.request")
                    .name(Some(&name))
                    .detail(json!({
                        "id": aivault_proto::approval::format_id(id),
                        "argv": argv,
                        "session": requester_session,
                        "timeout_ms": timeout_ms,
                    })),
            )
        })
        .await
    };
    if let Err(e) = record {
        drop(approvals.take(id));
        return Err(e);
    }
    let waiting = approvals.publish(id);
    if let Some(info) = waiting {
        let told = tell(Response {
            id: request_id,
            result: Ok(Reply::AwaitingApproval(info)),
        });
        if !told {
            drop(approvals.take(id));
            return Err(WireError::new(ErrorCode::Internal, "the caller went away"));
        }
    }
    let gone = async {
        while !hung_up() {
            tokio::time::sleep(CALLER_CHECK).await;
        }
    };
    let got = tokio::select! {
        v = &mut verdict => v.ok(),
        _ = gone => {
            if approvals.take(id).is_some() {
                let (d, name, hex) = (daemon.clone(), rule_name.clone(), aivault_proto::approval::format_id(id));
                let why = "the caller went away while its run waited for approval";
                return Err(refusal(move || {
                    let _ = d.audit().record(
                        Entry::new(&caller, "approval.withdrawn")
                            .name(Some(&name))
                            .outcome(Outcome::Failed, Some(why))
                            .detail(json!({ "id": hex })),
                    );
                    WireError::new(ErrorCode::Internal, why)
                })
                .await);
            }
            verdict.await.ok()
        }
        _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
            if approvals.take(id).is_some() {
                None
            } else {
                // An approver took the request just now: its verdict
                // follows once its audit record is written.
                verdict.await.ok()
            }
        }
    };
    let (d, name) = (daemon.clone(), rule_name.clone());
    let hex = aivault_proto::approval::format_id(id);
    match got {
        Some(Verdict::Approved { .. }) => {
            approvals.remember(caller.uid, requester_session, &rule_name, rule.mode);
            Ok(())
        }
        Some(Verdict::Denied { by }) => {
            // The account database may be remote: asked off the event loop.
            let by = tokio::task::spawn_blocking(move || who(by))
                .await
                .unwrap_or_else(|_| format!("uid {by}"));
            Err(WireError::new(
                ErrorCode::PermissionDenied,
                format!("approval request {hex} was denied by {by}"),
            ))
        }
        None if approvals.view(id).is_none() && deadline > std::time::Instant::now() => {
            // The verdict's sender went without a verdict: the approval
            // could not be recorded.
            Err(WireError::new(
                ErrorCode::AuditUnavailable,
                format!("approval request {hex} could not be recorded"),
            ))
        }
        None => {
            let secs = approvals.cfg.timeout().as_secs();
            let timed_out = WireError::new(
                ErrorCode::PermissionDenied,
                format!("approval request {hex} timed out: nobody approved it within {secs} s"),
            );
            Err(refusal(move || {
                d.audit().deny(
                    Entry::new(&caller, "approval.timeout")
                        .name(Some(&name))
                        .detail(json!({ "id": hex, "code": "timeout" })),
                    timed_out,
                )
            })
            .await)
        }
    }
}

/// Whether the peer of `sock` has closed its end or gone. Any event for
/// `POLLRDHUP` alone means so (`POLLHUP`, `POLLERR` and `POLLNVAL` are
/// always reported); the kernel's `revents` is not decoded, since nix
/// knows no `POLLRDHUP` bit and would not decode it.
pub fn caller_gone(sock: std::os::fd::BorrowedFd<'_>) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let rdhup = PollFlags::from_bits_retain(libc::POLLRDHUP);
    let mut fds = [PollFd::new(sock, rdhup)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// `user alice (uid 1000)`, or `uid 1000`.
pub fn who(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("user {} (uid {uid})", u.name),
        _ => format!("uid {uid}"),
    }
}

/// Runs `f` (an audited refusal, which fsyncs) on a blocking thread.
async fn refusal(f: impl FnOnce() -> WireError + Send + 'static) -> WireError {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|_| {
        WireError::new(
            ErrorCode::Internal,
            "internal error while auditing the approval",
        )
    })
}

/// Runs `f` (an audit write, which fsyncs) on a blocking thread.
async fn blocking(
    f: impl FnOnce() -> Result<(), WireError> + Send + 'static,
) -> Result<(), WireError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|_| {
        Err(WireError::new(
            ErrorCode::Internal,
            "internal error while auditing the approval",
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::caller_gone;
    use std::os::fd::AsFd;

    #[test]
    fn a_closed_or_half_closed_peer_is_gone_an_open_one_is_not() {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        assert!(!caller_gone(a.as_fd()));
        drop(b);
        assert!(caller_gone(a.as_fd()));
        let (c, d) = std::os::unix::net::UnixStream::pair().expect("pair");
        d.shutdown(std::net::Shutdown::Write).expect("shutdown");
        assert!(caller_gone(c.as_fd()));
    }
}
