//! `aivault-gateway`: the MCP gateway of one agent connection, a jailed
//! process (the jail host's `Gateway` kind) under a fresh uid of its own.
//!
//! Descriptor 3 is its control socket to the daemon
//! (`aivault_proto::gateway`). It takes [`ToGateway::Init`], compiles the
//! `[[mcp_server]]` text it was given, confines itself (the runner's
//! confinement with only its home and tmp writable and no TCP port, then a
//! seccomp filter refusing `execve`/`execveat`), answers
//! [`FromGateway::Confined`], and serves MCP on the agent connection it is
//! handed ([`ToGateway::Agent`]) with the policy of what passes. Upstreams
//! are started by the daemon on request ([`FromGateway::StartUpstream`]);
//! their stdio arrives as a socket. A url server's requests each go over a
//! connection the daemon hands to the caller's broker
//! ([`FromGateway::OpenHttp`]); the gateway itself has no TCP. Every call and every tool hidden for
//! its definition is reported back for the audit, without values.
//!
//! It exits when the agent's stream ends, on [`ToGateway::Shutdown`], or
//! when the daemon closes the control socket.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aivault_gateway::config::{parse_servers, ServerPolicy, Transport};
use aivault_gateway::digest::argument_digest;
use aivault_gateway::hooks::{Audit, CallRecord, Decision};
use aivault_gateway::http::{self, Connector, HttpTarget, Stream as HttpStream};
use aivault_gateway::pin::PinEvent;
use aivault_gateway::policy::GatewayPolicy;
use aivault_gateway::pool::{BoxFuture, Spawned, Spawner};
use aivault_gateway::session::{self, Hooks, SessionConfig};
use aivault_proto::gateway::{
    CallAudit, CallDecision, FromGateway, GatewayInit, ToGateway, ToolHidden, CONTROL_FD,
    MAX_ACTIONS, MAX_CONTROL, MAX_NAME,
};
use aivault_proto::{Enforcement, Isolation, SandboxSpec, SecretBytes};
use tokio::sync::oneshot;

/// The gateway's end of the control channel; sends are serialised.
struct Control {
    fd: OwnedFd,
    sending: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Control {
    fn send(&self, msg: &FromGateway) -> io::Result<()> {
        use nix::sys::socket::{send, MsgFlags};
        let body = postcard::to_stdvec(msg).map_err(io::Error::other)?;
        if body.len() > MAX_CONTROL {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a control message over the limit",
            ));
        }
        let _one = lock(&self.sending);
        loop {
            match send(self.fd.as_raw_fd(), &body, MsgFlags::MSG_NOSIGNAL) {
                Ok(n) if n == body.len() => return Ok(()),
                Ok(_) => return Err(io::Error::other("a short datagram write")),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// One message and its descriptors; `None` once the daemon closed.
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<(ToGateway, Vec<OwnedFd>)>> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        let mut space = nix::cmsg_space!([RawFd; 2]);
        let mut iov = [io::IoSliceMut::new(buf)];
        let msg = loop {
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other.map_err(io::Error::from)?,
            }
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                fds.extend(aivault_runner::sys::adopt_received_fds(raw));
            }
        }
        if msg
            .flags
            .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a control message or its descriptors did not fit",
            ));
        }
        let n = msg.bytes;
        if n == 0 {
            return Ok(None);
        }
        let body = iov[0].get(..n).unwrap_or_default();
        let decoded = postcard::from_bytes(body)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Some((decoded, fds)))
    }
}

/// The daemon's answer to a request of the gateway's.
enum Answer {
    /// `UpstreamStarted`: its number, its secrets, its stdio.
    Started(u64, Vec<(String, SecretBytes)>, OwnedFd),
    /// `HttpOpened`: a connection to the caller's broker.
    Opened(OwnedFd),
    Refused(String),
}
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Answer>>>>;

fn main() -> ExitCode {
    let Some(fd) = aivault_runner::sys::adopt_inherited_fd(CONTROL_FD) else {
        eprintln!("aivault-gateway: no control socket at descriptor {CONTROL_FD} (started by aivaultd only)");
        return ExitCode::from(2);
    };
    let control = Arc::new(Control {
        fd,
        sending: Mutex::new(()),
    });
    match run(&control) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aivault-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(control: &Arc<Control>) -> Result<(), String> {
    let mut buf = vec![0u8; MAX_CONTROL + 1];
    let init = match control.recv(&mut buf) {
        Ok(Some((ToGateway::Init(init), fds))) if fds.is_empty() => init,
        Ok(None) => return Ok(()),
        Ok(Some(_)) => return Err("the first control message is not a bare Init".into()),
        Err(e) => return Err(format!("reading Init: {e}")),
    };
    let confined = parse_servers(&init.servers)
        .map_err(|e| format!("the servers do not compile: {e}"))
        .and_then(|servers| confine(&init, control).map(|enf| (servers, enf)));
    let servers = match confined {
        Ok((servers, enforcement)) => {
            send(control, &FromGateway::Confined(Ok(enforcement)))?;
            servers
        }
        Err(e) => {
            let _ = control.send(&FromGateway::Confined(Err(e.clone())));
            return Err(e);
        }
    };
    if let Some(server) = init.pin.clone() {
        return pin_mode(control, servers, server, buf);
    }
    let agent = match control.recv(&mut buf) {
        Ok(Some((ToGateway::Agent, mut fds))) if fds.len() == 1 => fds.pop(),
        Ok(Some((ToGateway::Shutdown, _))) | Ok(None) => return Ok(()),
        Ok(Some(_)) => return Err("expected the agent connection".into()),
        Err(e) => return Err(format!("reading the agent connection: {e}")),
    };
    let agent = agent.ok_or("no agent connection")?;
    let pending: Pending = Arc::default();
    {
        let control = Arc::clone(control);
        let pending = Arc::clone(&pending);
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || read_control(&control, &pending, buf))
            .map_err(|e| format!("starting the control reader: {e}"))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(serve(
        Arc::clone(control),
        init.caller,
        servers,
        agent,
        pending,
    ))
}

/// Pin mode: start the one server, hash what it lists, answer, exit.
fn pin_mode(
    control: &Arc<Control>,
    servers: Vec<ServerPolicy>,
    server: String,
    buf: Vec<u8>,
) -> Result<(), String> {
    let pending: Pending = Arc::default();
    {
        let control = Arc::clone(control);
        let pending = Arc::clone(&pending);
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || read_control(&control, &pending, buf))
            .map_err(|e| format!("starting the control reader: {e}"))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let policy = Arc::new(GatewayPolicy::new(
        servers,
        Arc::new(|_: &str, _: &PinEvent| {}),
    ));
    let spawner = ControlSpawner {
        control: Arc::clone(control),
        policy: Arc::clone(&policy),
        pending,
        next: Arc::new(AtomicU64::new(1)),
    };
    let answer = runtime.block_on(async {
        let max_message = policy
            .server(&server)
            .and_then(|s| usize::try_from(s.limits.max_message).ok())
            .ok_or_else(|| format!("no server {server:?}"))?;
        let spawned = spawner.spawn(&server).await?;
        let cfg = aivault_gateway::upstream::UpstreamConfig {
            name: server.clone(),
            max_message,
        };
        let upstream =
            aivault_gateway::upstream::Upstream::connect(spawned.reader, spawned.writer, cfg)
                .await
                .map_err(|e| e.to_string())?;
        let tools = upstream.list_tools().await.map_err(|e| e.to_string())?;
        drop(spawned.process);
        let pins = aivault_gateway::pin::pins_for(&tools);
        Ok::<String, String>(aivault_gateway::pin::pins_toml(&pins))
    });
    send(control, &FromGateway::Pins(answer))
}

fn send(control: &Control, msg: &FromGateway) -> Result<(), String> {
    control
        .send(msg)
        .map_err(|e| format!("the control socket failed: {e}"))
}

/// The runner's confinement with nothing but the gateway's own
/// directories writable and no TCP port, then no `exec` at all.
fn confine(init: &GatewayInit, control: &Control) -> Result<Enforcement, String> {
    let spec = SandboxSpec {
        home: init.home.clone(),
        tmp: init.tmp.clone(),
        read: Vec::new(),
        write: Vec::new(),
        exec: Vec::new(),
        cwd: None,
        cwd_writable: false,
        tcp_connect: Vec::new(),
        tcp_bind: Vec::new(),
        limits: init.limits,
        require_full_landlock: init.require_full_landlock,
        isolation: Isolation::DynamicUid,
    };
    let enforcement = aivault_runner::confine_keeping(&spec, &[control.fd.as_fd()])
        .map_err(|e| format!("confinement failed: {e}"))?;
    deny_exec().map_err(|e| format!("the exec filter failed: {e}"))?;
    Ok(enforcement)
}

fn deny_exec() -> Result<(), String> {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
    let rules = [
        (libc::SYS_execve, Vec::new()),
        (libc::SYS_execveat, Vec::new()),
    ]
    .into_iter()
    .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    let program = BpfProgram::try_from(filter).map_err(|e| e.to_string())?;
    seccompiler::apply_filter(&program).map_err(|e| e.to_string())
}

/// Answers to StartUpstream go to their waiters; Shutdown or the daemon's
/// close end the process (the daemon kills its uid in any case).
fn read_control(control: &Control, pending: &Pending, mut buf: Vec<u8>) {
    loop {
        match control.recv(&mut buf) {
            Ok(Some((
                ToGateway::UpstreamStarted {
                    req,
                    upstream,
                    secrets,
                    ..
                },
                mut fds,
            ))) if fds.len() == 1 => {
                let Some(fd) = fds.pop() else { continue };
                if let Some(tx) = lock(pending).remove(&req) {
                    let _ = tx.send(Answer::Started(upstream, secrets, fd));
                }
            }
            Ok(Some((ToGateway::HttpOpened { req, .. }, mut fds))) if fds.len() == 1 => {
                let Some(fd) = fds.pop() else { continue };
                if let Some(tx) = lock(pending).remove(&req) {
                    let _ = tx.send(Answer::Opened(fd));
                }
            }
            Ok(Some((ToGateway::UpstreamRefused { req, reason, .. }, _))) => {
                if let Some(tx) = lock(pending).remove(&req) {
                    let _ = tx.send(Answer::Refused(reason));
                }
            }
            Ok(Some((ToGateway::Shutdown, _))) | Ok(None) => std::process::exit(0),
            Ok(Some(_)) => {
                eprintln!("aivault-gateway: an unexpected control message");
                std::process::exit(1);
            }
            Err(e) => {
                eprintln!("aivault-gateway: the control socket failed: {e}");
                std::process::exit(1);
            }
        }
    }
}

fn nonblocking_stream(fd: OwnedFd) -> io::Result<tokio::net::UnixStream> {
    let std = std::os::unix::net::UnixStream::from(fd);
    std.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(std)
}

async fn serve(
    control: Arc<Control>,
    caller: String,
    servers: Vec<ServerPolicy>,
    agent: OwnedFd,
    pending: Pending,
) -> Result<(), String> {
    let agent = nonblocking_stream(agent).map_err(|e| format!("the agent connection: {e}"))?;
    let max_message = servers
        .iter()
        .map(|s| s.limits.max_message)
        .max()
        .and_then(|m| usize::try_from(m).ok());
    let idle = servers.iter().map(|s| s.limits.idle_timeout).min();
    let hidden = {
        let control = Arc::clone(&control);
        Arc::new(move |server: &str, event: &PinEvent| {
            let _ = control.send(&FromGateway::ToolHidden(tool_hidden(server, event)));
        })
    };
    let policy = Arc::new(GatewayPolicy::new(servers, hidden));
    let mut cfg = SessionConfig::new(caller, policy.server_names());
    if let Some(m) = max_message {
        cfg.max_message = m;
        cfg.pool.max_message = m;
    }
    if idle.is_some() {
        cfg.pool.idle_timeout = idle;
    }
    let spawner = Arc::new(ControlSpawner {
        control: Arc::clone(&control),
        policy: Arc::clone(&policy),
        pending,
        next: Arc::new(AtomicU64::new(1)),
    });
    let hooks = Hooks {
        policy,
        audit: Arc::new(ControlAudit(control)),
        digest: Arc::new(|v| argument_digest(Some(v))),
    };
    let (reader, writer) = agent.into_split();
    session::serve(reader, writer, cfg, spawner, hooks)
        .await
        .map_err(|e| e.to_string())
}

fn tool_hidden(server: &str, event: &PinEvent) -> ToolHidden {
    match event {
        PinEvent::Changed {
            tool,
            pinned,
            current,
        } => ToolHidden {
            server: server.into(),
            tool: cut(tool),
            reason: "changed".into(),
            pinned: Some(pinned.clone()),
            current: current.clone(),
        },
        PinEvent::Unpinned { tool, current } => ToolHidden {
            server: server.into(),
            tool: cut(tool),
            reason: "unpinned".into(),
            pinned: None,
            current: current.clone(),
        },
    }
}

/// At most [`MAX_NAME`] characters, as the daemon takes them.
fn cut(s: &str) -> String {
    s.chars().take(MAX_NAME).collect()
}

/// Starts upstreams by asking the daemon; the answer's socket is the
/// upstream's stdio, its secrets go to the redactor. A url server is not
/// started: it is bridged ([`aivault_gateway::http`]) over connections the
/// daemon hands to the caller's broker, one per request.
struct ControlSpawner {
    control: Arc<Control>,
    policy: Arc<GatewayPolicy>,
    pending: Pending,
    next: Arc<AtomicU64>,
}

/// Asks the daemon for a connection to the caller's broker, for url server
/// `server`: the daemon hands the other end over as the caller's own.
struct ControlConnector {
    control: Arc<Control>,
    pending: Pending,
    next: Arc<AtomicU64>,
    server: String,
}

/// Sends `msg` (built for request number `req`) and waits for its answer.
async fn ask(
    control: &Control,
    pending: &Pending,
    req: u64,
    msg: &FromGateway,
) -> Result<Answer, String> {
    let (tx, rx) = oneshot::channel();
    lock(pending).insert(req, tx);
    if let Err(e) = control.send(msg) {
        lock(pending).remove(&req);
        return Err(format!("asking the daemon: {e}"));
    }
    rx.await
        .map_err(|_| "the daemon did not answer".to_string())
}

impl Connector for ControlConnector {
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn HttpStream>, String>> {
        Box::pin(async move {
            let req = self.next.fetch_add(1, Ordering::Relaxed);
            let msg = FromGateway::OpenHttp {
                req,
                server: self.server.clone(),
            };
            match ask(&self.control, &self.pending, req, &msg).await? {
                Answer::Opened(fd) => {
                    let stream = nonblocking_stream(fd)
                        .map_err(|e| format!("the broker connection: {e}"))?;
                    Ok(Box::new(stream) as Box<dyn HttpStream>)
                }
                Answer::Refused(why) => Err(why),
                Answer::Started(..) => Err("the daemon answered another request".into()),
            }
        })
    }
}

/// Dropped when the session is done with an upstream: the daemon stops it.
struct UpstreamGuard {
    control: Arc<Control>,
    upstream: u64,
}

impl Drop for UpstreamGuard {
    fn drop(&mut self) {
        let _ = self.control.send(&FromGateway::StopUpstream {
            upstream: self.upstream,
        });
    }
}

impl Spawner for ControlSpawner {
    fn spawn<'a>(&'a self, server: &'a str) -> BoxFuture<'a, Result<Spawned, String>> {
        Box::pin(async move {
            let policy = self
                .policy
                .server(server)
                .ok_or_else(|| format!("no server {server:?}"))?;
            if let Transport::Http {
                capability,
                host,
                path,
                ..
            } = &policy.transport
            {
                let max = usize::try_from(policy.limits.max_message).unwrap_or(usize::MAX);
                let target = HttpTarget::new(server, capability, host, path, max);
                let connector = Arc::new(ControlConnector {
                    control: Arc::clone(&self.control),
                    pending: Arc::clone(&self.pending),
                    next: Arc::clone(&self.next),
                    server: server.to_string(),
                });
                // Nothing of the credential reaches the gateway: the broker
                // holds it and redacts it; the gateway's redactor has none.
                self.policy.set_secrets(server, &[])?;
                return Ok(http::bridge(connector, target));
            }
            let req = self.next.fetch_add(1, Ordering::Relaxed);
            let msg = FromGateway::StartUpstream {
                req,
                server: server.to_string(),
            };
            let (upstream, secrets, fd) = match ask(&self.control, &self.pending, req, &msg).await?
            {
                Answer::Started(upstream, secrets, fd) => (upstream, secrets, fd),
                Answer::Refused(why) => return Err(why),
                Answer::Opened(_) => return Err("the daemon answered another request".into()),
            };
            let guard = UpstreamGuard {
                control: Arc::clone(&self.control),
                upstream,
            };
            let values: Vec<(String, Vec<u8>)> = secrets
                .iter()
                .map(|(name, v)| (name.clone(), v.as_bytes().to_vec()))
                .collect();
            self.policy.set_secrets(server, &values)?;
            let stream =
                nonblocking_stream(fd).map_err(|e| format!("the upstream's socket: {e}"))?;
            let (reader, writer) = stream.into_split();
            Ok(Spawned {
                reader: Box::new(reader),
                writer: Box::new(writer),
                process: Box::new(guard),
            })
        })
    }
}

/// Every call's record goes to the daemon's audit.
struct ControlAudit(Arc<Control>);

impl Audit for ControlAudit {
    fn record(&self, r: CallRecord) {
        let decision = match r.decision {
            Decision::Allowed => CallDecision::Allowed,
            Decision::UnknownTool => CallDecision::UnknownTool,
            Decision::Refused(why) => CallDecision::Refused(cut(&why)),
            Decision::ResultRefused(why) => CallDecision::ResultRefused(cut(&why)),
            Decision::UpstreamError => CallDecision::UpstreamError,
            Decision::UpstreamUnavailable => CallDecision::UpstreamUnavailable,
            Decision::Cancelled => CallDecision::Cancelled,
        };
        let record = CallAudit {
            server: r.server,
            tool: cut(&r.tool),
            exposed: cut(&r.exposed),
            argument_digest: r.argument_digest,
            decision,
            filter_actions: r
                .filter_actions
                .iter()
                .take(MAX_ACTIONS)
                .map(|a| cut(a))
                .collect(),
            duration_us: u64::try_from(r.duration.as_micros()).unwrap_or(u64::MAX),
            request_bytes: r.request_bytes as u64,
            response_bytes: r.response_bytes as u64,
        };
        let _ = self.0.send(&FromGateway::Call(record));
    }
}
