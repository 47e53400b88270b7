//! The Unix socket: who is calling, how much they may ask, and framing.
//!
//! Each accepted connection is identified once, from `SO_PEERCRED` (and a
//! pidfd where the kernel offers one). Limits: connections overall and per
//! uid, requests in flight per uid, a handshake deadline and an idle timeout,
//! and a frame size checked before allocation. A uid that floods the socket
//! exhausts only its own allowance, and all other uids together cannot take
//! the connections reserved for root (`root_reserved_connections`).

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use aivault_proto::{
    decode, encode, ErrorCode, Hello, HelloReply, Reply, Request, Response, WireError, HELLO_MAGIC,
    MAX_FRAME, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

use crate::admission::{Admission, Refusal, Ticket};
use crate::ops::{Caller, Daemon};
use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot prepare socket directory {path}: {source}")]
    SocketDir {
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error(
        "socket {socket}: directory {parent} not found; create it first (aivaultd creates only {dir})"
    )]
    NoParent {
        socket: std::path::PathBuf,
        parent: std::path::PathBuf,
        dir: std::path::PathBuf,
    },
    #[error("socket directory: {0}")]
    InsecureDir(#[from] crate::secure_fs::SecureFsError),
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: std::path::PathBuf },
    #[error("cannot bind {path}: {source}")]
    Bind {
        path: std::path::PathBuf,
        source: io::Error,
    },
}

/// Open connections, each uid's sharing one in-flight request allowance.
type Connections = Admission<Arc<Semaphore>>;

/// A connection's place; given back when the connection ends, however it
/// ends.
struct ConnSlot {
    _ticket: Ticket<Arc<Semaphore>>,
    daemon: Arc<Daemon>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.daemon.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The directory of `socket` (which the configuration makes absolute).
fn socket_dir(socket: &Path) -> &Path {
    socket.parent().unwrap_or(Path::new("/"))
}

/// Checks, changing nothing, what [`prepare_socket_dir`] needs: the
/// socket's directory exists and only root can write it (anyone else could
/// swap the sockets in it), or it is missing and its parent exists.
/// Returns whether it exists.
pub fn check_socket_dir(socket: &Path) -> Result<bool, ServerError> {
    let dir = socket_dir(socket);
    if std::fs::symlink_metadata(dir).is_ok() {
        crate::secure_fs::check_secure_dir(dir)?;
        return Ok(true);
    }
    let parent = socket_dir(dir);
    if !parent.is_dir() {
        return Err(ServerError::NoParent {
            socket: socket.into(),
            parent: parent.into(),
            dir: dir.into(),
        });
    }
    crate::secure_fs::check_trusted_ancestors(dir)?;
    Ok(false)
}

/// Makes the socket's directory ready: creates it, root's and 0755, if it
/// is missing — only that last directory, never its parents (under systemd
/// `RuntimeDirectory=` has created it already) — and refuses one that
/// anyone but root could write.
pub fn prepare_socket_dir(socket: &Path) -> Result<(), ServerError> {
    if check_socket_dir(socket)? {
        return Ok(());
    }
    let dir = socket_dir(socket);
    let made = |source| ServerError::SocketDir {
        path: dir.into(),
        source,
    };
    match std::fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(made(e)),
    }
    // Exactly 0755 whatever the umask.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(made)?;
    crate::secure_fs::check_secure_dir(dir)?;
    Ok(())
}

/// Binds a listening socket in its prepared directory
/// ([`prepare_socket_dir`]), mode 0666 (any local user may connect; what
/// they may do is decided per request).
pub fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(ServerError::NotASocket { path: path.into() });
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|source| ServerError::Bind {
        path: path.into(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(|source| {
        ServerError::Bind {
            path: path.into(),
            source,
        }
    })?;
    Ok(listener)
}

/// Accepts connections until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    daemon: Arc<Daemon>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let limits = &daemon.config().limits;
    let table: Arc<Connections> = Admission::with_root_reserve(
        limits.max_connections,
        limits.max_connections_per_uid,
        limits.root_reserved_connections,
    );
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => admit(stream, &daemon, &table),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // Out of descriptors or similar: back off briefly instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

fn admit(stream: UnixStream, daemon: &Arc<Daemon>, table: &Arc<Connections>) {
    let peer = match sys::peer_identity(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read peer credentials; dropping connection");
            return;
        }
    };
    let caller = Caller {
        uid: peer.uid,
        gid: peer.gid,
        pid: peer.pid,
    };
    let limits = &daemon.config().limits;
    // Runs are contained: a process of a run uid must not get a scope, a
    // connection allowance or nested runs of its own.
    if daemon.runs().pool.in_range(caller.uid) || daemon.runs().pool.in_range(caller.gid) {
        tracing::warn!(
            uid = caller.uid,
            pid = caller.pid,
            "connection from a run uid refused"
        );
        tokio::spawn(
            async move { refuse(stream, "processes of a run may not use aivaultd").await },
        );
        return;
    }
    let max_inflight = limits.max_inflight_per_uid.max(1);
    let admitted = table
        .try_admit_with(caller.uid, || Arc::new(Semaphore::new(max_inflight)))
        .map_err(|r| match r {
            Refusal::Total => "the daemon has too many connections",
            Refusal::PerUid => "too many connections from this user",
        });
    let daemon = daemon.clone();
    match admitted {
        Err(why) => {
            tracing::debug!(uid = caller.uid, why, "connection refused");
            tokio::spawn(async move { refuse(stream, why).await });
        }
        Ok(ticket) => {
            daemon.connections.fetch_add(1, Ordering::Relaxed);
            let inflight = ticket.shared().clone();
            let slot = ConnSlot {
                _ticket: ticket,
                daemon: daemon.clone(),
            };
            tokio::spawn(async move {
                let _slot = slot;
                // Held for the connection's life so the pid it names stays this process.
                let _pidfd = peer.pidfd;
                if let Err(e) = connection(stream, daemon, caller, inflight).await {
                    tracing::debug!(uid = caller.uid, pid = caller.pid, error = %e, "connection ended");
                }
            });
        }
    }
}

/// Tells an over-limit client why, then closes. Bounded by a short timeout.
async fn refuse(mut stream: UnixStream, why: &str) {
    let reply = HelloReply {
        version: PROTOCOL_VERSION,
        server: server_name(),
        result: Err(WireError::new(ErrorCode::Busy, why)),
    };
    if let Ok(body) = encode(&reply) {
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            write(&mut stream, &body),
        )
        .await;
    }
}

fn server_name() -> String {
    format!("aivaultd {}", env!("CARGO_PKG_VERSION"))
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("{0}")]
    Frame(#[from] aivault_proto::FrameError),
    #[error("timed out")]
    Timeout,
    #[error("handshake refused: {0}")]
    Handshake(String),
}

async fn read(stream: &mut UnixStream) -> Result<Vec<u8>, ConnError> {
    Ok(crate::frames::read(stream).await?)
}

async fn write(stream: &mut UnixStream, body: &[u8]) -> Result<(), ConnError> {
    Ok(crate::frames::write(stream, body).await?)
}

async fn send<T: serde::Serialize>(stream: &mut UnixStream, msg: &T) -> Result<(), ConnError> {
    Ok(crate::frames::send(stream, msg).await?)
}

async fn connection(
    mut stream: UnixStream,
    daemon: Arc<Daemon>,
    caller: Caller,
    inflight: Arc<Semaphore>,
) -> Result<(), ConnError> {
    let limits = daemon.config().limits.clone();
    let hello = tokio::time::timeout(limits.handshake_timeout(), read(&mut stream))
        .await
        .map_err(|_| ConnError::Timeout)??;
    let hello: Hello = match decode(&hello) {
        Ok(h) => h,
        Err(_) => {
            let e = WireError::new(ErrorCode::BadRequest, "expected a handshake");
            send(&mut stream, &hello_reply(Err(e))).await?;
            return Err(ConnError::Handshake("malformed hello".into()));
        }
    };
    if hello.magic != HELLO_MAGIC
        || !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.version)
    {
        let e = WireError::new(
            ErrorCode::VersionMismatch,
            format!(
                "this daemon speaks protocol versions {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
            ),
        );
        send(&mut stream, &hello_reply(Err(e))).await?;
        return Err(ConnError::Handshake("version mismatch".into()));
    }
    send(&mut stream, &hello_reply(Ok(()))).await?;

    loop {
        let body = match tokio::time::timeout(limits.idle_timeout(), read(&mut stream)).await {
            Err(_) => return Err(ConnError::Timeout),
            Ok(Err(ConnError::Frame(aivault_proto::FrameError::Closed))) => return Ok(()),
            Ok(Err(ConnError::Frame(e @ aivault_proto::FrameError::TooLarge(_))))
            | Ok(Err(ConnError::Frame(e @ aivault_proto::FrameError::Empty))) => {
                // The stream is no longer in sync: say why, then close.
                let resp = Response {
                    id: 0,
                    result: Err(WireError::new(ErrorCode::BadRequest, e.to_string())),
                };
                let _ = send(&mut stream, &resp).await;
                return Err(e.into());
            }
            Ok(Err(e)) => return Err(e),
            Ok(Ok(b)) => b,
        };
        // A request body may hold a value (`set`, `import`, `unlock`): the
        // decoded copy is wiped with its message, this one right after decode.
        let body = zeroize::Zeroizing::new(body);
        let request: Request = match decode(&body) {
            Ok(r) => r,
            Err(_) => {
                // Framing is intact, so the connection can go on.
                let resp = Response {
                    id: 0,
                    result: Err(WireError::new(
                        ErrorCode::BadRequest,
                        "malformed or unknown request",
                    )),
                };
                send(&mut stream, &resp).await?;
                continue;
            }
        };
        if let aivault_proto::RequestBody::Run(req) = request.body {
            return start_run(stream, daemon, caller, request.id, req).await;
        }
        if let aivault_proto::RequestBody::McpGateway = request.body {
            return start_gateway(stream, daemon, caller, request.id).await;
        }
        if let aivault_proto::RequestBody::McpGatewayPin { server } = request.body {
            // Async: a gateway starts the server and lists its tools.
            let result = crate::gateway::pin(daemon.clone(), caller, server)
                .await
                .map(Reply::Policy);
            write(&mut stream, &reply_frame(request.id, result)?).await?;
            continue;
        }
        if let aivault_proto::RequestBody::Approvals(req) = request.body {
            // Async: an approval through polkit waits for the person.
            let _permit = inflight
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| ConnError::Timeout)?;
            let result = crate::approval::serve::serve(&daemon.approval_host(), caller, req).await;
            send(
                &mut stream,
                &Response {
                    id: request.id,
                    result,
                },
            )
            .await?;
            continue;
        }
        let permit = inflight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ConnError::Timeout)?;
        let d = daemon.clone();
        let id = request.id;
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            d.handle(&caller, request.body)
        })
        .await
        .unwrap_or_else(|_| {
            Err(WireError::new(
                ErrorCode::Internal,
                "internal error while handling the request",
            ))
        });
        write(&mut stream, &reply_frame(id, result)?).await?;
    }
}

/// The frame answering request `id`. An answer too large for one frame is
/// replaced by an error saying so: the client keeps a usable connection
/// (the paged requests never need this; a whole list asked for by an old
/// client may).
fn reply_frame(id: u64, result: Result<Reply, WireError>) -> Result<Vec<u8>, ConnError> {
    let body = encode(&Response { id, result })?;
    if body.len() <= MAX_FRAME {
        return Ok(body);
    }
    tracing::debug!(bytes = body.len(), "answer too large for one frame");
    let e = WireError::new(
        ErrorCode::Busy,
        format!(
            "the answer is {} bytes, more than one reply can carry ({MAX_FRAME} bytes); \
             a client of protocol version 3 or later asks for it page by page",
            body.len()
        ),
    );
    Ok(encode(&Response { id, result: Err(e) })?)
}

/// Serves an MCP gateway request: once a gateway process is confined for
/// the caller, the answer goes out and the connection is handed to that
/// process (the daemon reads nothing more of it).
async fn start_gateway(
    mut stream: UnixStream,
    daemon: Arc<Daemon>,
    caller: Caller,
    id: u64,
) -> Result<(), ConnError> {
    let session = match crate::gateway::start(Arc::clone(&daemon), caller).await {
        Ok(s) => s,
        Err(e) => return send(&mut stream, &Response { id, result: Err(e) }).await,
    };
    let done = Response {
        id,
        result: Ok(Reply::Done { version: None }),
    };
    if let Err(e) = send(&mut stream, &done).await {
        session.serve_nothing().await;
        return Err(e);
    }
    match stream.into_std() {
        Ok(std) => {
            session.serve(std::os::fd::OwnedFd::from(std)).await;
            Ok(())
        }
        Err(e) => {
            session.serve_nothing().await;
            Err(ConnError::Frame(aivault_proto::FrameError::Io(e)))
        }
    }
}

/// Serves a run request: the connection belongs to the run from here on.
async fn start_run(
    mut stream: UnixStream,
    daemon: Arc<Daemon>,
    caller: Caller,
    id: u64,
    req: aivault_proto::RunRequest,
) -> Result<(), ConnError> {
    let slot = match daemon.runs().admit(caller.uid) {
        Ok(slot) => slot,
        Err(why) => {
            let result = Err(WireError::new(ErrorCode::Busy, why));
            return send(&mut stream, &Response { id, result }).await;
        }
    };
    // A run given the caller's working directory: its descriptor is on the
    // byte right behind the request.
    let workdir = match req.workdir {
        None => None,
        Some(_) => match crate::run::workdir::receive(&stream).await {
            Ok(fd) => Some(fd),
            Err(e) => return send(&mut stream, &Response { id, result: Err(e) }).await,
        },
    };
    match crate::run::supervise::decide(&daemon.run_host(), caller, req, workdir).await {
        Err(e) => send(&mut stream, &Response { id, result: Err(e) }).await,
        Ok(decided) => {
            crate::run::supervise::run(daemon, decided, stream, id, slot).await;
            Ok(())
        }
    }
}

fn hello_reply(result: Result<(), WireError>) -> HelloReply {
    HelloReply {
        version: PROTOCOL_VERSION,
        server: server_name(),
        result,
    }
}
