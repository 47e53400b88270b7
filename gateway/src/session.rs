//! The MCP server the agent talks to: one session per agent connection,
//! aggregating the tools of the session's upstreams under the policy's
//! names and routing each call to its upstream.
//!
//! Every request other than `initialize` and `ping` runs on its own task,
//! so a slow upstream never holds another call or a `ping`, which is
//! answered from the read loop itself. `notifications/cancelled` aborts the
//! call's task; dropping its upstream call forwards the cancellation under
//! the upstream's id. Progress notifications come back under the agent's
//! own token; an upstream's `notifications/tools/list_changed` is passed
//! on as the gateway's own. At the end of the agent's stream every task is aborted and
//! every upstream stopped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::task::JoinHandle;

use crate::hooks::{Audit, CallInfo, CallRecord, Decision, DigestFn, Policy};
use crate::jsonrpc::{self, FrameError, FrameReader, Message, Outbox, RpcError};
use crate::pool::{Pool, PoolConfig, Spawner};
use crate::upstream::{ProgressFn, UpstreamError, PROTOCOL_VERSIONS};

/// Settings of one session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Who the agent is, for the audit (the daemon vouches for it).
    pub caller: String,
    /// The upstream servers this caller may use.
    pub servers: Vec<String>,
    /// Largest message from and to the agent.
    pub max_message: usize,
    /// Most requests of the agent in flight at once.
    pub max_in_flight: usize,
    pub pool: PoolConfig,
}

impl SessionConfig {
    pub fn new(caller: impl Into<String>, servers: Vec<String>) -> Self {
        Self {
            caller: caller.into(),
            servers,
            max_message: jsonrpc::DEFAULT_MAX_MESSAGE,
            max_in_flight: 64,
            pool: PoolConfig::default(),
        }
    }
}

/// The policy, the audit and the digest the session calls.
#[derive(Clone)]
pub struct Hooks {
    pub policy: Arc<dyn Policy>,
    pub audit: Arc<dyn Audit>,
    pub digest: DigestFn,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hooks")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("reading from the agent: {0}")]
    Read(std::io::Error),
}

#[derive(Debug, Clone)]
struct Route {
    server: String,
    tool: String,
}

struct Ctx {
    cfg: SessionConfig,
    hooks: Hooks,
    out: Outbox,
    pool: Pool,
    routes: RwLock<HashMap<String, Route>>,
    in_flight: Mutex<HashMap<String, JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves one agent over `reader`/`writer` until the agent's stream ends.
pub async fn serve<R, W>(
    reader: R,
    writer: W,
    cfg: SessionConfig,
    spawner: Arc<dyn Spawner>,
    hooks: Hooks,
) -> Result<(), SessionError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let out = Outbox::spawn(writer, cfg.max_message);
    let changed = out.clone();
    let pool = Pool::new(&cfg.servers, spawner, cfg.pool.clone()).on_tools_changed(Arc::new(
        move |_server: &str| {
            let note = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
            let _ = changed.try_send(&note);
        },
    ));
    let mut frames = FrameReader::new(BufReader::new(reader), cfg.max_message);
    let ctx = Arc::new(Ctx {
        cfg,
        hooks,
        out,
        pool,
        routes: RwLock::default(),
        in_flight: Mutex::default(),
    });
    let reaper = ctx.cfg.pool.idle_timeout.map(|idle| {
        let ctx = Arc::downgrade(&ctx);
        let tick = (idle / 4).max(Duration::from_millis(20));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(ctx) = ctx.upgrade() else { return };
                ctx.pool.stop_idle();
            }
        })
    });
    let ended = loop {
        match frames.next().await {
            Ok(Some(v)) => dispatch(&ctx, v).await,
            Ok(None) => break Ok(()),
            Err(FrameError::Io(e)) => break Err(SessionError::Read(e)),
            Err(e @ FrameError::TooLarge { .. }) => {
                reply_error(
                    &ctx,
                    None,
                    RpcError::new(jsonrpc::INVALID_REQUEST, e.to_string()),
                )
                .await
            }
            Err(e) => {
                reply_error(
                    &ctx,
                    None,
                    RpcError::new(jsonrpc::PARSE_ERROR, e.to_string()),
                )
                .await
            }
        }
    };
    if let Some(r) = reaper {
        r.abort();
    }
    // Every call still in flight is aborted, and awaited: its audit record
    // (cancelled) is written before the session returns.
    let tasks: Vec<JoinHandle<()>> = lock(&ctx.in_flight).drain().map(|(_, h)| h).collect();
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    ctx.pool.shutdown().await;
    ended
}

async fn reply_error(ctx: &Ctx, id: Option<&Value>, e: RpcError) {
    let _ = ctx.out.send(&jsonrpc::error(id, &e)).await;
}

async fn reply(ctx: &Ctx, id: &Value, outcome: Result<Value, RpcError>) {
    let msg = match outcome {
        Ok(r) => jsonrpc::result(id, r),
        Err(e) => jsonrpc::error(Some(id), &e),
    };
    if let Err(e) = ctx.out.send(&msg).await {
        // Too large for the agent's limit: say so instead of the answer.
        if matches!(e, FrameError::TooLarge { .. }) {
            reply_error(
                ctx,
                Some(id),
                RpcError::new(jsonrpc::INTERNAL_ERROR, e.to_string()),
            )
            .await;
        }
    }
}

async fn dispatch(ctx: &Arc<Ctx>, v: Value) {
    let (id, method, params) = match Message::parse(v) {
        Ok(Message::Request { id, method, params }) => (id, method, params),
        Ok(Message::Notification { method, params }) => return notification(ctx, &method, &params),
        Ok(Message::Response { .. }) => return,
        Err((id, e)) => return reply_error(ctx, id.as_ref(), e).await,
    };
    match method.as_str() {
        "initialize" => reply(ctx, &id, Ok(initialize(&params))).await,
        "ping" => reply(ctx, &id, Ok(json!({}))).await,
        "resources/list" => reply(ctx, &id, Ok(json!({"resources": []}))).await,
        "resources/templates/list" => reply(ctx, &id, Ok(json!({"resourceTemplates": []}))).await,
        "prompts/list" => reply(ctx, &id, Ok(json!({"prompts": []}))).await,
        "tools/list" | "tools/call" => spawn_request(ctx, id, method, params).await,
        _ => {
            let e = RpcError::new(jsonrpc::METHOD_NOT_FOUND, format!("no method {method:?}"));
            reply(ctx, &id, Err(e)).await
        }
    }
}

fn notification(ctx: &Ctx, method: &str, params: &Value) {
    if method == "notifications/cancelled" {
        if let Some(key) = params.get("requestId").map(Value::to_string) {
            if let Some(task) = lock(&ctx.in_flight).remove(&key) {
                task.abort();
            }
        }
    }
}

fn initialize(params: &Value) -> Value {
    let asked = params.get("protocolVersion").and_then(Value::as_str);
    let version = asked
        .filter(|v| PROTOCOL_VERSIONS.contains(v))
        .unwrap_or(PROTOCOL_VERSIONS[0]);
    json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": true}},
        "serverInfo": {"name": "aivault-gateway", "version": env!("CARGO_PKG_VERSION")},
    })
}

async fn spawn_request(ctx: &Arc<Ctx>, id: Value, method: String, params: Value) {
    if let Err(e) = start_task(ctx, id.clone(), method, params) {
        reply(ctx, &id, Err(e)).await;
    }
}

/// Starts the request's task, registered under its id for cancellation;
/// the check, the start and the registration hold one lock, so the task's
/// own deregistration cannot come first.
fn start_task(ctx: &Arc<Ctx>, id: Value, method: String, params: Value) -> Result<(), RpcError> {
    let key = id.to_string();
    let mut in_flight = lock(&ctx.in_flight);
    if in_flight.contains_key(&key) {
        return Err(RpcError::new(
            jsonrpc::INVALID_REQUEST,
            "a request with this id is in flight",
        ));
    }
    if in_flight.len() >= ctx.cfg.max_in_flight {
        return Err(RpcError::new(
            jsonrpc::SERVER_BUSY,
            "too many requests in flight",
        ));
    }
    let task_ctx = ctx.clone();
    let task_key = key.clone();
    let handle = tokio::spawn(async move {
        let outcome = if method == "tools/list" {
            list_tools(&task_ctx).await
        } else {
            call_tool(&task_ctx, &params).await
        };
        // Deregister first: once the answer is out, a late cancellation
        // has nothing to abort.
        lock(&task_ctx.in_flight).remove(&task_key);
        reply(&task_ctx, &id, outcome).await;
    });
    in_flight.insert(key, handle);
    Ok(())
}

/// Lists every upstream's visible tools, each upstream asked on its own
/// task; an upstream that fails contributes nothing.
async fn list_tools(ctx: &Arc<Ctx>) -> Result<Value, RpcError> {
    // A JoinSet: aborting this task (cancellation, the agent leaving)
    // aborts the askings too.
    let mut asks = tokio::task::JoinSet::new();
    for server in ctx.pool.servers() {
        let (ctx, server) = (ctx.clone(), server.to_string());
        asks.spawn(async move {
            let tools = ctx.pool.tools(&server).await;
            (server, tools)
        });
    }
    let mut answers = HashMap::new();
    while let Some(done) = asks.join_next().await {
        if let Ok((server, Ok(tools))) = done {
            answers.insert(server, tools);
        }
    }
    let mut listed = Vec::new();
    let mut routes = HashMap::new();
    for server in ctx.pool.servers() {
        let Some(tools) = answers.get(server) else {
            continue;
        };
        for tool in tools.iter() {
            let Some(upstream_name) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            let Some(visible) = ctx.hooks.policy.visible(server, tool) else {
                continue;
            };
            let route = Route {
                server: server.to_string(),
                tool: upstream_name.to_string(),
            };
            if routes.insert(visible.name.clone(), route).is_none() {
                listed.push(visible.definition);
            }
        }
    }
    *ctx.routes.write().unwrap_or_else(|p| p.into_inner()) = routes;
    Ok(json!({ "tools": listed }))
}

fn route(ctx: &Ctx, name: &str) -> Option<Route> {
    ctx.routes
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(name)
        .cloned()
}

/// Audits the call however it ends; a call whose task is aborted before it
/// finished is recorded as cancelled.
struct Recorder<'a> {
    ctx: &'a Ctx,
    record: Option<CallRecord>,
    start: Instant,
}

impl Recorder<'_> {
    fn finish(&mut self, decision: Decision, response_bytes: usize) {
        if let Some(mut r) = self.record.take() {
            r.decision = decision;
            r.response_bytes = response_bytes;
            r.duration = self.start.elapsed();
            self.ctx.hooks.audit.record(r);
        }
    }
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        self.finish(Decision::Cancelled, 0);
    }
}

fn size(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(0, |b| b.len())
}

async fn call_tool(ctx: &Arc<Ctx>, params: &Value) -> Result<Value, RpcError> {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err(RpcError::new(
            jsonrpc::INVALID_PARAMS,
            "tools/call needs a string \"name\"",
        ));
    };
    let arguments = params
        .get("arguments")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut rec = Recorder {
        ctx,
        start: Instant::now(),
        record: Some(CallRecord {
            caller: ctx.cfg.caller.clone(),
            server: None,
            tool: name.to_string(),
            exposed: name.to_string(),
            argument_digest: (ctx.hooks.digest)(&arguments),
            decision: Decision::Cancelled,
            filter_actions: Vec::new(),
            duration: Duration::ZERO,
            request_bytes: size(params),
            response_bytes: 0,
        }),
    };
    let found = match route(ctx, name) {
        Some(r) => Some(r),
        // Not listed yet in this session (or the list changed): list once.
        None => {
            list_tools(ctx).await?;
            route(ctx, name)
        }
    };
    let Some(Route { server, tool }) = found else {
        rec.finish(Decision::UnknownTool, 0);
        return Err(RpcError::new(
            jsonrpc::INVALID_PARAMS,
            format!("unknown tool {name:?}"),
        ));
    };
    if let Some(r) = rec.record.as_mut() {
        r.server = Some(server.clone());
        r.tool = tool.clone();
    }
    let info = CallInfo {
        caller: ctx.cfg.caller.clone(),
        server: server.clone(),
        tool: tool.clone(),
        exposed: name.to_string(),
    };
    let arguments = match ctx.hooks.policy.check_call(&info, &arguments) {
        Ok(checked) => checked,
        Err(refusal) => {
            rec.finish(Decision::Refused(refusal.reason.clone()), 0);
            return Err(RpcError::new(
                jsonrpc::REFUSED,
                format!("refused: {refusal}"),
            ));
        }
    };
    let lease = match ctx.pool.get(&server).await {
        Ok(l) => l,
        Err(e) => {
            rec.finish(Decision::UpstreamUnavailable, 0);
            return Err(RpcError::new(jsonrpc::UPSTREAM_UNAVAILABLE, e.to_string()));
        }
    };
    let progress = params
        .get("_meta")
        .and_then(|m| m.get("progressToken"))
        .filter(|t| t.is_string() || t.is_number())
        .map(|token| progress_to_agent(ctx.out.clone(), token.clone()));
    let (result, decision) = match lease.upstream.call_tool(&tool, arguments, progress).await {
        Ok(r) => {
            lease.succeeded();
            (r, Decision::Allowed)
        }
        // A protocol error of the upstream reaches the agent as a tool
        // error, through the same filter as any result.
        Err(UpstreamError::Rpc(e)) => {
            let text = format!("upstream error {}: {}", e.code, e.message);
            (
                json!({"content": [{"type": "text", "text": text}], "isError": true}),
                Decision::UpstreamError,
            )
        }
        Err(e) => {
            rec.finish(Decision::UpstreamUnavailable, 0);
            return Err(RpcError::new(
                jsonrpc::UPSTREAM_UNAVAILABLE,
                format!("upstream {server}: {e}"),
            ));
        }
    };
    drop(lease);
    match ctx.hooks.policy.filter_result(&info, result) {
        Ok(filtered) => {
            if let Some(r) = rec.record.as_mut() {
                r.filter_actions = filtered.actions;
            }
            rec.finish(decision, size(&filtered.result));
            Ok(filtered.result)
        }
        Err(refusal) => {
            rec.finish(Decision::ResultRefused(refusal.reason.clone()), 0);
            Err(RpcError::new(
                jsonrpc::REFUSED,
                format!("result refused: {refusal}"),
            ))
        }
    }
}

/// Sends the upstream's progress to the agent under the agent's token.
/// Only the numbers pass: a progress `message` is upstream text that no
/// result filter has seen, so it is dropped rather than sent unfiltered.
/// Progress may be lost when the agent reads slowly; answers never are.
fn progress_to_agent(out: Outbox, token: Value) -> ProgressFn {
    Arc::new(move |p: Value| {
        let mut params = serde_json::Map::new();
        params.insert("progressToken".into(), token.clone());
        for field in ["progress", "total"] {
            if let Some(n) = p.get(field).filter(|n| n.is_number()) {
                params.insert(field.into(), n.clone());
            }
        }
        if !params.contains_key("progress") {
            return;
        }
        let note = jsonrpc::notification("notifications/progress", Value::Object(params));
        let _ = out.try_send(&note);
    })
}
