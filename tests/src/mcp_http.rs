//! A streamable-HTTP MCP server, hand-written, behind the loopback TLS
//! upstream ([`crate::tls_upstream`], paths ending in `/mcp`): what an
//! HTTP MCP server reached through the broker looks like to the gateway.
//!
//! `initialize` is answered as JSON with an `Mcp-Session-Id`; every later
//! request must carry it (else `400`); notifications and responses get
//! `202`; `tools/list` is answered as server-sent events in HTTP chunks (a
//! log notification, then the answer); `tools/call` as JSON. Tools:
//! `whoami` answers with the `Authorization` header it received (which
//! the broker must redact on the way back), `add` with `a + b`, and
//! `held` answers as events: a progress notification at once, the answer
//! only after [`crate::tls_upstream::TlsUpstream::release`] (so a test can
//! see the progress reach the agent before the answer, without timing).

use serde_json::{json, Value};

use crate::tls_upstream::{send_chunk, write_whole, Io, Seen};

/// The session id the server hands out.
pub const SESSION: &str = "mcp-test-session-7";

pub(crate) async fn respond(
    io: &mut Io,
    req: &Seen,
    release: &tokio::sync::Semaphore,
) -> std::io::Result<()> {
    let auth = req.header("authorization").unwrap_or("(none)").to_string();
    let msg: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
    let json_ct = "application/json";
    if req.method != "POST" {
        return write_whole(io, 405, "Method Not Allowed", "", json_ct, b"{}").await;
    }
    if method != "initialize" && req.header("mcp-session-id") != Some(SESSION) {
        let body = json!({"jsonrpc": "2.0", "id": null,
                          "error": {"code": -32000, "message": "no valid session id"}});
        return write_whole(
            io,
            400,
            "Bad Request",
            "",
            json_ct,
            body.to_string().as_bytes(),
        )
        .await;
    }
    let answer = |result: Value| json!({"jsonrpc": "2.0", "id": id, "result": result});
    match method {
        "initialize" => {
            let asked = msg
                .pointer("/params/protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            let version = if asked == "2025-11-25" || asked == "2025-06-18" {
                asked
            } else {
                "2025-06-18"
            };
            let body = answer(json!({
                "protocolVersion": version,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "aivault-test-http", "version": "1"},
            }));
            let common = format!("mcp-session-id: {SESSION}\r\n");
            write_whole(io, 200, "OK", &common, json_ct, body.to_string().as_bytes()).await
        }
        "" => write_whole(io, 202, "Accepted", "", json_ct, b"").await,
        m if m.starts_with("notifications/") => {
            write_whole(io, 202, "Accepted", "", json_ct, b"").await
        }
        "tools/list" => {
            let tools = json!([
                {"name": "whoami", "description": "the credential the server received",
                 "inputSchema": {"type": "object"}},
                {"name": "held", "description": "answers when released",
                 "inputSchema": {"type": "object"}},
                {"name": "add", "description": "adds a and b",
                 "inputSchema": {"type": "object", "properties": {
                     "a": {"type": "number"}, "b": {"type": "number"}}}},
            ]);
            let log = json!({"jsonrpc": "2.0", "method": "notifications/message",
                             "params": {"level": "info", "data": "listing tools"}});
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
            use tokio::io::AsyncWriteExt;
            io.write_all(head.as_bytes()).await?;
            send_chunk(
                io,
                format!(": stream\n\nevent: message\ndata: {log}\n\n").as_bytes(),
            )
            .await?;
            let done = answer(json!({"tools": tools}));
            send_chunk(io, format!("id: 2\ndata: {done}\n\n").as_bytes()).await?;
            io.write_all(b"0\r\n\r\n").await?;
            io.flush().await
        }
        "tools/call" => {
            let name = msg
                .pointer("/params/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let args = msg
                .pointer("/params/arguments")
                .cloned()
                .unwrap_or(json!({}));
            if name == "held" {
                let token = msg
                    .pointer("/params/_meta/progressToken")
                    .cloned()
                    .unwrap_or(Value::Null);
                let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                                      "params": {"progressToken": token, "progress": 1, "total": 2}});
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
                use tokio::io::AsyncWriteExt;
                io.write_all(head.as_bytes()).await?;
                send_chunk(io, format!("data: {progress}\n\n").as_bytes()).await?;
                release
                    .acquire()
                    .await
                    .map_err(|_| std::io::Error::other("released for ever"))?
                    .forget();
                let done = answer(json!({"content": [{"type": "text", "text": "released"}]}));
                send_chunk(io, format!("data: {done}\n\n").as_bytes()).await?;
                io.write_all(b"0\r\n\r\n").await?;
                return io.flush().await;
            }
            let body = match name {
                "whoami" => answer(json!({"content": [
                    {"type": "text", "text": format!("authorization={auth}")}]})),
                "add" => {
                    let sum = args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0);
                    answer(json!({"content": [{"type": "text", "text": format!("{sum}")}]}))
                }
                _ => json!({"jsonrpc": "2.0", "id": id,
                            "error": {"code": -32602, "message": "unknown tool"}}),
            };
            write_whole(io, 200, "OK", "", json_ct, body.to_string().as_bytes()).await
        }
        _ => {
            let body = json!({"jsonrpc": "2.0", "id": id,
                              "error": {"code": -32601, "message": "method not found"}});
            write_whole(io, 200, "OK", "", json_ct, body.to_string().as_bytes()).await
        }
    }
}
