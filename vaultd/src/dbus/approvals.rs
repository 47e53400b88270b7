//! `org.aivault.Approvals1` (at `/org/aivault/Vault1`, beside
//! `org.aivault.Vault1`): list, approve and deny runs waiting for a
//! person, and the `ApprovalPending` signal when one starts waiting.
//! Desktop notifiers register (`RegisterNotifier`) to get, as a signal
//! sent to their unique name alone (`ApprovalCode`), a one-time code for
//! each new request they may approve from another session
//! ([`crate::approval::code`]); `ApproveWithCode` gives it back.
//!
//! The caller is identified by the bus exactly as for `Vault1`; its login
//! session is read from the kernel for the pid the bus reports (from the
//! bus's pidfd where it has one). The decisions are
//! [`crate::approval::serve`]'s, the same as on the socket.

use std::sync::Arc;

use aivault_proto::approval::{format_id, parse_id};
use aivault_proto::{ApprovalChannel, ApprovalRequest, PendingApproval, Reply};
use futures_util::StreamExt;
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
        crate::approval::serve::serve(&self.daemon.approval_host(), caller, req)
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

    /// Approves a pending request with the one-time code an ApprovalCode
    /// signal brought to a notifier of the caller; from any session.
    async fn approve_with_code(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        id: &str,
        code: &str,
    ) -> Result<(), VaultError> {
        let id = id_arg(id)?;
        if code.len() > 64 {
            return Err(bad("a code is 10 characters"));
        }
        let code = code.to_owned();
        self.serve(conn, &hdr, ApprovalRequest::ApproveCode { id, code })
            .await
            .map(|_| ())
    }

    /// Registers the calling connection as a desktop notifier of its user:
    /// for each new request the user may approve, from a login session
    /// other than the notifier's, it gets an ApprovalCode signal sent to
    /// it alone. Forgotten when the connection leaves the bus, or after
    /// lifetime_s seconds (call again to renew). The caller must be in a
    /// login session.
    #[zbus(out_args("lifetime_s"))]
    async fn register_notifier(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<u32, VaultError> {
        let (caller, sender) = self.who.caller(conn, &hdr).await?;
        let bus = conn.server_guid().to_string();
        let session = crate::approval::session::audit_session(caller.pid);
        let notifiers = &self.daemon.runs().approvals.notifiers;
        let lifetime = notifiers
            .register(&bus, &sender, caller, session)
            .map_err(VaultError::from)?;
        // A connection already gone would hold its place until the bound.
        if !still_there(conn, &sender).await {
            notifiers.forget(&bus, &sender);
        }
        tracing::info!(uid = caller.uid, pid = caller.pid, notifier = %sender, session, "approval notifier registered");
        Ok(lifetime.as_secs() as u32)
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

    /// To one registered notifier alone: the one-time code that approves
    /// request id (vaultctl approvals approve ID with option code, or
    /// ApproveWithCode), with what the request is about.
    #[zbus(signal)]
    async fn approval_code(
        emitter: &zbus::object_server::SignalEmitter<'_>,
        id: &str,
        code: &str,
        rule: &str,
        requester_uid: u32,
        argv: Vec<String>,
        expires_in_ms: u64,
    ) -> zbus::Result<()>;
}

/// Whether unique name `name` is still on the bus (true if the bus cannot say).
async fn still_there(conn: &Connection, name: &str) -> bool {
    let Ok(name) = zbus::names::BusName::try_from(name) else {
        return false;
    };
    match zbus::fdo::DBusProxy::new(conn).await {
        Ok(bus) => bus.name_has_owner(name).await.unwrap_or(true),
        Err(_) => true,
    }
}

/// Forgets the notifiers of other buses and those gone from this one, then
/// each notifier whose name leaves the bus. Returns only if it cannot watch.
async fn watch_notifiers(conn: Connection, daemon: Arc<Daemon>) {
    let bus = conn.server_guid().to_string();
    let notifiers = &daemon.runs().approvals.notifiers;
    let Ok(proxy) = zbus::fdo::DBusProxy::new(&conn).await else {
        tracing::error!("cannot watch approval notifiers");
        return;
    };
    let Ok(mut changes) = proxy.receive_name_owner_changed().await else {
        tracing::error!("cannot watch approval notifiers");
        return;
    };
    notifiers.retain(|n| n.bus == bus);
    for n in notifiers.on(&bus) {
        if !still_there(&conn, &n.address).await {
            notifiers.forget(&bus, &n.address);
        }
    }
    while let Some(change) = changes.next().await {
        let Ok(args) = change.args() else { continue };
        if args.new_owner().is_none() && args.name().starts_with(':') {
            notifiers.forget(&bus, args.name());
        }
    }
    tracing::error!("lost track of approval notifiers leaving the bus");
}

/// Sends each notifier that may approve request `id` its code, to its
/// unique name alone.
async fn send_codes(conn: &Connection, daemon: &Arc<Daemon>, id: u64) {
    let bus = conn.server_guid().to_string();
    for d in crate::approval::code::issue(&daemon.approval_host(), &bus, id).await {
        let Ok(to) = zbus::names::BusName::try_from(d.address.as_str()) else {
            continue;
        };
        let sent = conn
            .emit_signal(
                Some(to),
                super::OBJECT_PATH,
                INTERFACE,
                "ApprovalCode",
                &(
                    format_id(d.info.id).as_str(),
                    d.code.as_str(),
                    d.info.rule.as_str(),
                    d.info.requester_uid,
                    &d.info.argv,
                    d.info.expires_in_ms,
                ),
            )
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, notifier = %d.address, "ApprovalCode not sent");
        }
    }
}

/// Sends `ApprovalPending` for every request that starts waiting, until
/// the connection goes.
/// Also sends the codes ([`send_codes`]) and keeps the notifiers
/// ([`watch_notifiers`]).
pub async fn announce(conn: Connection, daemon: Arc<Daemon>) {
    let mut pending = daemon.runs().approvals.subscribe();
    let watcher = tokio::spawn(watch_notifiers(conn.clone(), daemon.clone()));
    let _stop_watching = AbortOnDrop(watcher);
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
        // Off this loop: the codes' records are written (fsynced) first.
        let (c, d) = (conn.clone(), daemon.clone());
        tokio::spawn(async move { send_codes(&c, &d, p.id).await });
    }
}

/// Aborts its task when dropped (the announcer is aborted on reconnect).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
