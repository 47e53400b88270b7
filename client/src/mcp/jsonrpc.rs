//! JSON-RPC 2.0 framing for MCP's stdio transport: one message per line on
//! stdin and stdout, no embedded newlines, UTF-8. Writes to stdout are
//! serialised by a mutex so concurrent request threads never interleave.

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// Invalid JSON was received.
pub const PARSE_ERROR: i64 = -32700;
/// The JSON sent is not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// The method does not exist.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid method parameters.
pub const INVALID_PARAMS: i64 = -32602;
/// Implementation-defined: too many requests in flight.
pub const SERVER_BUSY: i64 = -32000;
/// 2026-07-28: the `_meta` protocol version is not one we speak.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// Largest message accepted on stdin (a `secret_run` stdin of 1 MiB, escaped,
/// fits comfortably).
pub const MAX_LINE: usize = 8 * 1024 * 1024;

/// A JSON-RPC error object.
#[derive(Debug, Clone)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, message)
    }
}

/// The shared, line-oriented stdout.
#[derive(Clone)]
pub struct Output {
    inner: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Output")
    }
}

impl Output {
    pub fn new(w: Box<dyn Write + Send>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(w)),
        }
    }

    /// Writes one message as one line. A closed stdout is logged, not fatal:
    /// the read loop ends when the client goes away.
    pub fn send(&self, msg: &Value) {
        let mut line = msg.to_string();
        line.push('\n');
        let mut w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = w.write_all(line.as_bytes()).and_then(|()| w.flush()) {
            eprintln!("vaultctl mcp: cannot write to stdout: {e}");
        }
    }

    pub fn result(&self, id: &Value, result: Value) {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "result": result}));
    }

    pub fn error(&self, id: &Value, e: &RpcError) {
        let mut err = json!({"code": e.code, "message": e.message});
        if let Some(d) = &e.data {
            err["data"] = d.clone();
        }
        self.send(&json!({"jsonrpc": "2.0", "id": id, "error": err}));
    }
}

/// One line read from the client.
#[derive(Debug)]
pub enum Line {
    Message(Vec<u8>),
    /// Longer than [`MAX_LINE`]; its bytes were discarded.
    TooLong,
    Eof,
}

/// Reads one newline-terminated line, holding at most [`MAX_LINE`] bytes.
pub fn read_line(r: &mut impl BufRead) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let mut too_long = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(match (buf.is_empty(), too_long) {
                (_, true) => Line::TooLong,
                (true, false) => Line::Eof,
                (false, false) => Line::Message(buf),
            });
        }
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            if buf.len() + take > MAX_LINE {
                too_long = true;
                buf = Vec::new();
            } else {
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        r.consume(take);
        if done {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Message(buf)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_bounded() {
        let mut r = std::io::Cursor::new(b"{\"a\":1}\n\nlast".to_vec());
        assert!(matches!(read_line(&mut r).unwrap(), Line::Message(m) if m == b"{\"a\":1}\n"));
        assert!(matches!(read_line(&mut r).unwrap(), Line::Message(m) if m == b"\n"));
        assert!(matches!(read_line(&mut r).unwrap(), Line::Message(m) if m == b"last"));
        assert!(matches!(read_line(&mut r).unwrap(), Line::Eof));

        let mut big = vec![b'x'; MAX_LINE + 10];
        big.extend_from_slice(b"\n{}\n");
        let mut r = std::io::BufReader::with_capacity(4096, std::io::Cursor::new(big));
        assert!(matches!(read_line(&mut r).unwrap(), Line::TooLong));
        assert!(matches!(read_line(&mut r).unwrap(), Line::Message(m) if m == b"{}\n"));
    }
}
