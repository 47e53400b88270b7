//! The daemon's process side of the MCP gateway (docs/mcp-gateway.md):
//! one jailed `aivault-gateway` per agent connection, under a fresh run
//! uid of its own, never the caller's.
//!
//! A `McpGateway` request ([`start`]) leases a uid, makes the process's
//! private directories, starts it through the jail host with its control
//! socket as descriptor 3 ([`control`]), sends it the `[[mcp_server]]`
//! tables the caller may use and waits until it has confined itself. Only
//! then is the caller answered; the connection itself is handed to the
//! process ([`Session::serve`]), and the daemon reads none of its bytes.
//! From then on the daemon answers the process's requests and writes its
//! reports to the audit log, each field checked ([`check`]): the process
//! is untrusted. When the agent disconnects the process exits; its uid's
//! processes are killed, its directories removed and the uid freed.
//!
//! A `StartUpstream` names a server of the caller's: the daemon resolves
//! its command (root-owned, hashed, as a rule's), reads its secrets,
//! audits the start and starts it as a runner job under another fresh uid
//! (`crate::run::upstream`), its stdio a socket whose other end goes to the
//! gateway with the secret values (for the gateway's redactor only). Each
//! upstream is stopped on `StopUpstream` and when the session ends.
//!
//! An `OpenHttp` names a url server of the caller's: the daemon makes a
//! socket pair, hands one end to the caller's broker through the broker
//! endpoint's own [`crate::broker::endpoint::Handover`] (the same limits,
//! the same pool, the caller's identity: the agent's, not the gateway's
//! run uid) and the other to the gateway. It reads neither: the broker
//! parses the HTTP, decides by the capability the server names, holds the
//! credential and redacts the answer. A
//! policy change ends every session (and its upstreams): the agent's next
//! connection is served under the new policy.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use aivault_proto::gateway::{
    CallAudit, CallDecision, FromGateway, GatewayInit, ToGateway, ToolHidden, MAX_ACTIONS,
    MAX_CONTROL, MAX_NAME,
};
use aivault_proto::{ErrorCode, Limits, WireError};
use serde_json::json;

use crate::audit::gate::Entry;
use crate::audit::Outcome;
use crate::caller::Caller;
use crate::jail::control::{self, Control};
use crate::jail::{JailKind, Jailed, SpawnRequest};
use crate::ops::Daemon;
use crate::run::spawn::{self, RunDirs};
use crate::run::uidpool::UidLease;
use crate::run::upstream::{RunningUpstream, UpstreamJob};

pub const OP_GATEWAY: &str = "mcp.gateway";
pub const OP_UPSTREAM: &str = "mcp.upstream";
pub const OP_CALL: &str = "mcp.call";
pub const OP_TOOL_HIDDEN: &str = "mcp.tool_hidden";
pub const OP_PIN: &str = "mcp.pin";

/// Uids kept leased ahead, as the broker's pool does.
const REFILL: usize = 8;

/// Processes a gateway may have (its runtime's threads).
const GATEWAY_PROCESSES: u64 = 64;

/// What a gateway leaves to tear down.
struct Leftovers {
    lease: UidLease,
    dirs: RunDirs,
    jailed: Option<Jailed>,
}

/// A confined gateway, waiting for its agent connection.
pub struct Session {
    daemon: Arc<Daemon>,
    caller: Caller,
    /// Pin mode (root): any server of the policy may be started.
    pinning: bool,
    control: Arc<Control>,
    leftovers: Option<Leftovers>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("caller", &self.caller)
            .finish_non_exhaustive()
    }
}

fn refused(code: ErrorCode, message: impl Into<String>) -> WireError {
    WireError::new(code, message)
}

fn audit(daemon: &Daemon, entry: Entry<'_>) {
    // A report the process sends after the fact; a failure changes nothing.
    let _ = daemon.audit().record(entry);
}

/// Starts a gateway for `caller`: refused when no `[[mcp_server]]` admits
/// the caller, when the vault is sealed, or when the process cannot be
/// started or confined.
pub async fn start(daemon: Arc<Daemon>, caller: Caller) -> Result<Session, WireError> {
    let policy = daemon.policy();
    let who = crate::ops::broker::who(&policy, &caller);
    let Some(servers) = policy.gateway_text(&who) else {
        let why = "no [[mcp_server]] of the policy admits this caller";
        audit(
            &daemon,
            Entry::new(&caller, OP_GATEWAY).outcome(Outcome::Denied, Some(why)),
        );
        return Err(refused(ErrorCode::PermissionDenied, why));
    };
    start_with(daemon, caller, servers, None).await
}

/// The pins of `server`'s current tools (`pins = { … }` TOML), for root:
/// a gateway in pin mode starts the server, hashes what it lists, exits.
pub async fn pin(daemon: Arc<Daemon>, caller: Caller, server: String) -> Result<String, WireError> {
    let denied = |why: &str| {
        audit(
            &daemon,
            Entry::new(&caller, OP_PIN)
                .name(Some(server.as_str()))
                .outcome(Outcome::Denied, Some(why)),
        );
    };
    if !caller.is_root() {
        denied("root only");
        return Err(refused(
            ErrorCode::PermissionDenied,
            "only root pins a server's tools",
        ));
    }
    let policy = daemon.policy();
    let Some(entry) = policy.mcp_server(&server) else {
        denied("no such server");
        return Err(refused(
            ErrorCode::NotFound,
            format!("no [[mcp_server]] named {server:?}"),
        ));
    };
    let mut doc = toml::Table::new();
    doc.insert(
        "mcp_server".into(),
        toml::Value::Array(vec![entry.table.clone()]),
    );
    let text = toml::to_string(&doc)
        .map_err(|e| refused(ErrorCode::Internal, format!("the server's table: {e}")))?;
    let session = start_with(Arc::clone(&daemon), caller, text, Some(server.clone())).await?;
    let answer = tokio::time::timeout(PIN_TIMEOUT, session.serve_pin()).await;
    let result = match answer {
        Ok(Some(Ok(pins))) => Ok(pins),
        Ok(Some(Err(why))) => Err(bounded(&why, 4096)),
        Ok(None) => Err("the gateway ended without an answer".into()),
        Err(_) => Err("the server did not list its tools in time".into()),
    };
    let entry = Entry::new(&caller, OP_PIN).name(Some(server.as_str()));
    match result {
        Ok(pins) => {
            audit(&daemon, entry);
            Ok(pins)
        }
        Err(why) => {
            audit(&daemon, entry.outcome(Outcome::Failed, Some(why.as_str())));
            Err(refused(ErrorCode::Internal, why))
        }
    }
}

/// How long pinning may take, the server's start included.
const PIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

async fn start_with(
    daemon: Arc<Daemon>,
    caller: Caller,
    servers: String,
    pin: Option<String>,
) -> Result<Session, WireError> {
    let (control, theirs) = control::pair(MAX_CONTROL)
        .map_err(|e| refused(ErrorCode::Internal, format!("control socket: {e}")))?;
    let d = Arc::clone(&daemon);
    let launched = tokio::task::spawn_blocking(move || launch(&d, theirs))
        .await
        .map_err(|_| refused(ErrorCode::Internal, "starting the gateway failed"))?;
    let (home, tmp, leftovers) = match launched {
        Ok(l) => l,
        Err((why, leftovers)) => {
            if let Some(l) = leftovers {
                teardown(&daemon, *l).await;
            }
            audit(
                &daemon,
                Entry::new(&caller, OP_GATEWAY).outcome(Outcome::Failed, Some(&why)),
            );
            return Err(refused(ErrorCode::Internal, why));
        }
    };
    let uid = leftovers.lease.uid();
    let mut session = Session {
        daemon: Arc::clone(&daemon),
        caller,
        pinning: pin.is_some(),
        control: Arc::new(control),
        leftovers: Some(leftovers),
    };
    let init = GatewayInit {
        caller: format!("uid {}", caller.uid),
        servers,
        home,
        tmp,
        limits: Limits {
            processes: GATEWAY_PROCESSES,
            ..Limits::default()
        },
        require_full_landlock: false,
        pin,
    };
    if let Err(why) = confine(&session.control, &init).await {
        audit(
            &daemon,
            Entry::new(&caller, OP_GATEWAY).outcome(Outcome::Failed, Some(&why)),
        );
        session.end().await;
        return Err(refused(ErrorCode::Internal, format!("the gateway: {why}")));
    }
    audit(
        &daemon,
        Entry::new(&caller, OP_GATEWAY).detail(json!({"event": "start", "gateway_uid": uid})),
    );
    Ok(session)
}

type Launched = (std::path::PathBuf, std::path::PathBuf, Leftovers);

/// Leases a uid, makes its directories, starts the process.
fn launch(daemon: &Daemon, theirs: OwnedFd) -> Result<Launched, (String, Option<Box<Leftovers>>)> {
    let runs = daemon.runs();
    let lease = runs.pool.acquire().map_err(|e| (e.to_string(), None))?;
    let uid = lease.uid();
    let name = uid.to_string();
    let dirs = match spawn::make_dirs(&runs.settings.runs_dir, &name, uid, uid, false) {
        Ok(d) => d,
        Err(e) => {
            let dirs = RunDirs::named(&runs.settings.runs_dir, &name);
            return Err((
                e.to_string(),
                Some(Box::new(Leftovers {
                    lease,
                    dirs,
                    jailed: None,
                })),
            ));
        }
    };
    let request = SpawnRequest {
        kind: JailKind::Gateway,
        uid,
        gid: uid,
        groups: Vec::new(),
        cwd: dirs.home.clone(),
        args: Vec::new(),
        join_cgroup: false,
        workdir: None,
        control: true,
    };
    match runs.jail.spawn_with_control(request, theirs.as_fd()) {
        Ok(jailed) => Ok((
            dirs.home.clone(),
            dirs.tmp.clone(),
            Leftovers {
                lease,
                dirs,
                jailed: Some(jailed),
            },
        )),
        Err(e) => Err((
            format!("cannot start the gateway: {e}"),
            Some(Box::new(Leftovers {
                lease,
                dirs,
                jailed: None,
            })),
        )),
    }
}

async fn confine(control: &Control, init: &GatewayInit) -> Result<(), String> {
    control
        .send(&ToGateway::Init(init.clone()), None)
        .await
        .map_err(|e| format!("cannot send its init: {e}"))?;
    let mut buf = Vec::new();
    match control.recv::<FromGateway>(&mut buf).await {
        Ok(Some(FromGateway::Confined(Ok(enforcement)))) => {
            tracing::debug!(?enforcement, "gateway confined");
            Ok(())
        }
        Ok(Some(FromGateway::Confined(Err(why)))) => Err(format!(
            "it could not confine itself: {}",
            bounded(&why, 4096)
        )),
        Ok(Some(_)) => Err("it spoke before confining itself".into()),
        Ok(None) => Err("it exited before confining itself".into()),
        Err(e) => Err(format!("it broke the protocol: {e}")),
    }
}

/// Every process of the gateway's uid killed, its directories removed,
/// the uid returned only if nothing of it survives.
async fn teardown(daemon: &Arc<Daemon>, leftovers: Leftovers) {
    let d = Arc::clone(daemon);
    let _ = tokio::task::spawn_blocking(move || {
        let Leftovers {
            lease,
            dirs,
            mut jailed,
        } = leftovers;
        let uid = lease.uid();
        let jail = &d.runs().jail;
        let clean = crate::run::runner::kill_run_uid(jail, uid, jailed.as_mut());
        if let Some(mut j) = jailed {
            jail.wait(&mut j);
        }
        spawn::remove_dirs(&dirs);
        if clean {
            drop(lease);
            d.runs().pool.refill(REFILL);
        } else {
            tracing::error!(
                uid,
                "withholding the uid of a gateway whose processes survive"
            );
            std::mem::forget(lease);
        }
    })
    .await;
}

/// The upstreams of one session by the number the gateway knows them by.
type Upstreams = Arc<std::sync::Mutex<std::collections::HashMap<u64, (String, RunningUpstream)>>>;

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What starting upstream `server` for `caller` needs: its policy entry
/// (one the caller may use), its resolved command, its secrets.
/// `any`: pin mode, where root may start any server.
fn upstream_job(
    daemon: &Daemon,
    caller: &Caller,
    any: bool,
    server: &str,
) -> Result<UpstreamJob, String> {
    let policy = daemon.policy();
    let who = crate::ops::broker::who(&policy, caller);
    let entry = policy
        .mcp_server(server)
        .filter(|e| any || e.allows(&who))
        .ok_or("no such server for this caller")?;
    let (command, args) = entry
        .command()
        .ok_or("a url server is not started: its requests go through the broker (OpenHttp)")?;
    let command = crate::policy::resolve_command(&command.display().to_string(), &[])
        .map_err(|e| e.to_string())?;
    if crate::run::RunHost::is_sealed(daemon) {
        return Err("the vault is sealed".into());
    }
    let mut secrets = Vec::new();
    for s in &entry.server.secrets {
        let scope = match s.scope {
            aivault_gateway::config::Scope::User => crate::store::Scope::User(caller.uid),
            aivault_gateway::config::Scope::System => crate::store::Scope::System,
        };
        let value = crate::run::RunHost::secret_for_run(daemon, scope, &s.secret)
            .map_err(|e| format!("secret {}: {}", s.secret, e.message))?;
        secrets.push((s.secret.clone(), s.env.clone(), value));
    }
    let sb = &entry.server.sandbox;
    Ok(UpstreamJob {
        command,
        args: args.to_vec(),
        read: sb.read.clone(),
        write: sb.write.clone(),
        tcp_connect: sb.tcp_connect.clone(),
        tcp_bind: sb.tcp_bind.clone(),
        memory: sb.memory,
        processes: sb.processes,
        file_size: sb.file_size,
        require_full_landlock: sb.require_full_landlock,
        secrets,
    })
}

/// Starts upstream `server` and answers the gateway's request `req`.
#[allow(clippy::too_many_arguments)]
async fn start_upstream(
    daemon: Arc<Daemon>,
    caller: Caller,
    any: bool,
    control: Arc<Control>,
    upstreams: Upstreams,
    req: u64,
    id: u64,
    server: String,
) {
    let refuse = |why: String| upstream_refused(&daemon, &caller, req, &server, why);
    let d = Arc::clone(&daemon);
    let s = server.clone();
    let job = tokio::task::spawn_blocking(move || upstream_job(&d, &caller, any, &s))
        .await
        .unwrap_or_else(|_| Err("internal error".into()));
    let job = match job {
        Ok(j) => j,
        Err(why) => {
            let _ = control.send(&refuse(why), None).await;
            return;
        }
    };
    // The start is on record before any secret leaves the vault.
    let names: Vec<&str> = job.secrets.iter().map(|(n, _, _)| n.as_str()).collect();
    let decided = daemon.audit().record(
        Entry::new(&caller, OP_UPSTREAM)
            .name(Some(server.as_str()))
            .detail(json!({"event": "start", "command": job.command.path, "secrets": names})),
    );
    if decided.is_err() {
        let _ = control
            .send(&refuse("the audit log cannot be written".into()), None)
            .await;
        return;
    }
    let values: Vec<(String, aivault_proto::SecretBytes)> = job
        .secrets
        .iter()
        .map(|(n, _, v)| (n.clone(), v.clone()))
        .collect();
    match crate::run::upstream::start(daemon.run_host(), job).await {
        Ok((running, fd)) => {
            let answer = ToGateway::UpstreamStarted {
                req,
                upstream: id,
                server: server.clone(),
                secrets: values,
            };
            lock(&upstreams).insert(id, (server, running));
            if control.send(&answer, Some(fd.as_fd())).await.is_err() {
                lock(&upstreams).remove(&id);
            }
        }
        Err(why) => {
            let _ = control.send(&refuse(why), None).await;
        }
    }
}

/// The answer refusing request `req` for `server`, audited as a failed
/// `mcp.upstream` with the reason.
fn upstream_refused(
    daemon: &Daemon,
    caller: &Caller,
    req: u64,
    server: &str,
    why: String,
) -> ToGateway {
    audit(
        daemon,
        Entry::new(caller, OP_UPSTREAM)
            .name(Some(server))
            .outcome(Outcome::Failed, Some(why.as_str())),
    );
    ToGateway::UpstreamRefused {
        req,
        server: server.to_string(),
        reason: why,
    }
}

/// A connection to `caller`'s broker for url server `server`, for one
/// HTTP exchange of the gateway's: the server must be one the caller may
/// use (`any`: pin mode) and a url server; the broker takes the connection
/// as the caller's own, as if the caller had connected to its endpoint,
/// and decides by the capability's policy. Refusals are audited.
async fn open_http(
    daemon: Arc<Daemon>,
    caller: Caller,
    any: bool,
    control: Arc<Control>,
    req: u64,
    server: String,
) {
    let answer = match handed_to_broker(&daemon, caller, any, &server).await {
        Ok(ours) => {
            let msg = ToGateway::HttpOpened {
                req,
                server: server.clone(),
            };
            let _ = control.send(&msg, Some(ours.as_fd())).await;
            return;
        }
        Err(why) => upstream_refused(&daemon, &caller, req, &server, why),
    };
    let _ = control.send(&answer, None).await;
}

async fn handed_to_broker(
    daemon: &Daemon,
    caller: Caller,
    any: bool,
    server: &str,
) -> Result<OwnedFd, String> {
    {
        let policy = daemon.policy();
        let who = crate::ops::broker::who(&policy, &caller);
        let entry = policy
            .mcp_server(server)
            .filter(|e| any || e.allows(&who))
            .ok_or("no such server for this caller")?;
        if entry.command().is_some() {
            return Err("a stdio server is started, not reached over HTTP".into());
        }
    }
    let handover = daemon
        .broker_handover()
        .ok_or("the broker is not running")?
        .clone();
    let _ticket = handover.admit(caller.uid)?;
    let (ours, theirs) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| format!("cannot create a socket pair: {e}"))?;
    match handover.pool().dispatch(caller, theirs).await {
        Ok(()) => Ok(ours),
        // Why a start failed is the daemon's log's, not the gateway's.
        Err(refusal) => Err(match refusal.why {
            crate::broker::pool::Refused::Start(_) => "the broker could not be started".into(),
            other => format!("the broker refused: {other}"),
        }),
    }
}

fn bounded(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Printable ASCII, no control byte, 1 to [`MAX_NAME`] bytes.
fn name_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// The bounds every field a gateway sends must keep.
pub fn check(msg: &FromGateway) -> Result<(), &'static str> {
    match msg {
        FromGateway::Confined(_) => Err("a second confinement report"),
        FromGateway::Pins(Ok(text)) if text.len() > MAX_CONTROL => Err("over-long pins"),
        FromGateway::Pins(_) => Ok(()),
        FromGateway::StartUpstream { server, .. } | FromGateway::OpenHttp { server, .. }
            if !name_ok(server) =>
        {
            Err("a server name out of bounds")
        }
        FromGateway::OpenHttp { .. } => Ok(()),
        FromGateway::StartUpstream { .. } | FromGateway::StopUpstream { .. } => Ok(()),
        FromGateway::Call(c) => {
            let names_ok = c.server.as_deref().is_none_or(name_ok)
                && (c.tool.is_empty() || name_ok(&c.tool))
                && (c.exposed.is_empty() || name_ok(&c.exposed));
            if !names_ok {
                return Err("a call record's names out of bounds");
            }
            let hex = c.argument_digest.len() == 64
                && c.argument_digest.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex {
                return Err("an argument digest that is no SHA-256");
            }
            if c.filter_actions.len() > MAX_ACTIONS || !c.filter_actions.iter().all(|a| name_ok(a))
            {
                return Err("filter actions out of bounds");
            }
            match &c.decision {
                CallDecision::Refused(why) | CallDecision::ResultRefused(why)
                    if why.len() > 4 * MAX_NAME =>
                {
                    Err("an over-long refusal")
                }
                _ => Ok(()),
            }
        }
        FromGateway::ToolHidden(h) => {
            let hash = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
            if !name_ok(&h.server)
                || !name_ok(&h.tool)
                || !matches!(h.reason.as_str(), "changed" | "unpinned")
                || !hash(&h.current)
                || !h.pinned.as_deref().is_none_or(hash)
            {
                return Err("a hidden-tool report out of bounds");
            }
            Ok(())
        }
    }
}

fn decision_text(d: &CallDecision) -> (&'static str, Option<&str>) {
    match d {
        CallDecision::Allowed => ("allowed", None),
        CallDecision::UnknownTool => ("unknown_tool", None),
        CallDecision::Refused(why) => ("refused", Some(why)),
        CallDecision::ResultRefused(why) => ("result_refused", Some(why)),
        CallDecision::UpstreamError => ("upstream_error", None),
        CallDecision::UpstreamUnavailable => ("upstream_unavailable", None),
        CallDecision::Cancelled => ("cancelled", None),
    }
}

fn audit_call(daemon: &Daemon, caller: &Caller, c: &CallAudit) {
    let (decision, why) = decision_text(&c.decision);
    let detail = json!({
        "server": c.server,
        "tool": c.tool,
        "exposed": c.exposed,
        "argument_digest": c.argument_digest,
        "decision": decision,
        "filter_actions": c.filter_actions,
        "duration_us": c.duration_us,
        "request_bytes": c.request_bytes,
        "response_bytes": c.response_bytes,
    });
    let name = match &c.server {
        Some(s) => format!("{s}/{}", c.tool),
        None => c.exposed.clone(),
    };
    let entry = Entry::new(caller, OP_CALL)
        .name(Some(name.as_str()))
        .detail(detail);
    let entry = match &c.decision {
        CallDecision::Allowed => entry,
        CallDecision::UnknownTool | CallDecision::Refused(_) | CallDecision::ResultRefused(_) => {
            entry.outcome(Outcome::Denied, why.or(Some(decision)))
        }
        _ => entry.outcome(Outcome::Failed, Some(decision)),
    };
    audit(daemon, entry);
}

fn audit_hidden(daemon: &Daemon, caller: &Caller, h: &ToolHidden) {
    let name = format!("{}/{}", h.server, h.tool);
    let detail = json!({
        "server": h.server,
        "tool": h.tool,
        "reason": h.reason,
        "pinned": h.pinned,
        "current": h.current,
    });
    audit(
        daemon,
        Entry::new(caller, OP_TOOL_HIDDEN)
            .name(Some(name.as_str()))
            .detail(detail),
    );
}

impl Session {
    /// Hands `agent` (the caller's connection) to the gateway and serves
    /// its control channel until it ends; then tears it down.
    pub async fn serve(mut self, agent: OwnedFd) {
        let handed = self
            .control
            .send(&ToGateway::Agent, Some(agent.as_fd()))
            .await;
        drop(agent);
        if let Err(e) = handed {
            tracing::warn!(error = %e, "cannot hand the agent's connection to its gateway");
        } else {
            self.control_loop().await;
        }
        audit(
            &self.daemon,
            Entry::new(&self.caller, OP_GATEWAY).detail(json!({"event": "end"})),
        );
        self.end().await;
    }

    /// Pin mode: serves the control channel until the gateway's answer.
    async fn serve_pin(mut self) -> Option<Result<String, String>> {
        let answer = self.control_loop().await;
        self.end().await;
        answer
    }

    /// Serves the control channel until the gateway ends (or answers in
    /// pin mode: that answer).
    async fn control_loop(&self) -> Option<Result<String, String>> {
        let upstreams: Upstreams = Arc::default();
        let next = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let mut policy_changed = self.daemon.gateway_policy_changes();
        let mut buf = Vec::new();
        loop {
            let received = tokio::select! {
                r = self.control.recv::<FromGateway>(&mut buf) => r,
                _ = policy_changed.changed() => {
                    tracing::info!("the policy changed: ending a gateway session started under the old one");
                    return None;
                }
            };
            let msg = match received {
                Ok(Some(m)) => m,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "a gateway broke its control protocol; ending it");
                    return None;
                }
            };
            if let Err(why) = check(&msg) {
                tracing::warn!(why, "a gateway sent a message out of bounds; ending it");
                return None;
            }
            match msg {
                FromGateway::StartUpstream { req, server } => {
                    let daemon = Arc::clone(&self.daemon);
                    let control = Arc::clone(&self.control);
                    let upstreams = Arc::clone(&upstreams);
                    let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let caller = self.caller;
                    let any = self.pinning;
                    tokio::spawn(async move {
                        start_upstream(daemon, caller, any, control, upstreams, req, id, server)
                            .await;
                    });
                }
                FromGateway::OpenHttp { req, server } => {
                    let daemon = Arc::clone(&self.daemon);
                    let control = Arc::clone(&self.control);
                    let caller = self.caller;
                    let any = self.pinning;
                    tokio::spawn(async move {
                        open_http(daemon, caller, any, control, req, server).await;
                    });
                }
                FromGateway::StopUpstream { upstream } => {
                    let stopped = lock(&upstreams).remove(&upstream);
                    if let Some((server, running)) = stopped {
                        audit(
                            &self.daemon,
                            Entry::new(&self.caller, OP_UPSTREAM)
                                .name(Some(server.as_str()))
                                .detail(json!({"event": "stop", "upstream_uid": running.uid})),
                        );
                    }
                }
                FromGateway::Call(c) => audit_call(&self.daemon, &self.caller, &c),
                FromGateway::ToolHidden(h) => audit_hidden(&self.daemon, &self.caller, &h),
                FromGateway::Pins(answer) if self.pinning => return Some(answer),
                FromGateway::Pins(_) | FromGateway::Confined(_) => return None,
            }
        }
    }

    /// Tears down a gateway whose agent went away before it was handed over.
    pub async fn serve_nothing(mut self) {
        self.end().await;
    }

    /// Tears the gateway down (idempotent).
    async fn end(&mut self) {
        if let Some(l) = self.leftovers.take() {
            teardown(&self.daemon, l).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(server: Option<&str>, tool: &str, digest: &str, actions: &[&str]) -> FromGateway {
        FromGateway::Call(CallAudit {
            server: server.map(str::to_owned),
            tool: tool.into(),
            exposed: format!("x__{tool}"),
            argument_digest: digest.into(),
            decision: CallDecision::Allowed,
            filter_actions: actions.iter().map(|a| (*a).to_owned()).collect(),
            duration_us: 1,
            request_bytes: 1,
            response_bytes: 1,
        })
    }

    fn hidden(tool: &str, reason: &str, current: &str) -> FromGateway {
        FromGateway::ToolHidden(ToolHidden {
            server: "fs".into(),
            tool: tool.into(),
            reason: reason.into(),
            pinned: None,
            current: current.into(),
        })
    }

    #[test]
    fn what_a_gateway_reports_is_checked_before_it_is_audited() {
        let digest = "a".repeat(64);
        assert!(check(&call(Some("fs"), "read", &digest, &["vault:T redact 1"])).is_ok());
        assert!(check(&hidden("read", "changed", &digest)).is_ok());
        assert!(check(&FromGateway::StartUpstream {
            req: 1,
            server: "fs".into()
        })
        .is_ok());
        assert!(check(&FromGateway::OpenHttp {
            req: 2,
            server: "web".into()
        })
        .is_ok());
        let too_many: Vec<&str> = vec!["a"; MAX_ACTIONS + 1];
        for bad in [
            call(Some("fs"), "read", "not-a-digest", &[]),
            call(Some("fs"), "read", &"g".repeat(64), &[]),
            call(Some("a\nb"), "read", &digest, &[]),
            call(Some("fs"), &"t".repeat(MAX_NAME + 1), &digest, &[]),
            call(Some("fs"), "read", &digest, &too_many),
            call(Some("fs"), "read", &digest, &["a\u{1b}[2J"]),
            hidden("read", "because", &digest),
            hidden("read", "changed", "short"),
            hidden("", "changed", &digest),
            FromGateway::StartUpstream {
                req: 1,
                server: String::new(),
            },
            FromGateway::OpenHttp {
                req: 1,
                server: "a\u{7f}".into(),
            },
            FromGateway::Confined(Err("again".into())),
        ] {
            assert!(check(&bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn messages_cross_the_control_pair_and_descriptors_from_the_process_are_refused() {
        let (control, theirs) = control::pair(MAX_CONTROL).unwrap();
        let (conn, _other) = std::os::unix::net::UnixStream::pair().unwrap();
        control
            .send(&ToGateway::Agent, Some(conn.as_fd()))
            .await
            .unwrap();
        let mut buf = vec![0u8; MAX_CONTROL];
        let (n, fds) = crate::sys::recv_with_fds(&theirs, &mut buf).unwrap();
        assert_eq!(
            postcard::from_bytes::<ToGateway>(&buf[..n]).unwrap(),
            ToGateway::Agent
        );
        assert_eq!(fds.len(), 1);
        let stop = FromGateway::StopUpstream { upstream: 3 };
        crate::jail::wire::send(theirs.as_fd(), &stop, &[]).unwrap();
        let mut rbuf = Vec::new();
        assert_eq!(
            control.recv::<FromGateway>(&mut rbuf).await.unwrap(),
            Some(stop.clone())
        );
        crate::jail::wire::send(theirs.as_fd(), &stop, &[conn.as_fd()]).unwrap();
        assert!(matches!(
            control.recv::<FromGateway>(&mut rbuf).await,
            Err(control::ControlError::Descriptors)
        ));
        nix::unistd::write(&theirs, &[0xff, 0xff, 0xff]).unwrap();
        assert!(matches!(
            control.recv::<FromGateway>(&mut rbuf).await,
            Err(control::ControlError::Malformed)
        ));
        drop(theirs);
        assert_eq!(control.recv::<FromGateway>(&mut rbuf).await.unwrap(), None);
    }
}
