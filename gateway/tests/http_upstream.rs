//! The streamable-HTTP bridge (`aivault_gateway::http`) against a scripted
//! server standing where the broker does: every connection the connector
//! opens is a fresh in-memory pipe served by hyper, as the daemon hands a
//! fresh socket to the broker for each exchange. The ordinary MCP client
//! (`Upstream`) speaks over the bridge.
//!
//! What is checked: the handshake (the session id from `initialize` and
//! the agreed version on every later request, the route `/<capability>
//! <path>`, the `Accept` and `Content-Type` headers), notifications taken
//! with 202, answers as JSON and as server-sent events split at odd
//! places (with a progress notification first), a refused request (the
//! broker's reason in the error), a body over the limit, a forgotten
//! session ending the connection, and cancellation posted with the
//! cancelled request's stream dropped. Then the same against the official
//! Python SDK's streamable-HTTP server (`fixtures/pyserver_http.py`, over
//! plain loopback TCP: the broker's part is `tests/tests/mcp_gateway_http.rs`'s).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use aivault_gateway::http::{self, Connector, HttpTarget, Stream};
use aivault_gateway::pool::BoxFuture;
use aivault_gateway::upstream::{Upstream, UpstreamConfig, UpstreamError};
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

const MAX: usize = 64 * 1024;
const SESSION: &str = "sess-0123";

/// One request as the scripted server got it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A body of chunks: some given, then more from a channel (or none).
struct Chunks {
    ready: VecDeque<Bytes>,
    more: Option<tokio::sync::mpsc::Receiver<Bytes>>,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(b) = self.ready.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        match self.more.as_mut() {
            None => Poll::Ready(None),
            Some(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }
}

fn chunks(parts: &[&str]) -> Chunks {
    Chunks {
        ready: parts.iter().map(|p| Bytes::from(p.to_string())).collect(),
        more: None,
    }
}

#[derive(Default)]
struct Server {
    seen: Mutex<Vec<Seen>>,
    /// The sender of the held `slow` stream, to see it dropped.
    held: Mutex<Option<tokio::sync::mpsc::Sender<Bytes>>>,
}

fn respond(status: u16, content_type: &str, session: bool, body: Chunks) -> Response<Chunks> {
    let mut r = Response::builder().status(status);
    if !content_type.is_empty() {
        r = r.header("content-type", content_type);
    }
    if session {
        r = r.header("mcp-session-id", SESSION);
    }
    r.body(body).unwrap()
}

fn json_answer(v: &Value) -> Response<Chunks> {
    respond(200, "application/json", false, chunks(&[&v.to_string()]))
}

impl Server {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Chunks> {
        use http_body_util::BodyExt;
        let (parts, body) = req.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let seen = Seen {
            method: parts.method.to_string(),
            target: parts.uri.to_string(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: body.clone(),
        };
        self.seen.lock().unwrap().push(seen.clone());
        let id = body.get("id").cloned().unwrap_or(Value::Null);
        let method = body.get("method").and_then(Value::as_str).unwrap_or("");
        if method != "initialize" && seen.header("mcp-session-id") != Some(SESSION) {
            return respond(
                400,
                "application/json",
                false,
                chunks(&["{\"error\":\"no session\"}"]),
            );
        }
        match method {
            "initialize" => {
                let v = json!({"jsonrpc": "2.0", "id": id, "result": {
                    "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                    "serverInfo": {"name": "scripted", "version": "1"}}});
                respond(200, "application/json", true, chunks(&[&v.to_string()]))
            }
            "" => respond(202, "", false, chunks(&[])),
            m if m.starts_with("notifications/") => respond(202, "", false, chunks(&[])),
            "tools/list" => {
                let log = json!({"jsonrpc": "2.0", "method": "notifications/message",
                                 "params": {"level": "info", "data": "listing"}});
                let answer = json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [
                    {"name": "echo", "inputSchema": {"type": "object"}},
                    {"name": "slow", "inputSchema": {"type": "object"}}]}});
                let text = format!(
                    ": hello\r\n\r\nevent: message\r\ndata: {log}\r\n\r\ndata: {answer}\r\n\r\n"
                );
                // Split at odd places, one of them inside a CRLF.
                let cr = text.find("\r\n\r\ndata: {\"id\"").unwrap_or(text.len() / 2) + 1;
                let (a, rest) = text.split_at(7);
                let (b, c) = rest.split_at(cr - 7);
                respond(200, "text/event-stream", false, chunks(&[a, b, c]))
            }
            "tools/call" => {
                let name = body
                    .pointer("/params/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match name {
                    "echo" => json_answer(&json!({"jsonrpc": "2.0", "id": id, "result": {
                    "content": [{"type": "text", "text": "echoed"}],
                    "structuredContent": {
                        "session": seen.header("mcp-session-id"),
                        "version": seen.header("mcp-protocol-version"),
                        "accept": seen.header("accept"),
                        "content_type": seen.header("content-type"),
                        "target": seen.target,
                    }}})),
                    "denied" => respond(
                        403,
                        "application/json",
                        false,
                        chunks(&["{\"error\":\"capability web does not admit this caller\"}"]),
                    ),
                    "huge" => {
                        let big = "a".repeat(MAX + 10);
                        json_answer(
                            &json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": big}]}}),
                        )
                    }
                    "forget" => respond(404, "application/json", false, chunks(&["{}"])),
                    "silent" => {
                        respond(200, "text/event-stream", false, chunks(&[": nothing\n\n"]))
                    }
                    "slow" => {
                        let token = body.pointer("/params/_meta/progressToken").cloned();
                        let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                                              "params": {"progressToken": token, "progress": 1}});
                        let (tx, rx) = tokio::sync::mpsc::channel(1);
                        *self.held.lock().unwrap() = Some(tx);
                        let body = Chunks {
                            ready: [Bytes::from(format!("data: {progress}\n\n"))].into(),
                            more: Some(rx),
                        };
                        respond(200, "text/event-stream", false, body)
                    }
                    _ => json_answer(
                        &json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": "no such tool"}}),
                    ),
                }
            }
            _ => json_answer(
                &json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no"}}),
            ),
        }
    }
}

/// Each open is a fresh pipe whose far end the scripted server serves.
struct Pipes(Arc<Server>);

impl Connector for Pipes {
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn Stream>, String>> {
        Box::pin(async move {
            let (ours, theirs) = tokio::io::duplex(1 << 20);
            let server = Arc::clone(&self.0);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let server = Arc::clone(&server);
                    async move { Ok::<_, Infallible>(server.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(theirs), service)
                    .await;
            });
            Ok(Box::new(ours) as Box<dyn Stream>)
        })
    }
}

async fn connect() -> (Arc<Server>, Upstream, Box<dyn Send>) {
    let server = Arc::new(Server::default());
    let target = HttpTarget::new("web", "example/mcp", "mcp.example.com", "/mcp", MAX);
    let spawned = http::bridge(Arc::new(Pipes(Arc::clone(&server))), target);
    let cfg = UpstreamConfig {
        name: "web".into(),
        max_message: MAX,
    };
    let up = Upstream::connect(spawned.reader, spawned.writer, cfg)
        .await
        .unwrap();
    (server, up, spawned.process)
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_handshake_carries_the_session_and_version_to_every_later_request() {
    let (server, up, _guard) = connect().await;
    assert_eq!(up.protocol_version(), "2025-06-18");
    let tools = up.list_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["echo", "slow"]);
    let r = up.call_tool("echo", json!({}), None).await.unwrap();
    let sc = &r["structuredContent"];
    assert_eq!(sc["session"], SESSION, "{r}");
    assert_eq!(sc["version"], "2025-06-18", "{r}");
    assert_eq!(sc["accept"], "application/json, text/event-stream");
    assert_eq!(sc["content_type"], "application/json");
    assert_eq!(sc["target"], "/example/mcp/mcp");
    let seen = server.seen.lock().unwrap().clone();
    let methods: Vec<&str> = seen
        .iter()
        .map(|s| s.body["method"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        methods,
        [
            "initialize",
            "notifications/initialized",
            "tools/list",
            "tools/call"
        ]
    );
    assert!(seen.iter().all(|s| s.method == "POST"));
    // The handshake had no session to send; everything after it did.
    assert_eq!(seen[0].header("mcp-session-id"), None);
    assert!(seen[1..]
        .iter()
        .all(|s| s.header("mcp-session-id") == Some(SESSION)
            && s.header("mcp-protocol-version") == Some("2025-06-18")));
}

#[tokio::test]
async fn failures_are_answers_to_the_request_not_hangs() {
    let (_server, up, _guard) = connect().await;
    let e = up.call_tool("denied", json!({}), None).await.unwrap_err();
    let UpstreamError::Rpc(e) = e else {
        panic!("{e}")
    };
    assert!(e.message.contains("HTTP 403"), "{}", e.message);
    assert!(
        e.message.contains("does not admit this caller"),
        "{}",
        e.message
    );

    let e = up.call_tool("huge", json!({}), None).await.unwrap_err();
    assert!(e.to_string().contains("over the limit"), "{e}");

    let e = up.call_tool("silent", json!({}), None).await.unwrap_err();
    assert!(e.to_string().contains("without a response"), "{e}");

    // An upstream error is passed on as it is.
    let e = up.call_tool("nothing", json!({}), None).await.unwrap_err();
    assert!(e.to_string().contains("no such tool"), "{e}");
    // And the connection still serves.
    assert!(up.call_tool("echo", json!({}), None).await.is_ok());
    assert!(!up.is_closed());
}

#[tokio::test]
async fn a_forgotten_session_ends_the_connection() {
    let (_server, up, _guard) = connect().await;
    let e = up.call_tool("forget", json!({}), None).await.unwrap_err();
    assert!(matches!(e, UpstreamError::Closed(_)), "{e}");
    assert!(up.is_closed());
}

#[tokio::test]
async fn progress_comes_back_and_a_dropped_call_is_cancelled_by_a_post() {
    let (server, up, _guard) = connect().await;
    let (tx, rx) = tokio::sync::oneshot::channel::<Value>();
    let tx = Mutex::new(Some(tx));
    let progress: aivault_gateway::upstream::ProgressFn = Arc::new(move |p| {
        if let Some(tx) = tx.lock().unwrap().take() {
            let _ = tx.send(p);
        }
    });
    let call = up.call_tool("slow", json!({}), Some(progress));
    tokio::select! {
        r = call => panic!("the slow call finished: {r:?}"),
        p = rx => assert_eq!(p.unwrap()["progress"], 1),
    }
    // The call's future is gone: a cancellation is posted for its id.
    let slow_id = server
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.body.pointer("/params/name") == Some(&json!("slow")))
        .map(|s| s.body["id"].clone())
        .unwrap();
    eventually("the cancellation is posted", || {
        server.seen.lock().unwrap().iter().any(|s| {
            s.body["method"] == "notifications/cancelled"
                && s.body.pointer("/params/requestId") == Some(&slow_id)
        })
    })
    .await;
    // And the cancelled request's stream is dropped.
    eventually("the held stream is dropped", || {
        server
            .held
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|tx| tx.is_closed())
    })
    .await;
    assert!(up.call_tool("echo", json!({}), None).await.is_ok());
}

#[tokio::test]
async fn a_broken_answer_fails_the_start_and_dropping_the_guard_ends_the_bridge() {
    // A server answering initialize with something that is not JSON.
    struct Broken;
    impl Connector for Broken {
        fn open(&self) -> BoxFuture<'_, Result<Box<dyn Stream>, String>> {
            Box::pin(async move {
                let (ours, theirs) = tokio::io::duplex(4096);
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut theirs = theirs;
                    let mut buf = [0u8; 4096];
                    let _ = theirs.read(&mut buf).await;
                    let _ = theirs
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\n{nope")
                        .await;
                });
                Ok(Box::new(ours) as Box<dyn Stream>)
            })
        }
    }
    let target = HttpTarget::new("web", "c", "h", "/", MAX);
    let spawned = http::bridge(Arc::new(Broken), target);
    let cfg = UpstreamConfig {
        name: "web".into(),
        max_message: MAX,
    };
    let e = Upstream::connect(spawned.reader, spawned.writer, cfg)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not JSON"), "{e}");

    // A connector that cannot open: the handshake fails with its reason.
    struct Refusing;
    impl Connector for Refusing {
        fn open(&self) -> BoxFuture<'_, Result<Box<dyn Stream>, String>> {
            Box::pin(async { Err("the broker refused: no capability".to_string()) })
        }
    }
    let spawned = http::bridge(
        Arc::new(Refusing),
        HttpTarget::new("web", "c", "h", "/", MAX),
    );
    let (reader, writer, guard) = (spawned.reader, spawned.writer, spawned.process);
    let cfg = UpstreamConfig {
        name: "web".into(),
        max_message: MAX,
    };
    let e = Upstream::connect(reader, writer, cfg).await.unwrap_err();
    assert!(e.to_string().contains("no capability"), "{e}");
    drop(guard);
}

/// Each open is a fresh TCP connection to `addr`.
struct Tcp(std::net::SocketAddr);

impl Connector for Tcp {
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn Stream>, String>> {
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(self.0)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Box::new(s) as Box<dyn Stream>)
        })
    }
}

/// The Python SDK's server, killed on drop.
struct PyServer(std::process::Child);

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_server_is_listed_called_and_cancelled_over_streamable_http() {
    let python = common::deps().join("venv/bin/python");
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pyserver_http.py");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = common::temp_log("http");
    let _server = PyServer(
        std::process::Command::new(python)
            .arg(fixture)
            .env_clear()
            .env("FIXTURE_HTTP_PORT", port.to_string())
            .env("FIXTURE_LOG", &log)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "the Python server never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let max = 1 << 20;
    let target = HttpTarget {
        server: "py".into(),
        target: "/mcp".into(),
        host: format!("127.0.0.1:{port}"),
        max_message: max,
    };
    let spawned = http::bridge(Arc::new(Tcp(addr)), target);
    let cfg = UpstreamConfig {
        name: "py".into(),
        max_message: max,
    };
    let up = Upstream::connect(spawned.reader, spawned.writer, cfg)
        .await
        .unwrap();
    assert_eq!(up.protocol_version(), "2025-11-25");
    let tools = up.list_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    for want in ["slow", "big", "echo_env", "pid"] {
        assert!(names.contains(&want), "{names:?}");
    }
    let big = up
        .call_tool("big", json!({"size": 300_000}), None)
        .await
        .unwrap();
    assert_eq!(big["content"][0]["text"].as_str().unwrap().len(), 300_000);

    // Progress comes back on the request's event stream.
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = Arc::clone(&count);
    let progress: aivault_gateway::upstream::ProgressFn = Arc::new(move |_| {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    let slow = up
        .call_tool("slow", json!({"seconds": 0.2}), Some(progress))
        .await
        .unwrap();
    assert_eq!(slow["content"][0]["text"], "slept 0.2", "{slow}");
    assert!(count.load(std::sync::atomic::Ordering::Relaxed) > 0);

    // A dropped call is cancelled at the server.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = Mutex::new(Some(tx));
    let progress: aivault_gateway::upstream::ProgressFn = Arc::new(move |_| {
        if let Some(tx) = tx.lock().unwrap().take() {
            let _ = tx.send(());
        }
    });
    tokio::select! {
        r = up.call_tool("slow", json!({"seconds": 60}), Some(progress)) => panic!("finished: {r:?}"),
        _ = rx => {}
    }
    eventually("the server records the cancellation", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("slow cancelled"))
    })
    .await;
    assert!(up.call_tool("pid", json!({}), None).await.is_ok());
    drop(spawned.process);
}
