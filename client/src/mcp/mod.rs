//! `vaultctl mcp`: a Model Context Protocol server on stdio, for AI agents.
//!
//! The agent's MCP client starts `vaultctl mcp` as the agent's own user; this
//! process is an ordinary client of `aivaultd`, which identifies it by the
//! socket's peer credentials like any other caller. Nothing here can widen
//! what that user may do, and no tool returns a secret's value (see
//! [`tools`] for why that holds by construction).
//!
//! Transport: newline-delimited JSON-RPC 2.0 on stdin/stdout, logs on
//! stderr ([`jsonrpc`]). Lifecycle: `initialize` negotiates 2025-03-26,
//! 2025-06-18 or 2025-11-25 (a version we speak is echoed, anything else is
//! answered with our latest); the stateless 2026-07-28 revision is served on
//! a best-effort basis: `server/discover`, and per-request
//! `_meta["io.modelcontextprotocol/protocolVersion"]`, whose results carry
//! `resultType`. Requests: `initialize`, `ping`, `server/discover`,
//! `tools/list`, `tools/call`; notifications: `notifications/initialized`,
//! `notifications/cancelled`.
//!
//! Concurrency: every `tools/call` runs on its own thread with its own daemon
//! connection, so a slow `secret_run` never delays a `secret_list`;
//! `notifications/cancelled` cuts the run's connection, and the daemon then
//! kills the run's whole process tree ([`run::Cancel`]). A `secret_run`
//! whose request carries `_meta.progressToken` reports
//! `notifications/progress` while it lasts ([`progress`]).

mod capability;
mod capture;
mod jsonrpc;
mod progress;
mod result;
mod run;
mod tools;

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use serde_json::{json, Value};

use jsonrpc::{Line, Output, RpcError};
use progress::Progress;
use run::Cancel;

/// Versions reachable through `initialize`, oldest first.
pub const HANDSHAKE_VERSIONS: &[&str] = &["2025-03-26", "2025-06-18", "2025-11-25"];
/// Stateless versions selected per request through `_meta`.
pub const MODERN_VERSIONS: &[&str] = &["2026-07-28"];
/// Tool calls allowed in flight at once; more are refused, not queued.
const MAX_IN_FLIGHT: usize = 32;

const PROTOCOL_VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";
const SERVER_INFO_META: &str = "io.modelcontextprotocol/serverInfo";

const INSTRUCTIONS: &str = "aivault keeps secrets (API keys, tokens, passwords) that you can use but never see. \
Use secret_list to see which secrets exist, policy_commands to see which commands you may run and which secrets \
each receives, and secret_run to run such a command with the secrets in its environment. Output comes back with \
secret values replaced by [REDACTED:NAME]. For HTTP APIs, capability_list shows the capabilities you may \
invoke and capability_invoke sends a request through one: the broker adds the credential, and the response \
comes back redacted. No tool returns a value; do not ask the user to paste one. \
A refused command is not an error to work around: tell the user which rule they would need.";

fn server_info() -> Value {
    json!({"name": "aivault", "title": "aivault (vaultctl mcp)", "version": env!("CARGO_PKG_VERSION")})
}

fn capabilities() -> Value {
    json!({"tools": {"listChanged": false}})
}

/// Serves MCP on the process's stdin/stdout until stdin closes. Returns the
/// exit status.
pub fn serve(socket: &Path) -> i32 {
    eprintln!(
        "vaultctl mcp: serving MCP on stdio for aivaultd at {}",
        socket.display()
    );
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    serve_io(
        socket,
        env,
        std::io::stdin().lock(),
        Box::new(std::io::stdout()),
    )
}

/// In-flight tool calls by request id (its JSON text, so `1` and `"1"` differ).
#[derive(Debug, Default)]
struct InFlight {
    calls: Mutex<Calls>,
    idle: Condvar,
}

#[derive(Debug, Default)]
struct Calls {
    /// Calls not yet answered; their ids may not be reused.
    ids: HashMap<String, Arc<Cancel>>,
    /// Calls whose answer is being written: their ids are free again (the
    /// client may reuse one as soon as it has the answer), but at end of
    /// input the server waits for them.
    answering: usize,
}

#[derive(Debug)]
struct Server {
    socket: PathBuf,
    env: Arc<Vec<(String, String)>>,
    out: Output,
    in_flight: Arc<InFlight>,
}

/// The loop behind [`serve`], over any input and output. `env` is offered to
/// runs (the daemon passes only the names a rule allows).
pub fn serve_io(
    socket: &Path,
    env: Vec<(String, String)>,
    mut input: impl BufRead,
    output: Box<dyn Write + Send>,
) -> i32 {
    let server = Server {
        socket: socket.to_path_buf(),
        env: Arc::new(env),
        out: Output::new(output),
        in_flight: Arc::default(),
    };
    loop {
        match jsonrpc::read_line(&mut input) {
            Ok(Line::Message(line)) => server.handle_line(&line),
            Ok(Line::TooLong) => server.out.error(
                &Value::Null,
                &RpcError::new(
                    jsonrpc::INVALID_REQUEST,
                    format!("message longer than {} bytes", jsonrpc::MAX_LINE),
                ),
            ),
            Ok(Line::Eof) => break,
            Err(e) => {
                eprintln!("vaultctl mcp: cannot read stdin: {e}");
                break;
            }
        }
    }
    // The client closed stdin: let calls in flight answer, then exit. (A
    // client that wants us gone sooner sends SIGTERM; our exit closes every
    // daemon connection, which ends every run.)
    let mut calls = server
        .in_flight
        .calls
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    while !calls.ids.is_empty() || calls.answering > 0 {
        calls = server
            .in_flight
            .idle
            .wait(calls)
            .unwrap_or_else(|p| p.into_inner());
    }
    0
}

impl Server {
    fn handle_line(&self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let msg: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => {
                return self.out.error(
                    &Value::Null,
                    &RpcError::new(jsonrpc::PARSE_ERROR, format!("parse error: {e}")),
                )
            }
        };
        let Value::Object(obj) = msg else {
            let what = if msg.is_array() {
                "batches are not supported; send one message per line"
            } else {
                "a message must be a JSON object"
            };
            return self
                .out
                .error(&Value::Null, &RpcError::new(jsonrpc::INVALID_REQUEST, what));
        };
        let id = obj.get("id").cloned();
        let method = match obj.get("method") {
            Some(Value::String(m)) => m.as_str(),
            // A response to a request of ours: we send none, so ignore it.
            None if obj.contains_key("result") || obj.contains_key("error") => return,
            _ => {
                return self.invalid_request(id, "missing or non-string \"method\"");
            }
        };
        if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return self.invalid_request(id, "\"jsonrpc\" must be \"2.0\"");
        }
        let params = obj.get("params").cloned().unwrap_or(Value::Null);
        let Some(id) = id else {
            return self.notification(method, &params);
        };
        if !(id.is_string() || id.is_i64() || id.is_u64()) {
            return self.invalid_request(Some(id), "\"id\" must be a string or an integer");
        }
        // Every request is answered, so no id may repeat one in flight
        // (only tool calls stay in flight, but any request could collide
        // with one, and its answer would be taken for the call's).
        if self.in_flight_has(&id) {
            return self.invalid_request(Some(id), "a request with this id is in flight");
        }
        if !(params.is_object() || params.is_null()) {
            return self.out.error(
                &id,
                &RpcError::invalid_params("\"params\" must be an object"),
            );
        }
        let modern = match request_version(&params) {
            Ok(m) => m,
            Err(e) => return self.out.error(&id, &e),
        };
        let reply = |result: Result<Value, RpcError>| match result {
            Ok(v) => self.out.result(&id, stamp(v, modern)),
            Err(e) => self.out.error(&id, &e),
        };
        match method {
            "initialize" => reply(initialize(&params)),
            "ping" => reply(Ok(json!({}))),
            "server/discover" => reply(Ok(json!({
                "supportedVersions": HANDSHAKE_VERSIONS.iter().chain(MODERN_VERSIONS).collect::<Vec<_>>(),
                "capabilities": capabilities(),
                "serverInfo": server_info(),
                "instructions": INSTRUCTIONS,
                "ttlMs": 0,
                "cacheScope": "private",
                "resultType": "complete",
                "_meta": {SERVER_INFO_META: server_info()},
            }))),
            "tools/list" => {
                let mut list = tools::list();
                if modern {
                    list["ttlMs"] = json!(0);
                    list["cacheScope"] = json!("private");
                }
                reply(Ok(list))
            }
            "tools/call" => self.spawn_call(id, params, modern),
            other => reply(Err(RpcError::new(
                jsonrpc::METHOD_NOT_FOUND,
                format!("method not found: {other}"),
            ))),
        }
    }

    fn in_flight_has(&self, id: &Value) -> bool {
        self.in_flight
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ids
            .contains_key(&id.to_string())
    }

    fn invalid_request(&self, id: Option<Value>, why: &str) {
        let id = id.unwrap_or(Value::Null);
        self.out
            .error(&id, &RpcError::new(jsonrpc::INVALID_REQUEST, why));
    }

    /// `notifications/cancelled` aborts a call in flight; every other
    /// notification (`notifications/initialized`, ...) needs nothing.
    fn notification(&self, method: &str, params: &Value) {
        if method != "notifications/cancelled" {
            return;
        }
        let Some(req) = params.get("requestId") else {
            return;
        };
        let calls = self
            .in_flight
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(c) = calls.ids.get(&req.to_string()) {
            eprintln!("vaultctl mcp: request {req} cancelled by the client");
            c.cancel();
        }
    }

    fn spawn_call(&self, id: Value, params: Value, modern: bool) {
        let key = id.to_string();
        let cancel = Arc::new(Cancel::default());
        {
            let mut calls = self
                .in_flight
                .calls
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if calls.ids.len() + calls.answering >= MAX_IN_FLIGHT {
                drop(calls);
                return self.out.error(
                    &id,
                    &RpcError::new(
                        jsonrpc::SERVER_BUSY,
                        format!("too many requests in flight (at most {MAX_IN_FLIGHT})"),
                    ),
                );
            }
            calls.ids.insert(key.clone(), cancel.clone());
        }
        let (socket, env, out, in_flight) = (
            self.socket.clone(),
            self.env.clone(),
            self.out.clone(),
            self.in_flight.clone(),
        );
        // The id is given back before the answer goes out, so a client may
        // reuse it as soon as it has read the answer; the call still counts
        // as answering until the answer is written.
        let answering = {
            let in_flight = in_flight.clone();
            let key = key.clone();
            move || {
                let mut calls = in_flight.calls.lock().unwrap_or_else(|p| p.into_inner());
                calls.ids.remove(&key);
                calls.answering += 1;
            }
        };
        let done = {
            let in_flight = in_flight.clone();
            move || {
                let mut calls = in_flight.calls.lock().unwrap_or_else(|p| p.into_inner());
                calls.answering = calls.answering.saturating_sub(1);
                in_flight.idle.notify_all();
            }
        };
        let progress = params
            .get("_meta")
            .and_then(|m| m.get("progressToken"))
            .filter(|t| t.is_string() || t.is_i64() || t.is_u64())
            .map(|t| Progress::new(t.clone(), out.clone()));
        let thread_id = id.clone();
        let spawned = std::thread::Builder::new()
            .name("mcp-call".into())
            .spawn(move || {
                let result = tools::call(&socket, &params, &env, &cancel, progress.as_ref());
                answering();
                // A cancelled request gets no response (the client stopped
                // waiting for it).
                if !cancel.is_cancelled() {
                    match result {
                        Ok(v) => out.result(&thread_id, stamp(v, modern)),
                        Err(e) => out.error(&thread_id, &e),
                    }
                }
                // Only now, so that at end of input the server exits after
                // the answer is out.
                done();
            });
        if let Err(e) = spawned {
            let mut calls = in_flight.calls.lock().unwrap_or_else(|p| p.into_inner());
            calls.ids.remove(&key);
            in_flight.idle.notify_all();
            drop(calls);
            self.out.error(
                &id,
                &RpcError::new(jsonrpc::SERVER_BUSY, format!("cannot start a thread: {e}")),
            );
        }
    }
}

/// Whether a request selects the stateless revision through `_meta`; an
/// unknown version there is refused with the versions we speak.
fn request_version(params: &Value) -> Result<bool, RpcError> {
    let Some(v) = params
        .get("_meta")
        .and_then(|m| m.get(PROTOCOL_VERSION_META))
    else {
        return Ok(false);
    };
    match v.as_str() {
        Some(v) if MODERN_VERSIONS.contains(&v) => Ok(true),
        Some(v) if HANDSHAKE_VERSIONS.contains(&v) => Ok(false),
        _ => Err(RpcError {
            code: jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
            message: "unsupported protocol version".into(),
            data: Some(json!({
                "supported": HANDSHAKE_VERSIONS.iter().chain(MODERN_VERSIONS).collect::<Vec<_>>(),
                "requested": v,
            })),
        }),
    }
}

/// Adds what a 2026-07-28 result must carry.
fn stamp(mut result: Value, modern: bool) -> Value {
    if modern {
        if let Some(obj) = result.as_object_mut() {
            obj.entry("resultType").or_insert_with(|| json!("complete"));
        }
    }
    result
}

fn initialize(params: &Value) -> Result<Value, RpcError> {
    let asked = params
        .get("protocolVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("initialize needs a string \"protocolVersion\""))?;
    let version = if HANDSHAKE_VERSIONS.contains(&asked) {
        asked
    } else {
        HANDSHAKE_VERSIONS[HANDSHAKE_VERSIONS.len() - 1]
    };
    Ok(json!({
        "protocolVersion": version,
        "capabilities": capabilities(),
        "serverInfo": server_info(),
        "instructions": INSTRUCTIONS,
    }))
}

#[cfg(test)]
mod tests;
