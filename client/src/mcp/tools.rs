//! The tools `vaultctl mcp` offers, their schemas, and what each call does.
//!
//! No tool returns a secret's value, by construction: every daemon reply
//! used here ([`Reply::SecretsPage`], [`Reply::Exists`], [`Reply::Masked`],
//! [`Reply::PolicyPage`], run events) has no field that can carry one, run
//! output was redacted by the runner before it left the sandbox, and error
//! texts are the daemon's small wire error set (which never carries values)
//! or fixed strings of this module. This process never asks for a value, so
//! it holds none it could leak or redact against. The HTTP capability tools
//! ([`super::capability`]) return what the broker sent, which it redacted.

use std::path::Path;
use std::sync::Arc;

use aivault_proto::{
    EndReason, Reply, RequestBody, RunRequest, SecretAsk, SecretInfo, WireScope, WorkdirMode,
};
use serde_json::{json, Map, Value};

use super::capture::{self, Keep, Limit};
use super::jsonrpc::RpcError;
use super::progress::Progress;
use super::result::tool_error;
use super::run::{self, Cancel};
use crate::{Client, ClientError};

/// Largest `stdin` accepted for `secret_run`, in bytes of UTF-8.
pub(super) const MAX_STDIN: usize = 1024 * 1024;
/// Longest `timeout_seconds` accepted (the rule's own timeout still applies).
const MAX_TIMEOUT_SECONDS: f64 = 24.0 * 3600.0;
/// Secrets one `secret_list` call returns unless it asks for fewer, and
/// the most it may ask for; `next_cursor` continues the list.
const DEFAULT_LIST_LIMIT: usize = 1000;
const MAX_LIST_LIMIT: usize = 10_000;

fn scope_schema() -> Value {
    json!({
        "type": "string",
        "enum": ["user", "system"],
        "default": "user",
        "description": "Whose secrets: your own (\"user\", the default) or system-wide ones (\"system\", root only)."
    })
}

fn name_schema() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": 128,
           "description": "The secret's name, as shown by secret_list (e.g. GITHUB_TOKEN)."})
}

/// One entry of `policy_commands` (the daemon's `PolicyShow`, less the
/// `args` text that `arg_patterns` gives as data).
fn command_schema() -> Value {
    let ints = json!({"type": "array", "items": {"type": "integer"}});
    let paths = json!({"type": "array", "items": {"type": "string"}});
    json!({
        "type": "object",
        "properties": {
            "rule": {"type": "string"},
            "command": {"type": "string", "description": "Absolute path; argv[0] may also be its file name."},
            "arg_patterns": {"type": ["array", "null"], "description": "null: any arguments; else the arguments must match one alternative.",
                "items": {"type": "object", "properties": {
                    "kind": {"type": "string", "enum": ["exact", "prefix", "glob"],
                             "description": "exact: these arguments only; prefix: these, then anything; glob: one shell pattern per argument."},
                    "args": {"type": "array", "items": {"type": "string"}}},
                    "required": ["kind", "args"]}},
            "secrets": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "env": {"type": "string"}, "scope": {"type": "string"}}}},
            "pass_env": {"type": "array", "items": {"type": "string"}, "description": "Variables of your environment passed through."},
            "sandbox": {"type": "object", "properties": {
                "working_directory": {"type": "string", "enum": ["private_home"],
                                      "description": "The run's own empty home directory (also $HOME); your working directory is not visible unless secret_run's workdir asks for it and workdir below allows it."},
                "workdir": {"type": "string", "enum": ["none", "read-only", "read-write"],
                            "description": "What secret_run's workdir may ask for with this command: none; read-only (the command reads the tree of this server's current directory, cannot change it); read-write (it may also change it, as your files)."},
                "tcp_connect": ints.clone(), "tcp_bind": ints,
                "read": paths.clone(), "write": paths,
                "timeout_ms": {"type": "integer"},
                "max_output_bytes": {"type": "integer", "description": "stdout + stderr bytes after which the run is killed (exit code 125)."},
                "memory_bytes": {"type": "integer"}, "processes": {"type": "integer"},
                "file_size_bytes": {"type": "integer"}, "cpu_seconds": {"type": "integer"}}}
        },
        "required": ["rule", "command", "secrets"]
    })
}

/// The `tools/list` result.
pub fn list() -> Value {
    let secret_info = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "scope": {"type": "string", "enum": ["user", "system"]},
            "version": {"type": "integer"},
            "created": {"type": "integer", "description": "unix seconds"},
            "updated": {"type": "integer", "description": "unix seconds"},
            "description": {"type": ["string", "null"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "expires": {"type": ["integer", "null"], "description": "unix seconds, or null"},
            "expired": {"type": "boolean", "description": "true once the expiry has passed: runs are then refused the secret unless their rule allows expired secrets"}
        },
        "required": ["name", "scope", "version", "created", "updated", "tags", "expired"]
    });
    let [capability_list_tool, capability_invoke_tool] = super::capability::tools();
    json!({ "tools": [
        {
            "name": "secret_list",
            "title": "List secrets",
            "description": format!("List the names and metadata (scope, version, dates, description, tags, expiry) of the secrets stored in aivault, in name order, at most limit (default {DEFAULT_LIST_LIMIT}) per call: when next_cursor is not null, call again with it as cursor for the rest. Values are never shown by any tool: to use a secret, run an allowed command with it through secret_run. Call policy_commands to see which commands may receive which secrets."),
            "inputSchema": {"type": "object", "properties": {
                "scope": scope_schema(),
                "cursor": {"type": "string", "description": "The next_cursor of the previous call, to continue the list after it."},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT, "default": DEFAULT_LIST_LIMIT, "description": "Most secrets returned by this call."}
            }, "additionalProperties": false},
            "outputSchema": {"type": "object", "properties": {
                "secrets": {"type": "array", "items": secret_info},
                "next_cursor": {"type": ["string", "null"], "description": "Pass as cursor to get the secrets after these; null when the list is complete."}
            }, "required": ["secrets", "next_cursor"]},
            "annotations": {"readOnlyHint": true, "idempotentHint": true, "openWorldHint": false}
        },
        {
            "name": "secret_exists",
            "title": "Check that a secret exists",
            "description": "Tell whether a secret of this name is stored (true/false). Does not reveal the value.",
            "inputSchema": {"type": "object", "properties": {"name": name_schema(), "scope": scope_schema()}, "required": ["name"], "additionalProperties": false},
            "outputSchema": {"type": "object", "properties": {"name": {"type": "string"}, "exists": {"type": "boolean"}}, "required": ["name", "exists"]},
            "annotations": {"readOnlyHint": true, "idempotentHint": true, "openWorldHint": false}
        },
        {
            "name": "secret_get_masked",
            "title": "Show a secret's mask",
            "description": "Show a fixed-width mask of a secret (asterisks and at most its last 4 characters), to tell secrets apart or confirm which one is configured. It never returns the value.",
            "inputSchema": {"type": "object", "properties": {"name": name_schema(), "scope": scope_schema()}, "required": ["name"], "additionalProperties": false},
            "outputSchema": {"type": "object", "properties": {"name": {"type": "string"}, "masked": {"type": "string"}}, "required": ["name", "masked"]},
            "annotations": {"readOnlyHint": true, "idempotentHint": true, "openWorldHint": false}
        },
        {
            "name": "secret_run",
            "title": "Run a command with secrets",
            "description": "Run an allowed command with secrets injected as environment variables, without ever seeing them. argv[0] is a command name or absolute path that the daemon resolves itself; only commands and arguments the root-owned policy allows may run (see policy_commands), in a sandbox under a separate user: its working directory is its own empty private home (your files are not visible) unless workdir asks for this server's current directory and the rule allows it, and its network access, timeout and output limit are the rule's (policy_commands lists them under sandbox). Refer to a secret in arguments through its environment variable only where the command itself expands it; no shell is involved. Output comes back with every secret (and its encodings) replaced by [REDACTED:NAME]. A refused command returns an error saying why. The output is in the text content (a status line, then stdout, then stderr if any), not repeated in structuredContent; each of stdout and stderr keeps at most max_output_bytes (default 16384), its last bytes unless keep is \"head\" (flagged by stdout_truncated/stderr_truncated, with the full sizes in stdout_bytes/stderr_bytes). exit_code follows the shell: 128+N if killed by signal N, 124 on timeout, 125 when the output limit stopped the run.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "argv": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                             "description": "The command and its arguments, e.g. [\"gh\", \"api\", \"user\"]."},
                    "secrets": {"type": "array", "description": "Secrets to inject; omit to inject every secret the matching policy rule grants.",
                                "items": {"type": "object", "properties": {
                                    "name": {"type": "string", "description": "Secret name (aws/access_key), or a pattern (aws/*: '*' within one component, '**' across components) selecting among the secrets the rule gives."},
                                    "env": {"type": "string", "description": "Environment variable to put it in, if the rule allows another than its default."}},
                                    "required": ["name"], "additionalProperties": false}},
                    "timeout_seconds": {"type": "number", "exclusiveMinimum": 0,
                                        "description": "Stop the command after this many seconds (at most the rule's timeout)."},
                    "stdin": {"type": "string", "description": format!("Text for the command's standard input (default: empty); at most {MAX_STDIN} bytes of UTF-8 (JSON Schema's maxLength would count characters, so none is given).")},
                    "max_output_bytes": {"type": "integer", "minimum": 1, "maximum": capture::MAX_BYTES, "default": capture::DEFAULT_BYTES,
                                         "description": "Bytes kept of each of stdout and stderr; the rest is dropped (the command still runs to its end)."},
                    "keep": {"type": "string", "enum": ["tail", "head"], "default": "tail",
                             "description": "Which part of a longer output is kept: the last bytes (\"tail\", the default) or the first (\"head\")."},
                    "workdir": {"type": "string", "enum": ["read-only", "read-write"],
                                "description": "Run the command in this server's current directory: read-only (it reads the tree below, cannot change it) or read-write (it may change it too; what it creates is yours). Only where the rule allows that mode (policy_commands: sandbox.workdir); omitted: its empty private home."}
                },
                "required": ["argv"],
                "additionalProperties": false
            },
            "outputSchema": {
                "type": "object",
                "properties": {
                    "command": {"type": "string", "description": "The absolute path the daemon ran."},
                    "exit_code": {"type": "integer"},
                    "end_reason": {"type": "string", "enum": EndReason::ALL.map(|r| r.as_str())},
                    "stdout_bytes": {"type": "integer", "description": "Bytes the command wrote to stdout; the kept part is in the text content."},
                    "stderr_bytes": {"type": "integer", "description": "Bytes the command wrote to stderr."},
                    "stdout_truncated": {"type": "boolean"},
                    "stderr_truncated": {"type": "boolean"},
                    "keep": {"type": "string", "enum": ["tail", "head"]},
                    "max_output_bytes": {"type": "integer"},
                    "duration_ms": {"type": "integer"},
                    "redactions": {"type": "integer", "description": "How many secret occurrences were replaced."},
                    "message": {"type": ["string", "null"]}
                },
                "required": ["command", "exit_code", "end_reason", "stdout_bytes", "stderr_bytes", "stdout_truncated", "stderr_truncated", "keep", "max_output_bytes", "duration_ms"]
            },
            "annotations": {"readOnlyHint": false, "destructiveHint": true, "idempotentHint": false, "openWorldHint": true}
        },
        {
            "name": "policy_commands",
            "title": "What you may run",
            "description": "List the commands the policy lets you run through secret_run, as data: each command's absolute path, its rule, the arguments it accepts (arg_patterns: null for any, else alternatives of kind exact, prefix or glob), the secrets it receives (name and environment variable), and what it sees when it runs (sandbox: its working directory, always its own empty private home; the TCP ports it may connect to or bind, none meaning no network; extra readable and writable paths; its timeout, output limit and other limits, units in the field names). Anything not listed is refused.",
            "inputSchema": {"type": "object", "properties": {}, "additionalProperties": false},
            "outputSchema": {"type": "object", "properties": {"commands": {"type": "array", "items": command_schema()}}, "required": ["commands"]},
            "annotations": {"readOnlyHint": true, "idempotentHint": true, "openWorldHint": false}
        },
        capability_list_tool,
        capability_invoke_tool
    ]})
}

/// A successful tool result: structured content plus its JSON as text, as
/// the specification recommends for clients without structured support.
fn ok(structured: Value) -> Value {
    json!({
        "content": [{"type": "text", "text": structured.to_string()}],
        "structuredContent": structured,
        "isError": false
    })
}

/// A client failure as a tool error the model can read and act on.
fn client_error(e: ClientError) -> Value {
    match e {
        ClientError::Daemon(w) => tool_error(format!("{}: {}", w.code.as_str(), w.message)),
        other => tool_error(other.to_string()),
    }
}

/// Arguments of a call, checked against the input schema by hand.
struct Args<'a>(&'a Map<String, Value>);

impl Args<'_> {
    fn only(&self, allowed: &[&str]) -> Result<(), String> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(format!("unknown argument {k:?}")),
            None => Ok(()),
        }
    }

    fn name(&self) -> Result<String, String> {
        match self.0.get("name") {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err("argument \"name\" must be a non-empty string".into()),
        }
    }

    fn scope(&self) -> Result<WireScope, String> {
        match self.0.get("scope") {
            None | Some(Value::Null) => Ok(WireScope::Own),
            Some(Value::String(s)) if s == "user" => Ok(WireScope::Own),
            Some(Value::String(s)) if s == "system" => Ok(WireScope::System),
            _ => Err("argument \"scope\" must be \"user\" or \"system\"".into()),
        }
    }
}

/// `tools/call`: a protocol error for an unknown tool or malformed params,
/// otherwise a result (with `isError` for failures, including invalid
/// arguments, so the model can correct itself).
pub fn call(
    socket: &Path,
    params: &Value,
    env: &[(String, String)],
    cancel: &Cancel,
    progress: Option<&Arc<Progress>>,
) -> Result<Value, RpcError> {
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| RpcError::invalid_params("tools/call needs a string \"name\""))?;
    let empty = Map::new();
    let args = match params.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err(RpcError::invalid_params("\"arguments\" must be an object")),
    };
    let args = Args(args);
    let result = match name {
        "secret_list" => secret_list(socket, &args),
        "secret_exists" => secret_exists(socket, &args),
        "secret_get_masked" => secret_masked(socket, &args),
        "policy_commands" => policy_commands(socket, &args),
        "secret_run" => secret_run(socket, &args, env, cancel, progress),
        "capability_list" => super::capability::capability_list(socket, args.0),
        "capability_invoke" => super::capability::capability_invoke(socket, args.0, cancel),
        other => return Err(RpcError::invalid_params(format!("unknown tool {other:?}"))),
    };
    Ok(result.unwrap_or_else(|msg| tool_error(format!("invalid arguments: {msg}"))))
}

fn info_json(s: &SecretInfo) -> Value {
    // Expired from its expiry second on, as the daemon refuses it to runs.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "name": s.name,
        "scope": match s.scope { WireScope::Own => "user", WireScope::System => "system" },
        "version": s.version, "created": s.created, "updated": s.updated,
        "description": s.description, "tags": s.tags, "expires": s.expires,
        "expired": s.expires.is_some_and(|e| e <= now),
    })
}

fn daemon(socket: &Path, body: RequestBody) -> Result<Reply, ClientError> {
    Client::open(socket)?.call(body)
}

/// The secrets of one `secret_list` call, at most `limit` after `cursor`,
/// gathered from as many daemon pages as that takes (one connection), and
/// the cursor of the rest.
fn secrets_from(
    socket: &Path,
    scope: WireScope,
    mut cursor: Option<String>,
    limit: usize,
) -> Result<(Vec<SecretInfo>, Option<String>), ClientError> {
    let mut client = Client::open(socket)?;
    let mut out = Vec::new();
    while out.len() < limit {
        let want = u32::try_from(limit - out.len()).unwrap_or(u32::MAX);
        let (mut page, next) = client.secrets_page(scope, cursor.take(), want)?;
        out.append(&mut page);
        match next {
            Some(n) => cursor = Some(n),
            None => return Ok((out, None)),
        }
    }
    Ok((out, cursor))
}

fn secret_list(socket: &Path, args: &Args) -> Result<Value, String> {
    args.only(&["scope", "cursor", "limit"])?;
    let scope = args.scope()?;
    let cursor = match args.0.get("cursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) if !c.is_empty() => Some(c.clone()),
        _ => return Err("argument \"cursor\" must be the next_cursor of an earlier call".into()),
    };
    let limit = match args.0.get("limit") {
        None | Some(Value::Null) => DEFAULT_LIST_LIMIT,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_LIST_LIMIT as u64).contains(n))
            .map(|n| n as usize)
            .ok_or_else(|| {
                format!("argument \"limit\" must be an integer from 1 to {MAX_LIST_LIMIT}")
            })?,
    };
    Ok(match secrets_from(socket, scope, cursor, limit) {
        Ok((list, next)) => ok(json!({
            "secrets": list.iter().map(info_json).collect::<Vec<_>>(),
            "next_cursor": next,
        })),
        Err(e) => client_error(e),
    })
}

fn secret_exists(socket: &Path, args: &Args) -> Result<Value, String> {
    args.only(&["name", "scope"])?;
    let (name, scope) = (args.name()?, args.scope()?);
    Ok(
        match daemon(
            socket,
            RequestBody::SecretExists {
                scope,
                name: name.clone(),
            },
        ) {
            Ok(Reply::Exists(yes)) => ok(json!({"name": name, "exists": yes})),
            Ok(_) => client_error(ClientError::Protocol),
            Err(e) => client_error(e),
        },
    )
}

fn secret_masked(socket: &Path, args: &Args) -> Result<Value, String> {
    args.only(&["name", "scope"])?;
    let (name, scope) = (args.name()?, args.scope()?);
    Ok(
        match daemon(
            socket,
            RequestBody::SecretMasked {
                scope,
                name: name.clone(),
            },
        ) {
            Ok(Reply::Masked(m)) => ok(json!({"name": name, "masked": m})),
            Ok(_) => client_error(ClientError::Protocol),
            Err(e) => client_error(e),
        },
    )
}

fn policy_commands(socket: &Path, args: &Args) -> Result<Value, String> {
    args.only(&[])?;
    let listed = Client::open(socket).and_then(|mut c| c.policy_list(false));
    Ok(match listed {
        Ok(listed) => {
            let parsed: Result<Vec<Value>, _> = listed
                .items
                .iter()
                .map(|i| serde_json::from_str::<Value>(i))
                .collect();
            match parsed {
                Ok(mut list) => {
                    // HTTP capabilities follow the commands; capability_list
                    // is their tool.
                    list.retain(|c| c.get("capability").is_none());
                    for c in &mut list {
                        if let Some(c) = c.as_object_mut() {
                            if c.contains_key("arg_patterns") {
                                c.remove("args");
                            }
                        }
                    }
                    ok(json!({"commands": list}))
                }
                Err(_) => client_error(ClientError::Protocol),
            }
        }
        Err(e) => client_error(e),
    })
}

fn run_request(
    args: &Args,
    env: &[(String, String)],
) -> Result<(RunRequest, Vec<u8>, Limit), String> {
    args.only(&[
        "argv",
        "secrets",
        "timeout_seconds",
        "stdin",
        "max_output_bytes",
        "keep",
        "workdir",
    ])?;
    let argv: Vec<String> = match args.0.get("argv") {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or("\"argv\" must be an array of strings")?,
        _ => return Err("\"argv\" must be a non-empty array of strings".into()),
    };
    let secrets = match args.0.get("secrets") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| {
                let name = s
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty());
                let env = match s.get("env") {
                    None | Some(Value::Null) => Some(None),
                    Some(Value::String(e)) if !e.is_empty() => Some(Some(e.clone())),
                    Some(_) => None,
                };
                match (
                    name,
                    env,
                    s.as_object()
                        .map(|o| o.keys().all(|k| k == "name" || k == "env")),
                ) {
                    (Some(name), Some(env), Some(true)) => Ok(SecretAsk {
                        name: name.to_string(),
                        env,
                    }),
                    _ => Err(
                        "each of \"secrets\" must be {\"name\": string, \"env\"?: string}"
                            .to_string(),
                    ),
                }
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("\"secrets\" must be an array".into()),
    };
    let timeout_ms = match args.0.get("timeout_seconds") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(t) if t > 0.0 && t <= MAX_TIMEOUT_SECONDS => {
                Some(((t * 1000.0).ceil() as u64).max(1))
            }
            _ => {
                return Err(format!(
                    "\"timeout_seconds\" must be a number in (0, {MAX_TIMEOUT_SECONDS}]"
                ))
            }
        },
    };
    let stdin = match args.0.get("stdin") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) if s.len() <= MAX_STDIN => s.as_bytes().to_vec(),
        Some(Value::String(_)) => {
            return Err(format!(
                "\"stdin\" is limited to {MAX_STDIN} bytes of UTF-8"
            ))
        }
        Some(_) => return Err("\"stdin\" must be a string".into()),
    };
    let bytes = match args.0.get("max_output_bytes") {
        None | Some(Value::Null) => capture::DEFAULT_BYTES,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 && n <= capture::MAX_BYTES as u64 => n as usize,
            _ => {
                return Err(format!(
                    "\"max_output_bytes\" must be an integer in [1, {}]",
                    capture::MAX_BYTES
                ))
            }
        },
    };
    let keep = match args.0.get("keep") {
        None | Some(Value::Null) => Keep::Tail,
        Some(Value::String(k)) if k == "tail" => Keep::Tail,
        Some(Value::String(k)) if k == "head" => Keep::Head,
        Some(_) => return Err("\"keep\" must be \"tail\" or \"head\"".into()),
    };
    let workdir = match args.0.get("workdir") {
        None | Some(Value::Null) => None,
        Some(Value::String(w)) if w == "read-only" => Some(WorkdirMode::ReadOnly),
        Some(Value::String(w)) if w == "read-write" => Some(WorkdirMode::ReadWrite),
        Some(_) => return Err("\"workdir\" must be \"read-only\" or \"read-write\"".into()),
    };
    let req = RunRequest {
        argv,
        secrets,
        timeout_ms,
        workdir,
        env: env.to_vec(),
    };
    Ok((req, stdin, Limit { bytes, keep }))
}

fn secret_run(
    socket: &Path,
    args: &Args,
    env: &[(String, String)],
    cancel: &Cancel,
    progress: Option<&Arc<Progress>>,
) -> Result<Value, String> {
    let (req, stdin, limit) = run_request(args, env)?;
    // The directory is opened here, with this process's permissions, and
    // travels as a descriptor.
    let dir = match req.workdir {
        None => None,
        Some(_) => Some(
            crate::open_workdir(Path::new("."))
                .map_err(|e| format!("cannot open the current directory: {e}"))?,
        ),
    };
    // Stopped (by drop) before the result is returned and sent.
    let ticker = progress.map(Progress::start);
    let outcome = run::run(
        socket,
        req,
        dir.as_ref(),
        stdin,
        limit,
        cancel,
        progress.map(|p| &**p),
    );
    drop(ticker);
    Ok(match outcome {
        Ok(o) if o.reason == EndReason::RunnerFailed => tool_error(format!(
            "the command could not be started: {}",
            o.message.as_deref().unwrap_or("runner failed")
        )),
        Ok(o) => run_result(&o, limit),
        Err(e) => tool_error(e.to_string()),
    })
}

/// A run's result. The output goes once, in the text content the model
/// reads (every client shows it); `structuredContent` has the status and
/// sizes only, so a large output does not travel twice.
fn run_result(o: &run::Outcome, limit: Limit) -> Value {
    let structured = json!({
        "command": o.command,
        "exit_code": o.code,
        "end_reason": o.reason.as_str(),
        "stdout_bytes": o.stdout.total,
        "stderr_bytes": o.stderr.total,
        "stdout_truncated": o.stdout.truncated(),
        "stderr_truncated": o.stderr.truncated(),
        "keep": limit.keep.as_str(),
        "max_output_bytes": limit.bytes,
        "duration_ms": o.duration_ms,
        "redactions": o.redactions,
        "message": o.message,
    });
    let size = |c: &super::capture::Captured| {
        if c.truncated() {
            format!(
                "{} bytes, truncated to the {} {}",
                c.total,
                if limit.keep == Keep::Tail {
                    "last"
                } else {
                    "first"
                },
                limit.bytes
            )
        } else {
            format!("{} bytes", c.total)
        }
    };
    let mut status = format!(
        "{} exited with code {} ({}) after {} ms; stdout: {}; stderr: {}",
        o.command,
        o.code,
        o.reason.as_str(),
        o.duration_ms,
        size(&o.stdout),
        size(&o.stderr),
    );
    if let Some(m) = &o.message {
        status.push_str(&format!("; {m}"));
    }
    status.push_str(if o.stderr.total > 0 {
        ". Next: stdout, then stderr."
    } else {
        ". Next: stdout."
    });
    let mut content = vec![
        json!({"type": "text", "text": status}),
        json!({"type": "text", "text": o.stdout.text()}),
    ];
    if o.stderr.total > 0 {
        content.push(json!({"type": "text", "text": o.stderr.text()}));
    }
    json!({"content": content, "structuredContent": structured, "isError": false})
}
