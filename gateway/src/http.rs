//! Streamable-HTTP upstreams (MCP's `Streamable HTTP` transport, client
//! side), reached through the broker: every message the session sends is
//! one `POST` on a fresh connection a [`Connector`] opens, and whatever
//! the server answers — one JSON message, a batch, or server-sent events
//! ([`crate::sse`]) carrying the answer and notifications such as progress
//! — comes back as newline-delimited JSON-RPC.
//!
//! [`bridge`] makes such an upstream look like a stdio one: it returns a
//! [`Spawned`] whose byte streams the ordinary [`crate::upstream::Upstream`]
//! speaks over, so namespacing, visibility, pins, filters, audit and
//! cancellation work as for any upstream. The bridge itself decides
//! nothing: it frames, carries `Mcp-Session-Id` (from the answer to
//! `initialize`) and `MCP-Protocol-Version` (agreed there) on every later
//! request, and turns what HTTP says into JSON-RPC:
//!
//! * `202 Accepted` (a notification or a response taken): nothing;
//! * a failed status, a body over the limit or a stream that ends without
//!   the answer: an error answer to the request that was posted (the
//!   broker's own refusals name the reason; nothing of the credential,
//!   which the broker alone holds, can be in them);
//! * `404` to a request carrying a session: the server forgot the
//!   session; the bridge ends, the pool restarts the upstream, and the new
//!   connection initializes afresh.
//!
//! `notifications/cancelled` is posted like any message, and the stream of
//! the cancelled request is dropped. No message larger than the limit is
//! ever buffered. Dropping the [`Spawned::process`] guard ends every
//! exchange of the upstream.
//!
//! Not done: the `GET` stream for messages the server sends outside any
//! request (a `tools/list_changed` is seen only on a request's stream),
//! resuming a broken stream by `Last-Event-ID`, and `DELETE` of the
//! session at the end (it expires on the server).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::task::{AbortHandle, JoinSet};

use crate::jsonrpc::{self, FrameReader, Outbox, RpcError};
use crate::pool::{BoxFuture, Spawned};
use crate::sse;

/// A connection to the broker: any byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Opens one fresh connection on which the bridge makes one exchange.
pub trait Connector: Send + Sync + 'static {
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn Stream>, String>>;
}

/// Where an upstream's requests go.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    /// The server's name in policy, for messages.
    pub server: String,
    /// The request target at the broker: `/<capability><path>`.
    pub target: String,
    /// The url's host, for `Host` (the broker sets its own).
    pub host: String,
    /// Largest message either way (a body, an event).
    pub max_message: usize,
}

impl HttpTarget {
    /// The broker's route for `capability` and the url's `path`.
    pub fn new(server: &str, capability: &str, host: &str, path: &str, max: usize) -> Self {
        HttpTarget {
            server: server.into(),
            target: format!("/{capability}{path}"),
            host: host.into(),
            max_message: max,
        }
    }
}

/// The longest error text taken from an HTTP answer.
const MAX_REASON: usize = 300;
/// The longest `Mcp-Session-Id` kept.
const MAX_SESSION_ID: usize = 1024;
/// Bytes the duplex between bridge and session may hold either way.
const PIPE: usize = 64 * 1024;
/// How long the exchange of a notification (or of a response to the
/// server) may take: nobody waits for it, so nothing else would end it.
const NOTIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Ends the bridge when the session lets go of the upstream.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the bridge learned in the handshake, and the streams in flight.
#[derive(Default)]
struct State {
    session: Mutex<Option<String>>,
    version: Mutex<Option<String>>,
    /// Request id (as JSON text) → the task carrying its exchange.
    in_flight: Mutex<HashMap<String, AbortHandle>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An upstream reached over HTTP, as byte streams of newline-delimited
/// JSON-RPC for [`crate::upstream::Upstream::connect`]. Must be called
/// within a tokio runtime.
pub fn bridge(connector: Arc<dyn Connector>, target: HttpTarget) -> Spawned {
    let (session_side, bridge_side) = tokio::io::duplex(PIPE);
    let (session_r, session_w) = tokio::io::split(session_side);
    let (bridge_r, bridge_w) = tokio::io::split(bridge_side);
    let out = Outbox::spawn(bridge_w, target.max_message);
    let task = tokio::spawn(run(connector, Arc::new(target), bridge_r, out));
    Spawned {
        reader: Box::new(session_r),
        writer: Box::new(session_w),
        process: Box::new(AbortOnDrop(task.abort_handle())),
    }
}

/// Why an exchange failed.
enum Failed {
    /// The server no longer knows the session: the connection ends.
    SessionGone,
    /// This exchange failed; the request gets an error answer.
    Exchange(String),
}

async fn run<R: AsyncRead + Unpin>(
    connector: Arc<dyn Connector>,
    target: Arc<HttpTarget>,
    reader: R,
    out: Outbox,
) {
    let state = Arc::new(State::default());
    let mut frames = FrameReader::new(BufReader::new(reader), target.max_message);
    let mut tasks = JoinSet::new();
    let (gone_tx, mut gone_rx) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        while tasks.try_join_next().is_some() {}
        let next = tokio::select! {
            n = frames.next() => n,
            _ = gone_rx.recv() => break,
        };
        let msg = match next {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) if e.is_recoverable() => continue,
            Err(_) => break,
        };
        let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
        let id = match (&method, msg.get("id")) {
            (Some(_), Some(id)) if !id.is_null() => Some(id.clone()),
            _ => None,
        };
        if method.as_deref() == Some("notifications/cancelled") {
            let cancelled = msg
                .pointer("/params/requestId")
                .map(Value::to_string)
                .and_then(|k| lock(&state.in_flight).remove(&k));
            if let Some(task) = cancelled {
                task.abort();
            }
        }
        let exchange = exchange(
            Arc::clone(&connector),
            Arc::clone(&target),
            Arc::clone(&state),
            msg,
            id.clone(),
            method.as_deref() == Some("initialize"),
            out.clone(),
        );
        if method.as_deref() == Some("initialize") {
            // Inline: the session id is known before anything else is sent.
            if exchange.await.is_err() {
                break;
            }
            continue;
        }
        let gone = gone_tx.clone();
        // Held while spawning: the exchange removes its entry under the
        // same lock, so one that ends at once leaves none behind.
        let mut in_flight = lock(&state.in_flight);
        let handle = tasks.spawn(async move {
            if exchange.await.is_err() {
                let _ = gone.try_send(());
            }
        });
        if let Some(id) = id {
            in_flight.insert(id.to_string(), handle);
        }
        drop(in_flight);
    }
    tasks.abort_all();
}

/// Posts one message and delivers what comes back; `Err` when the
/// upstream's session is gone.
async fn exchange(
    connector: Arc<dyn Connector>,
    target: Arc<HttpTarget>,
    state: Arc<State>,
    msg: Value,
    id: Option<Value>,
    initialize: bool,
    out: Outbox,
) -> Result<(), ()> {
    let mut answered = false;
    let posted = post(
        &*connector,
        &target,
        &state,
        &msg,
        id.as_ref(),
        initialize,
        &out,
        &mut answered,
    );
    // A request is bounded by whoever waits for its answer (the call's
    // timeout, which cancels it; the pool's start timeout).
    let outcome = match id {
        Some(_) => posted.await,
        None => tokio::time::timeout(NOTIFY_TIMEOUT, posted)
            .await
            .unwrap_or_else(|_| Err(Failed::Exchange("no answer in time".into()))),
    };
    if let Some(id) = &id {
        lock(&state.in_flight).remove(&id.to_string());
    }
    let why = match outcome {
        Ok(()) if answered || id.is_none() => return Ok(()),
        Ok(()) => "the upstream's answer ended without a response".to_string(),
        Err(Failed::SessionGone) => return Err(()),
        Err(Failed::Exchange(why)) => why,
    };
    if let Some(id) = &id {
        let e = RpcError::new(
            jsonrpc::INTERNAL_ERROR,
            format!("HTTP upstream {}: {why}", target.server),
        );
        let _ = out.send(&jsonrpc::error(Some(id), &e)).await;
    }
    Ok(())
}

fn bounded(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON)
        .collect()
}

/// The media type of a response, lower-cased, without parameters.
fn media_type(resp: &Response<Incoming>) -> String {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// A session id as the specification allows it: visible ASCII.
fn session_id(resp: &Response<Incoming>) -> Option<String> {
    let v = resp.headers().get("mcp-session-id")?.to_str().ok()?;
    let ok =
        !v.is_empty() && v.len() <= MAX_SESSION_ID && v.bytes().all(|b| (0x21..0x7f).contains(&b));
    ok.then(|| v.to_string())
}

/// Why an HTTP answer failed, from its status and (the start of) its body:
/// the broker answers `{"error": "..."}`.
pub fn failure_reason(status: StatusCode, body: &[u8]) -> String {
    let said = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(bounded))
        .or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = bounded(text.trim());
            (!text.is_empty()).then_some(text)
        });
    match said {
        Some(s) => format!("HTTP {}: {s}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

#[allow(clippy::too_many_arguments)]
async fn post(
    connector: &dyn Connector,
    target: &HttpTarget,
    state: &State,
    msg: &Value,
    id: Option<&Value>,
    initialize: bool,
    out: &Outbox,
    answered: &mut bool,
) -> Result<(), Failed> {
    let fail = |what: &str, e: &dyn std::fmt::Display| Failed::Exchange(format!("{what}: {e}"));
    let body = serde_json::to_vec(msg).map_err(|e| fail("encoding", &e))?;
    if body.len() > target.max_message {
        return Err(Failed::Exchange("the message is over the limit".into()));
    }
    let io = connector
        .open()
        .await
        .map_err(|e| Failed::Exchange(format!("no connection to the broker: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| fail("the connection", &e))?;
    let _conn = AbortOnDrop(
        tokio::spawn(async move {
            let _ = conn.await;
        })
        .abort_handle(),
    );
    let session = lock(&state.session).clone();
    let version = lock(&state.version).clone();
    let mut req = Request::post(target.target.as_str())
        .header(HOST, target.host.as_str())
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, "application/json, text/event-stream");
    if let Some(s) = &session {
        req = req.header("mcp-session-id", s.as_str());
    }
    if let Some(v) = &version {
        req = req.header("mcp-protocol-version", v.as_str());
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| fail("the request", &e))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| fail("the exchange", &e))?;
    let status = resp.status();
    if status == StatusCode::NOT_FOUND && session.is_some() {
        return Err(Failed::SessionGone);
    }
    if !status.is_success() {
        let body = read_limited(resp.into_body(), 4096)
            .await
            .unwrap_or_default();
        return Err(Failed::Exchange(failure_reason(status, &body)));
    }
    if initialize {
        if let Some(s) = session_id(&resp) {
            *lock(&state.session) = Some(s);
        }
    }
    if status == StatusCode::ACCEPTED {
        return Ok(());
    }
    match media_type(&resp).as_str() {
        "application/json" => {
            let body = read_limited(resp.into_body(), target.max_message)
                .await
                .map_err(Failed::Exchange)?;
            if body.iter().all(u8::is_ascii_whitespace) {
                return Ok(());
            }
            let v: Value = serde_json::from_slice(&body)
                .map_err(|_| Failed::Exchange("the answer is not JSON".into()))?;
            let batch = match v {
                Value::Array(items) => items,
                other => vec![other],
            };
            for m in batch {
                if let Some(m) = deliver(m, id, initialize, state, answered) {
                    let _ = out.send(&m).await;
                }
            }
            Ok(())
        }
        "text/event-stream" => {
            let mut parser = sse::Parser::new(target.max_message);
            let mut body = resp.into_body();
            let mut events = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| fail("the event stream", &e))?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                parser
                    .feed(&data, &mut events)
                    .map_err(|e| fail("the event stream", &e))?;
                for ev in events.drain(..) {
                    if ev.event != "message" {
                        continue;
                    }
                    // An event that is no JSON names no waiter: dropped.
                    let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
                        continue;
                    };
                    if let Some(m) = deliver(v, id, initialize, state, answered) {
                        let _ = out.send(&m).await;
                    }
                }
                // The answer is what the stream was for.
                if *answered {
                    return Ok(());
                }
            }
            Ok(())
        }
        "" if id.is_none() => Ok(()),
        other => Err(Failed::Exchange(format!(
            "an answer of type {:?}, neither JSON nor an event stream",
            bounded(other)
        ))),
    }
}

/// Passes a message on, noting the answer to `id` (and, for `initialize`,
/// the version agreed).
fn deliver(
    v: Value,
    id: Option<&Value>,
    initialize: bool,
    state: &State,
    answered: &mut bool,
) -> Option<Value> {
    if !v.is_object() {
        return None;
    }
    let is_response = v.get("method").is_none();
    if is_response && id.is_some() && v.get("id") == id {
        *answered = true;
        if initialize {
            let version = v
                .pointer("/result/protocolVersion")
                .and_then(Value::as_str)
                .filter(|s| s.len() <= 64 && s.bytes().all(|b| (0x21..0x7f).contains(&b)));
            if let Some(version) = version {
                *lock(&state.version) = Some(version.to_string());
            }
        }
    }
    Some(v)
}

/// The whole body, refused beyond `max` bytes.
async fn read_limited(body: Incoming, max: usize) -> Result<Vec<u8>, String> {
    let collected = http_body_util::Limited::new(body, max)
        .collect()
        .await
        .map_err(|_| format!("the answer is over the limit of {max} bytes or broke off"))?;
    Ok(collected.to_bytes().to_vec())
}
