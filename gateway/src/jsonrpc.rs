//! JSON-RPC 2.0 over MCP's stdio framing: one message per line, UTF-8, no
//! embedded newline, with a configurable largest message.
//!
//! [`FrameReader`] never holds more than the limit of one line: a longer
//! line is answered with [`FrameError::TooLarge`] once and its remainder is
//! discarded as it arrives, so a peer cannot make the gateway buffer without
//! bound. [`Outbox`] hands whole, already serialised lines to one writer
//! task, so a task cancelled while sending never leaves half a line behind
//! and concurrent senders never interleave.

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Invalid JSON was received.
pub const PARSE_ERROR: i64 = -32700;
/// The JSON sent is not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// The method does not exist.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid method parameters.
pub const INVALID_PARAMS: i64 = -32602;
/// Internal error.
pub const INTERNAL_ERROR: i64 = -32603;
/// Implementation-defined: too many requests in flight.
pub const SERVER_BUSY: i64 = -32000;
/// Implementation-defined: the policy refused the call.
pub const REFUSED: i64 = -32001;
/// Implementation-defined: the upstream server is unavailable.
pub const UPSTREAM_UNAVAILABLE: i64 = -32002;

/// The default largest message, either way: 16 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Reading or writing one message failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("message larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("message is not JSON: {0}")]
    Parse(serde_json::Error),
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
    #[error("stream closed")]
    Closed,
}

impl FrameError {
    /// Whether the stream may still be read after this error (the bad line
    /// is gone) rather than being broken.
    pub fn is_recoverable(&self) -> bool {
        matches!(self, FrameError::TooLarge { .. } | FrameError::Parse(_))
    }
}

/// Reads newline-delimited JSON messages of at most `max` bytes each.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    max: usize,
    line: Vec<u8>,
    discarding: bool,
}

impl<R: AsyncBufRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            max,
            line: Vec::new(),
            discarding: false,
        }
    }

    /// The next message; `Ok(None)` at the end of the stream (a last line
    /// without its newline is dropped: it was never completed).
    pub async fn next(&mut self) -> Result<Option<Value>, FrameError> {
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                return Ok(None);
            }
            let (chunk, end) = match available.iter().position(|b| *b == b'\n') {
                Some(at) => (&available[..at], Some(at + 1)),
                None => (available, None),
            };
            let used = end.unwrap_or(chunk.len());
            if !self.discarding {
                if self.line.len() + chunk.len() > self.max {
                    self.line.clear();
                    self.discarding = end.is_none();
                    self.inner.consume(used);
                    return Err(FrameError::TooLarge { limit: self.max });
                }
                self.line.extend_from_slice(chunk);
            }
            self.inner.consume(used);
            if end.is_none() {
                continue;
            }
            if self.discarding {
                self.discarding = false;
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let text = line.strip_suffix(b"\r").unwrap_or(&line);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return serde_json::from_slice(text)
                .map(Some)
                .map_err(FrameError::Parse);
        }
    }
}

/// The sending side of a stream: clone it freely. Messages are serialised
/// and size-checked by the sender, then written whole by one task.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Vec<u8>>,
    max: usize,
}

/// How many serialised messages may wait for the writer.
const OUTBOX_DEPTH: usize = 256;

impl Outbox {
    /// Starts the writer task over `w`; it ends when every `Outbox` clone
    /// is dropped or a write fails.
    pub fn spawn<W: AsyncWrite + Unpin + Send + 'static>(mut w: W, max: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(OUTBOX_DEPTH);
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                if w.write_all(&line).await.is_err() || w.flush().await.is_err() {
                    break;
                }
            }
            let _ = w.shutdown().await;
        });
        Self { tx, max }
    }

    fn encode(&self, msg: &Value) -> Result<Vec<u8>, FrameError> {
        let mut line = serde_json::to_vec(msg).map_err(FrameError::Parse)?;
        if line.len() > self.max {
            return Err(FrameError::TooLarge { limit: self.max });
        }
        line.push(b'\n');
        Ok(line)
    }

    /// Queues one message, waiting while the writer is behind.
    pub async fn send(&self, msg: &Value) -> Result<(), FrameError> {
        let line = self.encode(msg)?;
        self.tx.send(line).await.map_err(|_| FrameError::Closed)
    }

    /// Queues one message without waiting; a full queue drops it (for
    /// notifications that may be lost, and from `Drop`).
    pub fn try_send(&self, msg: &Value) -> Result<(), FrameError> {
        let line = self.encode(msg)?;
        self.tx.try_send(line).map_err(|_| FrameError::Closed)
    }

    /// Whether the writer task has gone (the peer stopped reading).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
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

    fn from_value(v: &Value) -> Self {
        Self {
            code: v
                .get("code")
                .and_then(Value::as_i64)
                .unwrap_or(INTERNAL_ERROR),
            message: v
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error without a message")
                .to_string(),
            data: v.get("data").cloned(),
        }
    }

    pub fn to_value(&self) -> Value {
        let mut e = Map::new();
        e.insert("code".into(), self.code.into());
        e.insert("message".into(), self.message.clone().into());
        if let Some(d) = &self.data {
            e.insert("data".into(), d.clone());
        }
        Value::Object(e)
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// One received message, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    Notification {
        method: String,
        params: Value,
    },
    Response {
        id: Value,
        outcome: Result<Value, RpcError>,
    },
}

impl Message {
    /// Classifies a received value; what is not a JSON-RPC 2.0 message is
    /// an error naming the id to answer, if it had one.
    pub fn parse(v: Value) -> Result<Message, (Option<Value>, RpcError)> {
        let Value::Object(mut m) = v else {
            return Err((None, RpcError::new(INVALID_REQUEST, "not an object")));
        };
        let id = m.remove("id").filter(valid_id);
        if m.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err((
                id,
                RpcError::new(INVALID_REQUEST, "jsonrpc must be \"2.0\""),
            ));
        }
        match m.remove("method") {
            Some(Value::String(method)) => {
                let params = m.remove("params").unwrap_or(Value::Null);
                Ok(match id {
                    Some(id) => Message::Request { id, method, params },
                    None => Message::Notification { method, params },
                })
            }
            Some(_) => Err((
                id,
                RpcError::new(INVALID_REQUEST, "method must be a string"),
            )),
            None => {
                let Some(id) = id else {
                    return Err((None, RpcError::new(INVALID_REQUEST, "no method and no id")));
                };
                let outcome = match (m.remove("result"), m.remove("error")) {
                    (Some(r), None) => Ok(r),
                    (None, Some(e)) => Err(RpcError::from_value(&e)),
                    _ => Err(RpcError::new(
                        INVALID_REQUEST,
                        "a response carries exactly one of result and error",
                    )),
                };
                Ok(Message::Response { id, outcome })
            }
        }
    }
}

/// JSON-RPC ids are strings or numbers (null is reserved for errors
/// answering an unreadable request).
fn valid_id(id: &Value) -> bool {
    id.is_string() || id.is_number()
}

pub fn request(id: &Value, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

pub fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

pub fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

pub fn error(id: Option<&Value>, e: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": e.to_value()})
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncWriteExt, BufReader};

    async fn read_all(input: Vec<u8>, max: usize) -> Vec<Result<Value, String>> {
        let (mut w, r) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            let _ = w.write_all(&input).await;
        });
        let mut reader = FrameReader::new(BufReader::with_capacity(1024, r), max);
        let mut out = Vec::new();
        loop {
            match reader.next().await {
                Ok(Some(v)) => out.push(Ok(v)),
                Ok(None) => return out,
                Err(e) if e.is_recoverable() => out.push(Err(e.to_string())),
                Err(e) => panic!("unrecoverable: {e}"),
            }
        }
    }

    #[tokio::test]
    async fn messages_over_64_kib_and_up_to_the_limit_are_read() {
        let big = "y".repeat(300 * 1024);
        let line = serde_json::to_vec(&json!({"v": big})).unwrap();
        let limit = line.len();
        let mut input = line.clone();
        input.extend_from_slice(b"\n{\"a\":1}\r\n\n");
        let out = read_all(input, limit).await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(
            out[0].as_ref().unwrap()["v"].as_str().unwrap().len(),
            big.len()
        );
        assert_eq!(out[1].as_ref().unwrap(), &json!({"a": 1}));
    }

    #[tokio::test]
    async fn a_line_over_the_limit_is_an_error_then_discarded() {
        let mut input = Vec::new();
        input.extend_from_slice(b"{\"a\":\"");
        input.extend(std::iter::repeat_n(b'z', 200_000));
        input.extend_from_slice(b"\"}\n{\"after\":true}\n");
        let out = read_all(input, 64 * 1024).await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0], Err("message larger than 65536 bytes".to_string()));
        assert_eq!(out[1], Ok(json!({"after": true})));
    }

    #[tokio::test]
    async fn a_line_just_over_the_limit_counts_without_its_newline() {
        let out = read_all(b"12345\n123456\n".to_vec(), 5).await;
        assert_eq!(
            out,
            vec![Ok(json!(12345)), Err("message larger than 5 bytes".into())]
        );
    }

    #[tokio::test]
    async fn bad_json_is_recoverable_and_a_truncated_tail_is_dropped() {
        let out = read_all(b"{nope\n{\"ok\":1}\n{\"cut".to_vec(), 1024).await;
        assert_eq!(out.len(), 2);
        assert!(out[0]
            .as_ref()
            .unwrap_err()
            .starts_with("message is not JSON"));
        assert_eq!(out[1], Ok(json!({"ok": 1})));
    }

    #[tokio::test]
    async fn the_outbox_refuses_what_exceeds_the_limit() {
        let (w, _r) = tokio::io::duplex(64);
        let out = Outbox::spawn(w, 16);
        assert!(matches!(
            out.send(&json!({"long": "0123456789abcdef"})).await,
            Err(FrameError::TooLarge { limit: 16 })
        ));
    }

    #[test]
    fn messages_are_classified() {
        let req = Message::parse(json!({"jsonrpc":"2.0","id":7,"method":"ping"})).unwrap();
        assert_eq!(
            req,
            Message::Request {
                id: json!(7),
                method: "ping".into(),
                params: Value::Null
            }
        );
        let resp =
            Message::parse(json!({"jsonrpc":"2.0","id":"a","error":{"code":-1,"message":"m"}}));
        assert_eq!(
            resp.unwrap(),
            Message::Response {
                id: json!("a"),
                outcome: Err(RpcError::new(-1, "m"))
            }
        );
        assert!(Message::parse(json!({"id":1,"method":"x"})).is_err());
        assert!(Message::parse(json!([1])).is_err());
        let (id, _) = Message::parse(json!({"id":3,"method":"x"})).unwrap_err();
        assert_eq!(id, Some(json!(3)), "the id to answer is kept");
        // A response with neither result nor error still fails its waiter.
        let empty = Message::parse(json!({"jsonrpc":"2.0","id":3})).unwrap();
        assert!(matches!(
            empty,
            Message::Response {
                outcome: Err(_),
                ..
            }
        ));
    }
}
