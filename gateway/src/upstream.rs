//! The MCP client side of one upstream server: the `initialize` handshake,
//! `tools/list` across pages, and `tools/call` under ids of the gateway's
//! own, over any pair of byte streams (the jailed server's stdout and stdin).
//!
//! The agent's ids and progress tokens never reach the upstream: every
//! request gets the next number of this connection, and a call that wants
//! progress gets a fresh token whose notifications are handed back to the
//! caller's [`ProgressFn`]. Dropping a [`Upstream::call_tool`] future before
//! it finishes sends `notifications/cancelled` for its upstream id, so
//! aborting the task that waits is how a cancellation is forwarded.
//!
//! One reader task per connection routes responses to their waiters,
//! answers the upstream's `ping`, refuses its other requests (the gateway
//! offers no client capabilities: no sampling, roots or elicitation), and
//! marks the connection closed at end of stream, failing every waiter.
//!
//! Hand-rolled rather than built on `rmcp`: see docs/mcp-gateway.md.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::sync::{oneshot, watch};

use crate::jsonrpc::{self, FrameError, FrameReader, Message, Outbox, RpcError};

/// The protocol revisions this client speaks, newest first. The first is
/// offered; the server's answer must be one of them.
pub const PROTOCOL_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// Most pages of `tools/list` followed, and most tools kept, per upstream:
/// a server answering with cursors forever cannot hold the gateway.
const MAX_PAGES: usize = 64;
const MAX_TOOLS: usize = 4096;

/// Receives the `params` of each `notifications/progress` for one call,
/// without the upstream's token.
pub type ProgressFn = Arc<dyn Fn(Value) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream connection ended: {0}")]
    Closed(String),
    #[error("upstream answered with an error: {0}")]
    Rpc(RpcError),
    #[error("upstream speaks protocol version {0:?}, which the gateway does not")]
    UnsupportedVersion(String),
    #[error("upstream answered initialize without a protocol version")]
    NoVersion,
    #[error("request not sent: {0}")]
    Send(jsonrpc::FrameError),
    #[error("upstream tools/list is malformed")]
    BadToolList,
}

/// Settings of one connection.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// The server's name in policy, for error messages.
    pub name: String,
    /// Largest message either way.
    pub max_message: usize,
}

type Waiter = oneshot::Sender<Result<Value, RpcError>>;

#[derive(Default)]
struct Shared {
    pending: Mutex<HashMap<u64, Waiter>>,
    progress: Mutex<HashMap<String, ProgressFn>>,
    /// Why the connection ended, once it has.
    ended: Mutex<Option<String>>,
}

/// A live connection to one upstream; clones share it.
#[derive(Clone)]
pub struct Upstream {
    name: Arc<str>,
    out: Outbox,
    shared: Arc<Shared>,
    next_id: Arc<AtomicU64>,
    closed: watch::Receiver<bool>,
    tools_changed: watch::Receiver<u64>,
    protocol_version: Arc<str>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("protocol_version", &self.protocol_version)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Upstream {
    /// Connects over `reader`/`writer` and completes the handshake.
    pub async fn connect<R, W>(
        reader: R,
        writer: W,
        cfg: UpstreamConfig,
    ) -> Result<Self, UpstreamError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let out = Outbox::spawn(writer, cfg.max_message);
        let shared = Arc::new(Shared::default());
        let (closed_tx, closed) = watch::channel(false);
        let (changed_tx, tools_changed) = watch::channel(0u64);
        let frames = FrameReader::new(BufReader::new(reader), cfg.max_message);
        tokio::spawn(read_loop(
            frames,
            out.clone(),
            shared.clone(),
            closed_tx,
            changed_tx,
        ));
        let mut up = Upstream {
            name: cfg.name.into(),
            out,
            shared,
            next_id: Arc::new(AtomicU64::new(1)),
            closed,
            tools_changed,
            protocol_version: PROTOCOL_VERSIONS[0].into(),
        };
        let init = up
            .request(
                "initialize",
                json!({
                    "protocolVersion": PROTOCOL_VERSIONS[0],
                    "capabilities": {},
                    "clientInfo": {"name": "aivault-gateway", "version": env!("CARGO_PKG_VERSION")},
                }),
            )
            .await?;
        let version = init
            .get("protocolVersion")
            .and_then(Value::as_str)
            .ok_or(UpstreamError::NoVersion)?;
        if !PROTOCOL_VERSIONS.contains(&version) {
            return Err(UpstreamError::UnsupportedVersion(
                version.chars().take(64).collect(),
            ));
        }
        up.protocol_version = version.into();
        up.notify("notifications/initialized", Value::Null).await?;
        Ok(up)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The revision agreed in the handshake.
    pub fn protocol_version(&self) -> &str {
        &self.protocol_version
    }

    /// Whether both are handles of one connection (not of a restart).
    pub fn same_connection(&self, other: &Upstream) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Whether the upstream's stream has ended.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    fn ended(&self) -> UpstreamError {
        let why = lock(&self.shared.ended).clone();
        UpstreamError::Closed(why.unwrap_or_else(|| "end of stream".into()))
    }

    /// Resolves when the upstream's stream ends.
    pub async fn closed(&self) {
        let mut rx = self.closed.clone();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Counts `notifications/tools/list_changed` received; a cached tool
    /// list older than the current count is stale.
    pub fn tools_generation(&self) -> u64 {
        *self.tools_changed.borrow()
    }

    /// Resolves at the next `notifications/tools/list_changed` after the
    /// generation `seen`; `false` when the connection ended first.
    pub async fn tools_changed_after(&self, seen: u64) -> bool {
        let mut rx = self.tools_changed.clone();
        let changed = rx.wait_for(|g| *g > seen).await.is_ok();
        changed
    }

    async fn notify(&self, method: &str, params: Value) -> Result<(), UpstreamError> {
        let msg = if params.is_null() {
            json!({"jsonrpc": "2.0", "method": method})
        } else {
            jsonrpc::notification(method, params)
        };
        self.out.send(&msg).await.map_err(UpstreamError::Send)
    }

    /// Sends one request and waits for its answer; dropping the future
    /// forgets the waiter and tells the upstream the request is cancelled.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, UpstreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.send_and_wait(id, method, params, None).await
    }

    async fn send_and_wait(
        &self,
        id: u64,
        method: &str,
        params: Value,
        token: Option<String>,
    ) -> Result<Value, UpstreamError> {
        let (tx, rx) = oneshot::channel();
        lock(&self.shared.pending).insert(id, tx);
        let mut guard = InFlight {
            up: self,
            id,
            token,
            done: false,
        };
        if let Err(e) = self
            .out
            .send(&jsonrpc::request(&json!(id), method, params))
            .await
        {
            guard.done = true;
            return Err(UpstreamError::Send(e));
        }
        // Biased: the reader delivers every answer before it marks the
        // connection closed, so an answer that arrived is never lost to
        // the end of the stream that followed it.
        let outcome = tokio::select! {
            biased;
            r = rx => r.map_err(|_| self.ended()),
            () = self.closed() => Err(self.ended()),
        };
        guard.done = true;
        outcome?.map_err(UpstreamError::Rpc)
    }

    /// Every tool the upstream lists, following `nextCursor`, as received.
    pub async fn list_tools(&self) -> Result<Vec<Value>, UpstreamError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let page = self.request("tools/list", params).await?;
            let list = page
                .get("tools")
                .and_then(Value::as_array)
                .ok_or(UpstreamError::BadToolList)?;
            tools.extend(
                list.iter()
                    .filter(|t| t.get("name").is_some_and(Value::is_string))
                    .cloned(),
            );
            if tools.len() > MAX_TOOLS {
                tools.truncate(MAX_TOOLS);
                break;
            }
            match page.get("nextCursor").and_then(Value::as_str) {
                Some(c) if !c.is_empty() => cursor = Some(c.to_string()),
                _ => break,
            }
        }
        Ok(tools)
    }

    /// Calls `name` with `arguments`; with `progress`, the upstream is
    /// given a token of this connection and each of its progress
    /// notifications is handed to `progress`.
    pub async fn call_tool(
        &self,
        name: &str,
        arguments: Value,
        progress: Option<ProgressFn>,
    ) -> Result<Value, UpstreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut params = json!({"name": name, "arguments": arguments});
        let token = progress.map(|p| {
            let token = format!("gw-{id}");
            lock(&self.shared.progress).insert(token.clone(), p);
            params["_meta"] = json!({"progressToken": token});
            token
        });
        self.send_and_wait(id, "tools/call", params, token).await
    }

    /// Asks the upstream whether it is alive.
    pub async fn ping(&self) -> Result<(), UpstreamError> {
        self.request("ping", json!({})).await.map(drop)
    }
}

/// Removes a request's waiter and progress route however its future ends;
/// one dropped before its answer tells the upstream it is cancelled.
struct InFlight<'a> {
    up: &'a Upstream,
    id: u64,
    token: Option<String>,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(&self.up.shared.pending).remove(&self.id);
        if let Some(t) = &self.token {
            lock(&self.up.shared.progress).remove(t);
        }
        if !self.done && !self.up.is_closed() {
            let cancel = jsonrpc::notification(
                "notifications/cancelled",
                json!({"requestId": self.id, "reason": "cancelled by the client"}),
            );
            let _ = self.up.out.try_send(&cancel);
        }
    }
}

async fn read_loop<R: tokio::io::AsyncBufRead + Unpin>(
    mut frames: FrameReader<R>,
    out: Outbox,
    shared: Arc<Shared>,
    closed: watch::Sender<bool>,
    tools_changed: watch::Sender<u64>,
) {
    let why = loop {
        let value = match frames.next().await {
            Ok(Some(v)) => v,
            Ok(None) => break "end of stream".to_string(),
            // An unreadable line names no waiter: dropped.
            Err(FrameError::Parse(_)) => continue,
            // An oversized one cannot be told apart from the answer some
            // waiter needs: the upstream broke the limit, and the
            // connection ends rather than leave that waiter hanging.
            Err(e) => break e.to_string(),
        };
        match Message::parse(value) {
            Ok(Message::Response { id, outcome }) => {
                let waiter = id.as_u64().and_then(|id| lock(&shared.pending).remove(&id));
                if let Some(w) = waiter {
                    let _ = w.send(outcome);
                }
            }
            Ok(Message::Request { id, method, .. }) => {
                let reply = if method == "ping" {
                    jsonrpc::result(&id, json!({}))
                } else {
                    let e = RpcError::new(
                        jsonrpc::METHOD_NOT_FOUND,
                        "the gateway offers no client capabilities",
                    );
                    jsonrpc::error(Some(&id), &e)
                };
                let _ = out.send(&reply).await;
            }
            Ok(Message::Notification { method, params }) => match method.as_str() {
                "notifications/progress" => {
                    let route = params
                        .get("progressToken")
                        .and_then(Value::as_str)
                        .and_then(|t| lock(&shared.progress).get(t).cloned());
                    if let (Some(f), Value::Object(mut p)) = (route, params) {
                        p.remove("progressToken");
                        f(Value::Object(p));
                    }
                }
                "notifications/tools/list_changed" => tools_changed.send_modify(|n| *n += 1),
                _ => {}
            },
            Err(_) => {}
        }
    };
    *lock(&shared.ended) = Some(why);
    let _ = closed.send(true);
    lock(&shared.pending).clear();
    lock(&shared.progress).clear();
}
