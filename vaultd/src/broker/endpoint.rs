//! The broker's local endpoint: `http.sock` beside the daemon's socket
//! (mode 0666, made like it) and, if configured, a loopback TCP listener
//! for programs that speak only HTTP over TCP.
//!
//! Each accepted connection is identified by the kernel ([`super::peer`]),
//! admitted under the per-uid and total limits ([`crate::admission`]) for
//! as long as it takes to reach the caller's broker, and handed to the
//! pool ([`super::pool::BrokerPool::dispatch`]). The daemon never reads a
//! byte of it. D-Bus callers (`OpenCapabilityConnection`) come in through
//! the same [`Handover`]: the same limits, the same pool. One that cannot be identified is closed at once; one the
//! pool refuses gets a short HTTP status (403 or 503) it may or may not
//! see, and is closed.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Semaphore};

use super::peer;
use super::pool::{BrokerPool, Refusal, Refused};
use crate::admission::{Admission, Refusal as Limit, Ticket};
use crate::caller::Caller;

/// The Unix socket's name, in the daemon socket's directory.
pub const HTTP_SOCKET: &str = "http.sock";

/// How many connections may be on their way to a broker at once: all
/// callers together, and each uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointLimits {
    pub max_connections: usize,
    pub max_connections_per_uid: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error(
        "[broker] tcp_listen = \"{0}\": only a loopback address (127.0.0.0/8 or ::1) is allowed"
    )]
    NotLoopback(SocketAddr),
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("cannot bind {what}: {source}")]
    Bind {
        what: String,
        source: std::io::Error,
    },
}

/// Refuses a TCP address that is not loopback (for the configuration's
/// check, and again before binding).
pub fn check_tcp_listen(addr: SocketAddr) -> Result<(), EndpointError> {
    if addr.ip().to_canonical().is_loopback() {
        Ok(())
    } else {
        Err(EndpointError::NotLoopback(addr))
    }
}

/// `http.sock` beside `daemon_socket`.
pub fn http_socket_path(daemon_socket: &Path) -> PathBuf {
    daemon_socket
        .parent()
        .unwrap_or(Path::new("/"))
        .join(HTTP_SOCKET)
}

/// Binds the Unix endpoint at `path` in the daemon socket's directory
/// (prepared and checked by the daemon already): a stale socket is
/// replaced, anything else at the path refused; mode 0666 (whoever
/// connects is identified, and served only as far as the policy says).
pub fn bind_unix(path: &Path) -> Result<UnixListener, EndpointError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(EndpointError::NotASocket { path: path.into() });
        }
        let _ = std::fs::remove_file(path);
    }
    let bind = |source| EndpointError::Bind {
        what: path.display().to_string(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(bind)?;
    Ok(listener)
}

/// The running endpoint.
#[derive(Debug)]
pub struct Endpoint {
    pool: Arc<BrokerPool>,
    handover: Arc<Handover>,
    unix_path: PathBuf,
    tcp_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What every accepted connection goes through.
#[derive(Debug)]
struct Front {
    handover: Arc<Handover>,
    /// TCP connections being identified (before their uid is known).
    identifying: Arc<Semaphore>,
}

/// The way into the pool for an identified connection, from the
/// endpoint's listeners and from D-Bus alike: admitted under the
/// endpoint's limits for as long as it takes to reach the broker.
#[derive(Debug)]
pub struct Handover {
    pool: Arc<BrokerPool>,
    admission: Arc<Admission>,
}

impl Handover {
    /// A place for one connection of `uid` on its way to a broker (given
    /// back when the ticket drops), or why there is none.
    pub fn admit(&self, uid: u32) -> Result<Ticket, &'static str> {
        self.admission.try_admit(uid).map_err(|limit| match limit {
            Limit::Total => "the broker has too many connections",
            Limit::PerUid => "too many connections from this user",
        })
    }

    pub fn pool(&self) -> &Arc<BrokerPool> {
        &self.pool
    }
}

impl Endpoint {
    /// Listens on `http.sock` beside `daemon_socket` and, if given, on the
    /// loopback address `tcp`; hands what arrives to `pool`.
    pub async fn start(
        pool: Arc<BrokerPool>,
        daemon_socket: &Path,
        tcp: Option<SocketAddr>,
        limits: EndpointLimits,
    ) -> Result<Endpoint, EndpointError> {
        let tcp_listener = match tcp {
            Some(addr) => {
                check_tcp_listen(addr)?;
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|source| EndpointError::Bind {
                        what: addr.to_string(),
                        source,
                    })?;
                Some(l)
            }
            None => None,
        };
        let unix_path = http_socket_path(daemon_socket);
        let unix = bind_unix(&unix_path)?;
        let handover = Arc::new(Handover {
            pool: pool.clone(),
            admission: Admission::new(limits.max_connections, limits.max_connections_per_uid),
        });
        let front = Arc::new(Front {
            handover: handover.clone(),
            identifying: Arc::new(Semaphore::new(limits.max_connections.max(1))),
        });
        let (stop, stopped) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(serve_unix(
            unix,
            front.clone(),
            stopped.clone(),
        ))];
        let tcp_addr = tcp_listener.as_ref().and_then(|l| l.local_addr().ok());
        if let Some(l) = tcp_listener {
            tasks.push(tokio::spawn(serve_tcp(l, front, stopped)));
        }
        Ok(Endpoint {
            pool,
            handover,
            unix_path,
            tcp_addr,
            stop,
            tasks,
        })
    }

    pub fn pool(&self) -> &Arc<BrokerPool> {
        &self.pool
    }

    /// The way in for connections identified elsewhere (D-Bus).
    pub fn handover(&self) -> Arc<Handover> {
        self.handover.clone()
    }

    /// Where the Unix endpoint listens.
    pub fn unix_path(&self) -> &Path {
        &self.unix_path
    }

    /// Where the TCP endpoint listens (its port resolved), if it does.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Stops accepting, stops every broker, removes the socket.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.pool.stop_all().await;
        let _ = std::fs::remove_file(&self.unix_path);
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn serve_unix(listener: UnixListener, front: Arc<Front>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let caller = match peer::unix_caller(&stream) {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "broker endpoint: a caller that cannot be identified; closed");
                            continue;
                        }
                    };
                    match stream.into_std() {
                        Ok(s) => admit(&front, caller, OwnedFd::from(s)),
                        Err(e) => tracing::warn!(error = %e, "broker endpoint: cannot take a connection"),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "broker endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn serve_tcp(listener: TcpListener, front: Arc<Front>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    // Identified on a blocking thread (the socket table may
                    // be read from /proc, the account from NSS), a bounded
                    // number at once; over the bound, closed.
                    let Ok(permit) = front.identifying.clone().try_acquire_owned() else {
                        tracing::debug!("broker endpoint: too many connections being identified; closed");
                        continue;
                    };
                    let Ok(local) = stream.local_addr() else { continue };
                    let Ok(std) = stream.into_std() else { continue };
                    let front = front.clone();
                    tokio::spawn(async move {
                        let caller = tokio::task::spawn_blocking(move || peer::tcp_caller(local, remote)).await;
                        drop(permit);
                        match caller {
                            Ok(Ok(caller)) => admit(&front, caller, OwnedFd::from(std)),
                            Ok(Err(e)) => tracing::warn!(error = %e, %remote, "broker endpoint: a TCP caller that cannot be identified; closed"),
                            Err(_) => {}
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "broker endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Admits an identified connection and hands it to the pool on a task of
/// its own (a broker's start takes a while).
fn admit(front: &Arc<Front>, caller: Caller, conn: OwnedFd) {
    let ticket = match front.handover.admit(caller.uid) {
        Ok(t) => t,
        Err(why) => {
            tracing::debug!(uid = caller.uid, why, "broker endpoint: connection refused");
            answer(&conn, 503, why);
            return;
        }
    };
    // Handed over as accepted: blocking, the broker sets what it wants.
    if let Err(e) = set_blocking(&conn) {
        tracing::warn!(error = %e, "broker endpoint: cannot hand a connection over");
        return;
    }
    let pool = front.handover.pool.clone();
    tokio::spawn(async move {
        let _ticket = ticket;
        if let Err(Refusal { why, conn }) = pool.dispatch(caller, conn).await {
            tracing::info!(uid = caller.uid, pid = caller.pid, error = %why, "broker endpoint: connection refused");
            if let Some(conn) = conn {
                let status = match why {
                    Refused::NoCapability | Refused::RunUid => 403,
                    _ => 503,
                };
                // Why a start failed is the daemon's log's, not the caller's.
                let message = match why {
                    Refused::Start(_) => "the broker could not be started".to_string(),
                    other => other.to_string(),
                };
                answer(&conn, status, &message);
            }
        }
    });
}

fn set_blocking(conn: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(conn.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(
        conn.as_raw_fd(),
        FcntlArg::F_SETFL(flags & !OFlag::O_NONBLOCK),
    )?;
    Ok(())
}

/// Writes a short HTTP answer, once and without waiting: a caller that
/// has not read is not waited for. Nothing is read.
fn answer(conn: &OwnedFd, status: u16, message: &str) {
    use nix::sys::socket::{send, MsgFlags};
    let reason = match status {
        403 => "Forbidden",
        _ => "Service Unavailable",
    };
    let body = format!("{message}\n");
    let text = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = send(
        conn.as_raw_fd(),
        text.as_bytes(),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_may_be_listened_on() {
        for ok in [
            "127.0.0.1:8787",
            "127.1.2.3:1",
            "[::1]:8787",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(check_tcp_listen(ok.parse().unwrap()).is_ok(), "{ok}");
        }
        for bad in [
            "0.0.0.0:8787",
            "192.168.1.10:8787",
            "[::]:8787",
            "[2001:db8::1]:1",
        ] {
            let e = check_tcp_listen(bad.parse().unwrap()).unwrap_err();
            assert!(
                e.to_string().contains("only a loopback address"),
                "{bad}: {e}"
            );
        }
    }

    #[tokio::test]
    async fn the_unix_endpoint_is_0666_beside_the_daemon_socket_and_replaces_only_a_socket() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let daemon = dir.path().join("aivaultd.sock");
        let path = http_socket_path(&daemon);
        assert_eq!(path, dir.path().join("http.sock"));
        let first = bind_unix(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o666);
        drop(first);
        // A stale socket is replaced.
        bind_unix(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(matches!(
            bind_unix(&path),
            Err(EndpointError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"not a socket");
    }
}
