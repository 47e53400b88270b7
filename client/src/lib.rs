//! Client library for `aivaultd`, used by `vaultctl` and by any program that
//! wants to talk to the daemon.
//!
//! [`Client`] opens the Unix socket, performs the handshake and sends
//! [`aivault_proto::RequestBody`]s one at a time. It is deliberately blocking
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
pub mod mcp;

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

/// One handshaken connection to the daemon.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    next_id: u64,
    server: String,
}

impl Client {
    /// Connects and performs the version handshake.
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let mut stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.into(),
            source,
        })?;
        let hello = Hello {
            magic: HELLO_MAGIC,
            version: PROTOCOL_VERSION,
            client: format!("aivault-client {}", env!("CARGO_PKG_VERSION")),
        };
        write_frame(&mut stream, &encode(&hello)?)?;
        let reply: HelloReply = decode(&read_frame(&mut stream)?)?;
        reply.result.map_err(ClientError::Refused)?;
        Ok(Self {
            stream,
            next_id: 1,
            server: reply.server,
        })
    }

    /// The daemon's self-description from the handshake.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Bounds how long a reply may take (none by default).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    /// Sends one request and waits for its reply.
    pub fn call(&mut self, body: RequestBody) -> Result<Reply, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        // The encoded request may hold a value: wiped on drop.
        let request = zeroize::Zeroizing::new(encode(&Request { id, body })?);
        write_frame(&mut self.stream, &request)?;
        let resp: Response = decode(&read_frame(&mut self.stream)?)?;
        if resp.id != id {
            return match resp.result {
                Err(e) => Err(ClientError::Daemon(e)),
                Ok(_) => Err(ClientError::Protocol),
            };
        }
        resp.result.map_err(ClientError::Daemon)
    }
}

/// A run in progress: redacted output events in, input and signals out.
#[derive(Debug)]
pub struct RunSession {
    reader: UnixStream,
    writer: std::sync::Arc<std::sync::Mutex<UnixStream>>,
    command: String,
}

/// A handle that sends input to a run from another thread.
#[derive(Debug, Clone)]
pub struct RunInputSender {
    writer: std::sync::Arc<std::sync::Mutex<UnixStream>>,
}

impl RunInputSender {
    pub fn send(&self, input: &aivault_proto::RunInput) -> Result<(), ClientError> {
        let body = encode(input)?;
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        write_frame(&mut *w, &body)?;
        Ok(())
    }
}

impl Client {
    /// Asks the daemon to run a command; on success the connection becomes
    /// the run's stream.
    pub fn start_run(mut self, req: aivault_proto::RunRequest) -> Result<RunSession, ClientError> {
        match self.call(RequestBody::Run(req))? {
            Reply::RunStarted { command } => {
                let writer = self.stream.try_clone().map_err(FrameError::Io)?;
                Ok(RunSession {
                    reader: self.stream,
                    writer: std::sync::Arc::new(std::sync::Mutex::new(writer)),
                    command,
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

    /// A sender usable from other threads (stdin pump, signal forwarder).
    pub fn input(&self) -> RunInputSender {
        RunInputSender {
            writer: self.writer.clone(),
        }
    }

    /// The next event; ends with [`aivault_proto::RunEvent::Exit`].
    pub fn next_event(&mut self) -> Result<aivault_proto::RunEvent, ClientError> {
        let body = read_frame(&mut self.reader)?;
        if let Ok(ev) = decode::<aivault_proto::RunEvent>(&body) {
            return Ok(ev);
        }
        match decode::<Response>(&body) {
            Ok(Response { result: Err(e), .. }) => Err(ClientError::Daemon(e)),
            _ => Err(ClientError::Protocol),
        }
    }
}
