//! `org.aivault.Approvals1` (at `/org/aivault/Vault1`, beside
//! `org.aivault.Vault1`): list, approve and deny runs waiting for a
//! person, and the `ApprovalPending` signal when one starts waiting.
//!
//! The caller is identified by the bus exactly as for `Vault1`; its login
//! session is read from the kernel for the pid the bus reports (from the
//! bus's pidfd where it has one). The decisions are
//! [`crate::approval::serve`]'s, the same as on the socket.

use std::sync::Arc;

use aivault_proto::approval::{format_id, parse_id};
use aivault_proto::{ApprovalChannel, ApprovalRequest, PendingApproval, Reply};
use zbus::message::Header;
use zbus::zvariant::{SerializeDict, Type};
use zbus::Connection;

use super::error::{bad, internal, VaultError};
use super::iface::Vault;
use crate::ops::Daemon;

pub const INTERFACE: &str = "org.aivault.Approvals1";

/// One pending request, as `ListApprovals` returns it (`a{sv}`).
#[derive(Debug, SerializeDict, Type)]
#[zvariant(signature = "a{sv}", rename_all = "snake_case")]
pub struct PendingMeta {
    id: String,
    rule: String,
    argv: Vec<String>,
    requester_uid: u32,
    requester_pid: i32,
    expires_in_ms: u64,
}

impl From<PendingApproval> for PendingMeta {
    fn from(p: PendingApproval) -> Self {
        PendingMeta {
            id: format_id(p.id),
            rule: p.rule,
            argv: p.argv,
            requester_uid: p.requester_uid,
            requester_pid: p.requester_pid,
            expires_in_ms: p.expires_in_ms,
        }
    }
}

/// The exported object's approvals interface.
#[derive(Debug)]
pub struct Approvals {
    daemon: Arc<Daemon>,
    /// Identifies callers as `Vault1` does (and shares its caller cache).
    who: Vault,
}

impl Approvals {
    pub fn new(daemon: Arc<Daemon>, who: Vault) -> Self {
        Approvals { daemon, who }
    }

    async fn serve(
        &self,
        conn: &Connection,
        hdr: &Header<'_>,
        req: ApprovalRequest,
    ) -> Result<Reply, VaultError> {
        let (caller, _) = self.who.caller(conn, hdr).await?;
        crate::approval::serve::serve(&self.daemon.run_host(), caller, req)
            .await
            .map_err(VaultError::from)
    }
}

fn id_arg(id: &str) -> Result<u64, VaultError> {
    parse_id(id).ok_or_else(|| bad("the request id must be 16 hexadecimal digits"))
}

// Doc comments become XML comments: no two hyphens in a row.
#[zbus::interface(name = "org.aivault.Approvals1")]
impl Approvals {
    /// The pending requests the caller may approve, and its own.
    #[zbus(out_args("requests"))]
    async fn list_approvals(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<PendingMeta>, VaultError> {
        match self.serve(conn, &hdr, ApprovalRequest::List).await? {
            Reply::Approvals(list) => Ok(list.into_iter().map(PendingMeta::from).collect()),
            _ => Err(internal("unexpected reply")),
        }
    }

    /// Approves a pending request. channel: "session" (or ""): the calling
    /// process must be in another login session than the request; "polkit":
    /// polkit also authenticates the caller (action org.aivault.approve).
    async fn approve(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        id: &str,
        channel: &str,
    ) -> Result<(), VaultError> {
        let id = id_arg(id)?;
        let channel = match channel {
            "" | "session" => ApprovalChannel::Session,
            "polkit" => ApprovalChannel::Polkit,
            _ => return Err(bad("channel must be \"session\", \"\" or \"polkit\"")),
        };
        self.serve(conn, &hdr, ApprovalRequest::Approve { id, channel })
            .await
            .map(|_| ())
    }

    /// Denies a pending request (an approver, or the requester).
    async fn deny(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        id: &str,
    ) -> Result<(), VaultError> {
        let id = id_arg(id)?;
        self.serve(conn, &hdr, ApprovalRequest::Deny { id })
            .await
            .map(|_| ())
    }

    /// A run started waiting for a person's approval.
    #[zbus(signal)]
    async fn approval_pending(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        id: &str,
        rule: &str,
        requester_uid: u32,
        expires_in_ms: u64,
    ) -> zbus::Result<()>;
}

/// Sends `ApprovalPending` for every request that starts waiting, until
/// the connection goes.
pub async fn announce(conn: Connection, daemon: Arc<Daemon>) {
    let mut pending = daemon.runs().approvals.subscribe();
    loop {
        let p = match pending.recv().await {
            Ok(p) => p,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "ApprovalPending signals dropped");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let sent = conn
            .emit_signal(
                None::<()>,
                super::OBJECT_PATH,
                INTERFACE,
                "ApprovalPending",
                &(
                    format_id(p.id).as_str(),
                    p.rule.as_str(),
                    p.requester_uid,
                    p.expires_in_ms,
                ),
            )
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, "ApprovalPending not sent");
        }
    }
}
