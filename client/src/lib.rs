//! Client library for `aivaultd`, used by `vaultctl` and by any program that
//! wants to talk to the daemon.
//!
//! [`Client`] opens the Unix socket, performs the handshake and sends
//! [`aivault_proto::RequestBody`]s one at a time; [`pages`] follows the
//! paged lists to their end; [`http`] speaks HTTP/1.1 to the capability
//! broker's local endpoint. It is deliberately blocking
//! and small: a `vaultctl` invocation is one connection and a few requests.
#![forbid(unsafe_code)]

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aivault_proto::{
    decode, encode, read_frame, write_frame, FrameError, Hello, HelloReply, Reply, Request,
    RequestBody, Response, WireError, HELLO_MAGIC, PROTOCOL_VERSION,
};

pub mod cli;
pub mod dotenv;
pub mod http;
pub mod mcp;
pub mod pages;

/// Socket used when neither `--socket` nor `$AIVAULT_SOCKET` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/aivault/aivaultd.sock";

/// Environment variable naming the socket.
pub const SOCKET_ENV: &str = "AIVAULT_SOCKET";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to aivaultd at {path}: {source} (is the daemon running?)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The socket (or a directory above it) does not let this user in.
    #[error("permission denied: cannot connect to aivaultd at {path} (the socket or a directory above it does not admit your user)")]
    ConnectDenied { path: PathBuf },
    /// The daemon accepted the connection but did not answer in time.
    #[error("aivaultd did not answer {stage} within {}", human(*after))]
    Timeout {
        /// What was waited for: "the handshake", "the request", "the reply".
        stage: &'static str,
        after: Duration,
    },
    #[error("lost connection to aivaultd: {0}")]
    Frame(#[from] FrameError),
    #[error("the daemon refused the connection: {0}")]
    Refused(WireError),
    #[error("unexpected answer from the daemon")]
    Protocol,
    /// The daemon answered the request with an error.
    #[error("{0}")]
    Daemon(WireError),
}

/// The socket path: an explicit choice, else `$AIVAULT_SOCKET`, else the default.
pub fn socket_path(explicit: Option<&Path>) -> PathBuf {
    explicit.map(Path::to_path_buf).unwrap_or_else(|| {
        std::env::var_os(SOCKET_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    })
}

/// `1.5s`, `30s`, `500ms` for messages.
fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// A read or write that ran into the socket's timeout.
fn timed_out(e: &FrameError) -> bool {
    matches!(e, FrameError::Io(io) if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

/// One connection to the daemon.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    next_id: u64,
    /// The daemon's self-description, once its handshake answer is read.
    server: Option<String>,
    /// How long each write and each awaited answer may take.
    timeout: Option<Duration>,
}

impl Client {
    /// Connects and performs the version handshake.
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let mut client = Self::open(path)?;
        client.finish_handshake()?;
        Ok(client)
    }

    /// Connects and sends the handshake without waiting for its answer:
    /// the first [`Client::call`] sends its request right behind it and
    /// then reads both answers, saving a round trip. A refused handshake is
    /// reported by that call, as by [`Client::connect`].
    pub fn open(path: &Path) -> Result<Self, ClientError> {
        Self::open_with_timeout(path, None)
    }

    /// [`Client::open`], with every write and every awaited answer (the
    /// handshake's, each reply) bounded by `timeout`: a daemon that accepts
    /// the connection and then never answers is reported as
    /// [`ClientError::Timeout`] instead of waited on for ever. `None` waits.
    pub fn open_with_timeout(path: &Path, timeout: Option<Duration>) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::PermissionDenied {
                ClientError::ConnectDenied { path: path.into() }
            } else {
                ClientError::Connect {
                    path: path.into(),
                    source,
                }
            }
        })?;
        let bounded = stream
            .set_read_timeout(timeout)
            .and_then(|()| stream.set_write_timeout(timeout));
        if let Err(source) = bounded {
            return Err(ClientError::Connect {
                path: path.into(),
                source,
            });
        }
        let mut client = Self {
            stream,
            next_id: 1,
            server: None,
            timeout,
        };
        let hello = Hello {
            magic: HELLO_MAGIC,
            version: PROTOCOL_VERSION,
            client: format!("aivault-client {}", env!("CARGO_PKG_VERSION")),
        };
        let sent = write_frame(&mut client.stream, &encode(&hello)?);
        client.after_write(sent, "the handshake")?;
        Ok(client)
    }

    /// A frame error as the caller should see it: a timeout names what
    /// was waited for.
    fn frame_error(&self, e: FrameError, stage: &'static str) -> ClientError {
        match self.timeout {
            Some(after) if timed_out(&e) => ClientError::Timeout { stage, after },
            _ => e.into(),
        }
    }

    /// Reads the handshake's answer if it is still pending.
    fn finish_handshake(&mut self) -> Result<(), ClientError> {
        if self.server.is_some() {
            return Ok(());
        }
        let frame =
            read_frame(&mut self.stream).map_err(|e| self.frame_error(e, "the handshake"))?;
        let reply: HelloReply = decode(&frame)?;
        reply.result.map_err(ClientError::Refused)?;
        self.server = Some(reply.server);
        Ok(())
    }

    /// A write that failed before the handshake was answered may be the
    /// daemon refusing the connection (busy, wrong version) and closing it:
    /// its answer, still readable, says why better than a broken pipe.
    fn after_write(
        &mut self,
        sent: Result<(), FrameError>,
        stage: &'static str,
    ) -> Result<(), ClientError> {
        match sent {
            Ok(()) => Ok(()),
            Err(e) if timed_out(&e) => Err(self.frame_error(e, stage)),
            Err(e) if self.server.is_none() => {
                self.finish_handshake()?;
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The daemon's self-description from the handshake.
    pub fn server(&mut self) -> Result<&str, ClientError> {
        self.finish_handshake()?;
        Ok(self.server.as_deref().unwrap_or_default())
    }

    /// Bounds how long a reply may take (none by default).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    /// Asks for an MCP gateway (`McpGateway`); once the daemon says it
    /// serves, the connection carries MCP to and from the gateway process,
    /// and is returned without timeouts for the caller to relay.
    pub fn into_mcp_gateway(mut self) -> Result<UnixStream, ClientError> {
        match self.call(RequestBody::McpGateway)? {
            Reply::Done { .. } => {}
            _ => return Err(ClientError::Protocol),
        }
        let cleared = self
            .stream
            .set_read_timeout(None)
            .and_then(|()| self.stream.set_write_timeout(None));
        cleared.map_err(|_| ClientError::Protocol)?;
        Ok(self.stream)
    }

    /// Sends one request and waits for its reply.
    pub fn call(&mut self, body: RequestBody) -> Result<Reply, ClientError> {
        self.call_with_fd(body, None)
    }

    /// [`Client::call`], with `fd` on the byte that follows the request.
    fn call_with_fd(
        &mut self,
        body: RequestBody,
        fd: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<Reply, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        // The encoded request may hold a value: wiped on drop.
        let request = zeroize::Zeroizing::new(encode(&Request { id, body })?);
        let sent = write_frame(&mut self.stream, &request);
        self.after_write(sent, "the request")?;
        if let Some(fd) = fd {
            let sent = send_fd(&self.stream, fd);
            self.after_write(sent, "the working directory")?;
        }
        self.finish_handshake()?;
        let frame = read_frame(&mut self.stream).map_err(|e| self.frame_error(e, "the reply"))?;
        let resp: Response = decode(&frame)?;
        if resp.id != id {
            return match resp.result {
                Err(e) => Err(ClientError::Daemon(e)),
                Ok(_) => Err(ClientError::Protocol),
            };
        }
        resp.result.map_err(ClientError::Daemon)
    }
}

impl Client {
    /// The HTTP capabilities this caller may invoke, and where the local
    /// endpoint listens.
    pub fn capabilities(&mut self) -> Result<aivault_proto::CapabilityReport, ClientError> {
        match self.call(RequestBody::CapabilityList)? {
            Reply::Capabilities(r) => Ok(r),
            _ => Err(ClientError::Protocol),
        }
    }
}

/// Opens `path` as a run's working directory: `O_RDONLY | O_DIRECTORY`,
/// so the kernel checks that this process may read it; the daemon accepts
/// nothing less.
pub fn open_workdir(path: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_CLOEXEC)
        .open(path)?;
    Ok(dir.into())
}

/// Sends the byte that carries a run's working directory.
pub fn send_fd(stream: &UnixStream, fd: std::os::fd::BorrowedFd<'_>) -> Result<(), FrameError> {
    use std::os::fd::AsFd;
    loop {
        match aivault_proto::handoff::send_frame_with_fd(
            stream.as_fd(),
            &[aivault_proto::WORKDIR_BYTE],
            fd,
        ) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(FrameError::Io(std::io::ErrorKind::WriteZero.into())),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
}

/// A run in progress: redacted output events in, input and signals out.
///
/// Meant for one thread that polls [`RunSession::as_fd`]: input is queued
/// with [`RunSession::queue`] and written without blocking by
/// [`RunSession::flush`] when the socket is writable, so a caller busy
/// sending input never stops reading the run's output (which would let
/// both ends wait on each other).
#[derive(Debug)]
pub struct RunSession {
    stream: UnixStream,
    command: String,
    /// Framed input not yet written.
    outgoing: Vec<u8>,
}

impl Client {
    /// Asks the daemon to run a command; on success the connection becomes
    /// the run's stream.
    pub fn start_run(self, req: aivault_proto::RunRequest) -> Result<RunSession, ClientError> {
        self.start_run_with(req, None, |_| {})
    }

    /// [`Client::start_run`] in the working directory `dir` (from
    /// [`open_workdir`], which a request with `workdir` set needs), calling
    /// `waiting` when the run waits for a person's approval (its rule says
    /// `approval = ...`); the start is then awaited without the reply
    /// timeout (the daemon bounds the wait).
    pub fn start_run_with(
        mut self,
        req: aivault_proto::RunRequest,
        dir: Option<&std::os::fd::OwnedFd>,
        mut waiting: impl FnMut(&aivault_proto::PendingApproval),
    ) -> Result<RunSession, ClientError> {
        use std::os::fd::AsFd;
        if req.workdir.is_some() != dir.is_some() {
            return Err(ClientError::Protocol);
        }
        let id = self.next_id;
        let mut reply = self.call_with_fd(RequestBody::Run(req), dir.map(|d| d.as_fd()))?;
        while let Reply::AwaitingApproval(pending) = &reply {
            waiting(pending);
            self.stream.set_read_timeout(None).map_err(FrameError::Io)?;
            let frame =
                read_frame(&mut self.stream).map_err(|e| self.frame_error(e, "the approval"))?;
            let resp: Response = decode(&frame)?;
            if resp.id != id {
                return Err(ClientError::Protocol);
            }
            reply = resp.result.map_err(ClientError::Daemon)?;
        }
        match reply {
            Reply::RunStarted { command } => {
                // A run lasts as long as its command: only its start is bounded.
                self.stream
                    .set_read_timeout(None)
                    .and_then(|()| self.stream.set_write_timeout(None))
                    .map_err(FrameError::Io)?;
                Ok(RunSession {
                    stream: self.stream,
                    command,
                    outgoing: Vec::new(),
                })
            }
            _ => Err(ClientError::Protocol),
        }
    }
}

impl RunSession {
    /// The absolute path the daemon resolved and runs.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The connection, to poll: readable when an event (or its end) waits,
    /// writable when queued input can go out.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.stream.as_fd()
    }

    /// Queues one input frame; [`RunSession::flush`] sends it.
    pub fn queue(&mut self, input: &aivault_proto::RunInput) -> Result<(), ClientError> {
        let body = encode(input)?;
        if body.len() > aivault_proto::MAX_FRAME {
            return Err(FrameError::TooLarge(body.len()).into());
        }
        self.outgoing
            .extend_from_slice(&(body.len() as u32).to_be_bytes());
        self.outgoing.extend_from_slice(&body);
        Ok(())
    }

    /// Bytes of input queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.outgoing.len()
    }

    /// Drops input not yet sent (the connection can take no more).
    pub fn discard_queued(&mut self) {
        self.outgoing.clear();
    }

    /// Sends as much queued input as the socket takes now, never blocking.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        use std::os::fd::AsRawFd;
        while !self.outgoing.is_empty() {
            match nix::sys::socket::send(
                self.stream.as_raw_fd(),
                &self.outgoing,
                nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => {
                    self.outgoing.drain(..n);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => return Err(FrameError::Io(e.into()).into()),
            }
        }
        Ok(())
    }

    /// The next event; ends with [`aivault_proto::RunEvent::Exit`]. Blocks
    /// until a whole frame has arrived.
    pub fn next_event(&mut self) -> Result<aivault_proto::RunEvent, ClientError> {
        let body = read_frame(&mut self.stream)?;
        if let Ok(ev) = decode::<aivault_proto::RunEvent>(&body) {
            return Ok(ev);
        }
        match decode::<Response>(&body) {
            Ok(Response { result: Err(e), .. }) => Err(ClientError::Daemon(e)),
            _ => Err(ClientError::Protocol),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_given() {
        assert_eq!(human(Duration::from_secs(30)), "30s");
        assert_eq!(human(Duration::from_millis(500)), "500ms");
        assert_eq!(human(Duration::from_millis(1_500)), "1.5s");
    }

    #[test]
    fn a_silent_peer_is_a_timeout_naming_the_handshake() {
        let path = std::env::temp_dir().join(format!("aivault-client-test-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        let mut c =
            Client::open_with_timeout(&path, Some(Duration::from_millis(50))).expect("open");
        let _held = listener.accept().expect("accept");
        let got = c.call(RequestBody::Status);
        let _ = std::fs::remove_file(&path);
        match got {
            Err(ClientError::Timeout { stage, .. }) => assert_eq!(stage, "the handshake"),
            other => panic!("{other:?}"),
        }
    }
}
