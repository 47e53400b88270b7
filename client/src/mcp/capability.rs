//! The MCP tools of the HTTP capability broker: `capability_list` (the
//! daemon's `CapabilityList`) and `capability_invoke` (one request on the
//! local endpoint, through [`crate::http`], the code `vaultctl http` uses).
//!
//! No secret passes through here: the broker adds the credential after
//! this process's request has left, and the response it sends back has
//! the credential, its encodings and credential-bearing headers removed.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::result::tool_error;
use super::run::Cancel;
use crate::http::{self, Request};
use crate::{Client, ClientError};

/// Largest request body (`body`), in bytes of UTF-8.
pub const MAX_BODY: usize = 1024 * 1024;
/// Response body bytes kept unless the call asks for another bound, and
/// the most it may ask for.
pub const DEFAULT_RESPONSE_BYTES: usize = 64 * 1024;
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// How long the endpoint may stay silent before the call gives up, unless
/// `timeout_seconds` says otherwise, and the longest it may say.
const DEFAULT_TIMEOUT_SECONDS: f64 = 300.0;
const MAX_TIMEOUT_SECONDS: f64 = 3600.0;

/// The two tools' `tools/list` entries.
pub fn tools() -> [Value; 2] {
    let info = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "Pass as capability_invoke's capability."},
            "provider": {"type": ["string", "null"]},
            "host": {"type": "string", "description": "The upstream host requests go to (fixed by policy)."},
            "methods": {"type": "array", "items": {"type": "string"}},
            "paths": {"type": "array", "items": {"type": "string"},
                      "description": "Allowed path patterns: '*' one segment, '**' any number of segments (/v1/** covers /v1/models)."},
            "secret": {"type": "string", "description": "The credential's secret name (never its value)."},
            "secret_present": {"type": "boolean", "description": "false: the secret is not stored, so requests are refused (503)."}
        },
        "required": ["name", "host", "methods", "paths", "secret", "secret_present"]
    });
    [
        json!({
            "name": "capability_list",
            "title": "List HTTP capabilities",
            "description": "List the HTTP capabilities you may invoke with capability_invoke: each one's name, the upstream host it is pinned to, the methods and path patterns the policy allows, and the name of the secret the broker adds as the credential (whether it is stored, never its value). Also the local endpoint (http_socket, http_tcp) that SDKs can use as their base URL http://HOST:PORT/<capability>. Anything not listed is refused.",
            "inputSchema": {"type": "object", "properties": {}, "additionalProperties": false},
            "outputSchema": {"type": "object", "properties": {
                "capabilities": {"type": "array", "items": info},
                "http_socket": {"type": ["string", "null"]},
                "http_tcp": {"type": ["string", "null"]}
            }, "required": ["capabilities"]},
            "annotations": {"readOnlyHint": true, "idempotentHint": true, "openWorldHint": false}
        }),
        json!({
            "name": "capability_invoke",
            "title": "Send an HTTP request through a capability",
            "description": format!("Send one HTTP request to a capability's upstream (see capability_list) without seeing its credential: the broker checks the method and path against the policy, adds the credential itself, and returns the response with the secret (and its encodings) replaced by [REDACTED:NAME] and cookie and authentication headers removed. Do not send Authorization, Cookie or API-key headers: they are refused. The request goes to https://<host><path>; path is below the capability (e.g. /v1/chat/completions), query included. body is sent as given (at most {MAX_BODY} bytes of UTF-8; set Content-Type in headers, e.g. application/json). The result has the status, the response headers and the body as text, at most max_body_bytes (default {DEFAULT_RESPONSE_BYTES}) of its first bytes (body_truncated says more came; invalid UTF-8 is replaced by U+FFFD). A streamed (SSE) response is read to its end and returned whole. Statuses of 400 and above are results with isError true: 403 the policy refuses, 429 a rate limit (retry_after_seconds), 503 the secret is missing or the vault sealed, others the upstream's own."),
            "inputSchema": {"type": "object", "properties": {
                "capability": {"type": "string", "minLength": 1, "maxLength": 64, "description": "The capability's name from capability_list (e.g. openai)."},
                "method": {"type": "string", "default": "GET", "description": "HTTP method: GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS, as the capability allows."},
                "path": {"type": "string", "default": "/", "description": "Absolute path below the capability with its query, e.g. /v1/models or /v1/search?q=x (no spaces: percent-encode)."},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Request headers by name, e.g. {\"Content-Type\": \"application/json\"}; at most 64."},
                "body": {"type": "string", "description": "The request body as text."},
                "max_body_bytes": {"type": "integer", "minimum": 1, "maximum": MAX_RESPONSE_BYTES, "default": DEFAULT_RESPONSE_BYTES, "description": "Response body bytes kept; the rest is dropped."},
                "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_SECONDS, "default": DEFAULT_TIMEOUT_SECONDS, "description": "Give up when the endpoint sends nothing for this long."}
            }, "required": ["capability"], "additionalProperties": false},
            "outputSchema": {"type": "object", "properties": {
                "status": {"type": "integer"},
                "reason": {"type": "string"},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Response headers, names in lower case; repeated ones joined with \", \"."},
                "body": {"type": "string"},
                "body_bytes": {"type": "integer", "description": "Bytes of body kept (before any U+FFFD replacement)."},
                "body_truncated": {"type": "boolean"},
                "retry_after_seconds": {"type": ["integer", "null"]}
            }, "required": ["status", "reason", "headers", "body", "body_bytes", "body_truncated"]},
            "annotations": {"readOnlyHint": false, "destructiveHint": true, "idempotentHint": false, "openWorldHint": true}
        }),
    ]
}

fn ok(structured: Value, is_error: bool) -> Value {
    json!({
        "content": [{"type": "text", "text": structured.to_string()}],
        "structuredContent": structured,
        "isError": is_error
    })
}

pub fn capability_list(socket: &Path, args: &Map<String, Value>) -> Result<Value, String> {
    if let Some(k) = args.keys().next() {
        return Err(format!("unknown argument {k:?}"));
    }
    let report = Client::open(socket).and_then(|mut c| c.capabilities());
    Ok(match report {
        Ok(r) => ok(
            json!({
                "capabilities": r.capabilities.iter().map(|c| json!({
                    "name": c.name, "provider": c.provider, "host": c.host,
                    "methods": c.methods, "paths": c.paths,
                    "secret": c.secret, "secret_present": c.secret_present,
                })).collect::<Vec<_>>(),
                "http_socket": r.http_socket,
                "http_tcp": r.http_tcp,
            }),
            false,
        ),
        Err(ClientError::Daemon(w)) => tool_error(format!("{}: {}", w.code.as_str(), w.message)),
        Err(e) => tool_error(e.to_string()),
    })
}

fn string_arg(args: &Map<String, Value>, key: &str, default: &str) -> Result<String, String> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(default.to_string()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("argument {key:?} must be a string")),
    }
}

/// The request and the call's bounds from its arguments.
fn invoke_request(args: &Map<String, Value>) -> Result<(Request, usize, Duration), String> {
    const KEYS: [&str; 7] = [
        "capability",
        "method",
        "path",
        "headers",
        "body",
        "max_body_bytes",
        "timeout_seconds",
    ];
    if let Some(k) = args.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!("unknown argument {k:?}"));
    }
    let capability = match args.get("capability") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err("argument \"capability\" must be a non-empty string".into()),
    };
    let method = string_arg(args, "method", "GET")?.to_ascii_uppercase();
    let path = string_arg(args, "path", "/")?;
    let headers = match args.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(v) => {
                    http::parse_header(&format!("{k}:{v}")).map_err(|e| e.to_string())
                }
                _ => Err(format!("header {k:?}: the value must be a string")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("argument \"headers\" must be an object of strings".into()),
    };
    let body = string_arg(args, "body", "")?;
    if body.len() > MAX_BODY {
        return Err(format!(
            "argument \"body\" is limited to {MAX_BODY} bytes of UTF-8"
        ));
    }
    let max = match args.get("max_body_bytes") {
        None | Some(Value::Null) => DEFAULT_RESPONSE_BYTES,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_RESPONSE_BYTES as u64).contains(n))
            .map(|n| n as usize)
            .ok_or_else(|| {
                format!(
                    "argument \"max_body_bytes\" must be an integer from 1 to {MAX_RESPONSE_BYTES}"
                )
            })?,
    };
    let timeout = match args.get("timeout_seconds") {
        None | Some(Value::Null) => DEFAULT_TIMEOUT_SECONDS,
        Some(v) => v
            .as_f64()
            .filter(|t| *t > 0.0 && *t <= MAX_TIMEOUT_SECONDS)
            .ok_or_else(|| {
                format!(
                    "argument \"timeout_seconds\" must be a number in (0, {MAX_TIMEOUT_SECONDS}]"
                )
            })?,
    };
    let req = Request {
        capability,
        method,
        path,
        headers,
        body: body.into_bytes(),
    };
    req.check().map_err(|e| e.to_string())?;
    Ok((req, max, Duration::from_secs_f64(timeout)))
}

/// `capability_invoke`; `notifications/cancelled` ([`Cancel`]) cuts the
/// connection, which ends the request at the broker.
pub fn capability_invoke(
    socket: &Path,
    args: &Map<String, Value>,
    cancel: &Cancel,
) -> Result<Value, String> {
    let (req, max, timeout) = invoke_request(args)?;
    let endpoint = http::http_socket_path(socket);
    let watch = |s: &std::os::unix::net::UnixStream| {
        if let Ok(s) = s.try_clone() {
            cancel.attach(s);
        }
    };
    let resp = match http::send_watched(&endpoint, &req, Some(timeout), watch) {
        Ok(r) => r,
        Err(e) => return Ok(tool_error(e.to_string())),
    };
    let head = resp.head.clone();
    let (body, truncated) = match resp.read_bounded(max) {
        Ok(b) => b,
        Err(e) => return Ok(tool_error(e.to_string())),
    };
    let mut headers = Map::new();
    for (name, value) in &head.headers {
        let name = name.to_ascii_lowercase();
        let joined = match headers.get(&name).and_then(Value::as_str) {
            Some(prev) => format!("{prev}, {value}"),
            None => value.clone(),
        };
        headers.insert(name, Value::String(joined));
    }
    let retry = head
        .header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok());
    Ok(ok(
        json!({
            "status": head.status,
            "reason": head.reason,
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
            "body_bytes": body.len(),
            "body_truncated": truncated,
            "retry_after_seconds": retry,
        }),
        head.status >= 400,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn invoke_arguments_are_checked_and_bounded() {
        let (r, max, t) = invoke_request(&args(json!({
            "capability": "openai", "method": "post", "path": "/v1/chat/completions",
            "headers": {"Content-Type": "application/json"}, "body": "{}"
        })))
        .unwrap();
        assert_eq!(r.target(), "/openai/v1/chat/completions");
        assert_eq!(r.method, "POST");
        assert_eq!(r.body, b"{}");
        assert_eq!((max, t), (DEFAULT_RESPONSE_BYTES, Duration::from_secs(300)));
        for bad in [
            json!({}),
            json!({"capability": ""}),
            json!({"capability": "Open AI"}),
            json!({"capability": "openai", "url": "https://evil"}),
            json!({"capability": "openai", "path": "v1"}),
            json!({"capability": "openai", "path": "/a b"}),
            json!({"capability": "openai", "headers": {"X": 1}}),
            json!({"capability": "openai", "headers": {"X": "a\r\nB: c"}}),
            json!({"capability": "openai", "headers": {"Host": "evil"}}),
            json!({"capability": "openai", "headers": ["X: y"]}),
            json!({"capability": "openai", "body": {"a": 1}}),
            json!({"capability": "openai", "body": "x".repeat(MAX_BODY + 1)}),
            json!({"capability": "openai", "max_body_bytes": 0}),
            json!({"capability": "openai", "max_body_bytes": MAX_RESPONSE_BYTES + 1}),
            json!({"capability": "openai", "timeout_seconds": 0}),
        ] {
            assert!(invoke_request(&args(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_missing_endpoint_is_a_tool_error() {
        let r = capability_invoke(
            Path::new("/nonexistent/aivaultd.sock"),
            &args(json!({"capability": "openai"})),
            &Cancel::default(),
        )
        .unwrap();
        assert_eq!(r["isError"], true);
        let text = r["content"][0]["text"].as_str().unwrap();
        assert!(text.contains("/nonexistent/http.sock"), "{text}");
    }

    #[test]
    fn a_response_becomes_status_headers_and_bounded_body_text() {
        use std::io::{Read, Write};
        let dir = std::env::temp_dir().join(format!("aivault-mcp-cap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(dir.join("http.sock")).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = [0u8; 4096];
            let n = s.read(&mut got).unwrap();
            s.write_all(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 12\r\n\r\nslow down \xff!")
                .unwrap();
            String::from_utf8_lossy(&got[..n]).to_string()
        });
        let r = capability_invoke(
            &dir.join("aivaultd.sock"),
            &args(json!({"capability": "gh", "path": "/user", "max_body_bytes": 11})),
            &Cancel::default(),
        )
        .unwrap();
        let seen = server.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(seen.starts_with("GET /gh/user HTTP/1.1\r\n"), "{seen}");
        assert_eq!(r["isError"], true, "{r}");
        let s = &r["structuredContent"];
        assert_eq!(s["status"], 429, "{r}");
        assert_eq!(s["retry_after_seconds"], 7, "{r}");
        assert_eq!(s["headers"]["x-a"], "1, 2", "{r}");
        assert_eq!(s["body"], "slow down \u{fffd}", "{r}");
        assert_eq!(
            (s["body_bytes"].as_u64(), s["body_truncated"].as_bool()),
            (Some(11), Some(true))
        );
    }

    #[test]
    fn a_cancelled_invoke_cuts_its_connection() {
        let dir = std::env::temp_dir().join(format!("aivault-mcp-cancel-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(dir.join("http.sock")).unwrap();
        let cancel = std::sync::Arc::new(Cancel::default());
        let (c, socket) = (cancel.clone(), dir.join("aivaultd.sock"));
        let call = std::thread::spawn(move || {
            capability_invoke(
                &socket,
                &args(json!({"capability": "gh", "timeout_seconds": 600})),
                &c,
            )
            .unwrap()
        });
        // Accepted and never answered: only the cancel ends the call.
        let (_held, _) = listener.accept().unwrap();
        cancel.cancel();
        let r = call.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(r["isError"], true, "{r}");
        let text = r["content"][0]["text"].as_str().unwrap();
        assert!(
            !text.contains("sent nothing"),
            "it waited for the timeout: {text}"
        );
    }
}
