//! A small blocking HTTP/1.1 client for the broker's local endpoint.
//!
//! The endpoint is the Unix socket `http.sock` beside the daemon's socket
//! ([`http_socket_path`]); a request for capability `C` goes to the target
//! `/C/<path>`. [`Request`] is checked before anything is sent (the
//! capability name, the path, each header), written with a
//! `Content-Length` body and `Connection: close`, and answered by a
//! [`Response`]: the parsed head ([`head`], bounded) and a body reader
//! ([`body`]) that decodes `Content-Length`, `chunked` or read-to-close
//! bodies as the bytes arrive, so a stream (SSE) can be passed on live.
//!
//! The body is bytes the caller read itself (a file it opened, stdin):
//! nothing here sends a path for the daemon or the broker to open.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod body;
pub mod head;

pub use body::Body;
pub use head::Head;

/// The endpoint's socket file name, beside the daemon's socket.
pub const HTTP_SOCKET_NAME: &str = "http.sock";

/// Largest request body sent (the largest a capability may accept).
pub const MAX_REQUEST_BODY: usize = 64 * 1024 * 1024;

/// Most caller headers on one request (the broker accepts no more).
pub const MAX_HEADERS: usize = 64;

/// Longest header value, in bytes.
pub const MAX_HEADER_VALUE: usize = 8 * 1024;

/// Longest path (with its query), in bytes.
pub const MAX_PATH: usize = 8 * 1024;

/// Most interim (1xx) answers read before the final one.
const MAX_INTERIM: usize = 8;

/// The endpoint's socket for the daemon socket `daemon_socket`.
pub fn http_socket_path(daemon_socket: &Path) -> PathBuf {
    daemon_socket
        .parent()
        .unwrap_or_else(|| Path::new("/"))
        .join(HTTP_SOCKET_NAME)
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request was refused here, before anything was sent.
    #[error("{0}")]
    Invalid(String),
    #[error("cannot connect to the HTTP endpoint at {path}: {source} (is the daemon running with the broker?)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("permission denied: cannot connect to the HTTP endpoint at {path}")]
    ConnectDenied { path: PathBuf },
    #[error("sending the request failed: {0}")]
    Send(std::io::Error),
    /// No answer within the timeout.
    #[error("the HTTP endpoint sent nothing for {0:?}")]
    Timeout(Duration),
    /// The answer is not HTTP/1.1 as this client reads it, or it ended
    /// before its end.
    #[error("bad response from the HTTP endpoint: {0}")]
    Response(String),
    #[error("reading the response failed: {0}")]
    Read(std::io::Error),
    /// Writing the body to this process's own output failed (a closed pipe).
    #[error("writing the response out failed: {0}")]
    Output(std::io::Error),
}

impl HttpError {
    fn from_read(e: std::io::Error, timeout: Option<Duration>) -> HttpError {
        match (e.kind(), timeout) {
            (std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut, Some(t)) => {
                HttpError::Timeout(t)
            }
            (std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof, _) => {
                HttpError::Response(e.to_string())
            }
            _ => HttpError::Read(e),
        }
    }
}

/// One request to a capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub capability: String,
    /// An HTTP method token (`GET`, `POST`, …); the broker decides which a
    /// capability allows.
    pub method: String,
    /// Absolute path below the capability, with its query (`/v1/models?x=1`).
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Whether `name` is a capability name as policy allows them: 1-64 of
/// `a-z 0-9 - _ /`, no empty segment.
pub fn valid_capability(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'/'))
        && name.split('/').all(|s| !s.is_empty())
}

/// An HTTP token (RFC 9110 `tchar`s), for methods and header names.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses `Name: value` (as `curl -H` takes it): a token name, a value
/// without CR, LF or NUL, surrounding blanks of the value dropped.
pub fn parse_header(arg: &str) -> Result<(String, String), HttpError> {
    let bad = |why: &str| {
        HttpError::Invalid(format!(
            "header {:?}: {why}",
            arg.escape_debug().to_string()
        ))
    };
    let (name, value) = arg
        .split_once(':')
        .ok_or_else(|| bad("expected NAME:VALUE"))?;
    if !is_token(name) {
        return Err(bad(
            "the name must be an HTTP token (letters, digits, '-', ...)",
        ));
    }
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(bad("the value may not hold CR, LF or NUL"));
    }
    if value.len() > MAX_HEADER_VALUE {
        return Err(bad("the value is longer than 8 KiB"));
    }
    Ok((name.to_string(), value.to_string()))
}

/// Headers this client writes itself and never takes from the caller.
const OWN_HEADERS: [&str; 5] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "expect",
];

impl Request {
    /// Refuses what cannot be sent as given; the broker checks the rest
    /// (methods, path patterns, credential headers).
    pub fn check(&self) -> Result<(), HttpError> {
        let bad = |m: String| Err(HttpError::Invalid(m));
        if !valid_capability(&self.capability) {
            return bad(format!(
                "capability {:?}: a name is 1-64 characters of a-z, 0-9, '-', '_' and '/' (see `vaultctl capabilities`)",
                self.capability.escape_debug().to_string()
            ));
        }
        if !is_token(&self.method) {
            return bad(format!(
                "method {:?} is not an HTTP method",
                self.method.escape_debug().to_string()
            ));
        }
        if !self.path.starts_with('/') {
            return bad("the path must start with '/'".into());
        }
        if self.path.len() > MAX_PATH {
            return bad("the path is longer than 8 KiB".into());
        }
        if self.path.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return bad("the path may hold no spaces, control or non-ASCII characters (percent-encode them)".into());
        }
        if self.headers.len() > MAX_HEADERS {
            return bad(format!("more than {MAX_HEADERS} headers"));
        }
        for (name, value) in &self.headers {
            parse_header(&format!("{name}:{value}"))?;
            if OWN_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                return bad(format!("header {name:?} is set by vaultctl itself"));
            }
        }
        if self.body.len() > MAX_REQUEST_BODY {
            return bad("the body is larger than 64 MiB".into());
        }
        Ok(())
    }

    /// The request target on the endpoint: `/<capability><path>`.
    pub fn target(&self) -> String {
        format!("/{}{}", self.capability, self.path)
    }

    /// The request's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(
            format!(
                "{} {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n",
                self.method,
                self.target()
            )
            .as_bytes(),
        );
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        if !self.body.is_empty()
            || !matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS" | "DELETE")
        {
            out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// An answer: its head, and its body to read as it arrives.
#[derive(Debug)]
pub struct Response {
    pub head: Head,
    pub body: Body<UnixStream>,
}

/// Sends `req` to the endpoint at `socket` and reads the response head.
/// `timeout` bounds each write and each wait for bytes (none: wait).
pub fn send(
    socket: &Path,
    req: &Request,
    timeout: Option<Duration>,
) -> Result<Response, HttpError> {
    send_watched(socket, req, timeout, |_| {})
}

/// [`send`], handing the connection to `watch` as soon as it is made, so
/// that another thread can cut it short (`shutdown`) to cancel the request.
pub fn send_watched(
    socket: &Path,
    req: &Request,
    timeout: Option<Duration>,
    watch: impl FnOnce(&UnixStream),
) -> Result<Response, HttpError> {
    req.check()?;
    let stream = UnixStream::connect(socket).map_err(|source| {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            HttpError::ConnectDenied {
                path: socket.into(),
            }
        } else {
            HttpError::Connect {
                path: socket.into(),
                source,
            }
        }
    })?;
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .map_err(HttpError::Send)?;
    watch(&stream);
    let mut writer = &stream;
    if let Err(e) = writer
        .write_all(&req.encode())
        .and_then(|()| writer.flush())
    {
        // A broker refusing early closes after answering: read that answer.
        if !matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ) {
            return Err(match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    HttpError::Timeout(timeout.unwrap_or_default())
                }
                _ => HttpError::Send(e),
            });
        }
    }
    let mut reader = std::io::BufReader::with_capacity(16 * 1024, stream);
    // Interim answers (100 Continue, 103 Early Hints) precede the real
    // one; a few at most.
    let mut interim = 0;
    let head = loop {
        let h = head::read_head(&mut reader).map_err(|e| HttpError::from_read(e, timeout))?;
        if !(100..200).contains(&h.status) || h.status == 101 {
            break h;
        }
        interim += 1;
        if interim > MAX_INTERIM {
            return Err(HttpError::Response(
                "too many interim (1xx) responses".into(),
            ));
        }
    };
    let framing =
        body::Framing::of(&head, &req.method).map_err(|e| HttpError::Response(e.to_string()))?;
    Ok(Response {
        head,
        body: Body::new(reader, framing, timeout),
    })
}

impl Response {
    /// Reads the whole body, keeping at most `max` bytes; returns them and
    /// whether more came (the rest is not read: the connection closes).
    pub fn read_bounded(mut self, max: usize) -> Result<(Vec<u8>, bool), HttpError> {
        let mut out = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = self
                .body
                .read(&mut buf)
                .map_err(|e| HttpError::from_read(e, self.body.timeout()))?;
            if n == 0 {
                return Ok((out, false));
            }
            let room = max - out.len();
            if n > room {
                out.extend_from_slice(&buf[..room]);
                return Ok((out, true));
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// Copies the body to `out` as it arrives, flushing after each piece so
    /// a stream is seen live; returns the bytes copied.
    pub fn copy_to(&mut self, out: &mut impl Write) -> Result<u64, HttpError> {
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0u64;
        loop {
            let n = self
                .body
                .read(&mut buf)
                .map_err(|e| HttpError::from_read(e, self.body.timeout()))?;
            if n == 0 {
                return Ok(total);
            }
            out.write_all(&buf[..n])
                .and_then(|()| out.flush())
                .map_err(HttpError::Output)?;
            total += n as u64;
        }
    }
}

#[cfg(test)]
mod tests;
