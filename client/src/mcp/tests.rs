//! Protocol-level tests of the MCP server, without a daemon.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Feeds `input` lines to a server whose daemon socket does not exist and
/// returns its replies, one JSON value per line.
fn session(input: &str) -> Vec<Value> {
    let sink = Sink::default();
    let code = super::serve_io(
        std::path::Path::new("/nonexistent/aivaultd.sock"),
        Vec::new(),
        std::io::Cursor::new(input.as_bytes().to_vec()),
        Box::new(sink.clone()),
    );
    assert_eq!(code, 0);
    let out = sink.0.lock().unwrap().clone();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn one(input: Value) -> Value {
    let r = session(&format!("{input}\n"));
    assert_eq!(r.len(), 1, "{r:?}");
    r.into_iter().next().unwrap()
}

fn init(version: &str) -> Value {
    one(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}),
    )
}

#[test]
fn initialize_negotiates_versions() {
    for v in ["2025-03-26", "2025-06-18", "2025-11-25"] {
        let r = init(v);
        assert_eq!(r["result"]["protocolVersion"], v, "{r}");
        assert_eq!(r["result"]["serverInfo"]["name"], "aivault");
        assert!(r["result"]["capabilities"]["tools"].is_object());
    }
    for v in ["2024-11-05", "1999-01-01", "2026-07-28"] {
        assert_eq!(init(v)["result"]["protocolVersion"], "2025-11-25");
    }
    let r = one(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}));
    assert_eq!(r["error"]["code"], -32602);
}

#[test]
fn json_rpc_errors_have_the_standard_codes() {
    assert_eq!(session("{not json\n")[0]["error"]["code"], -32700);
    assert_eq!(session("{not json\n")[0]["id"], Value::Null);
    assert_eq!(
        session("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]\n")[0]["error"]["code"],
        -32600
    );
    let r = one(json!({"jsonrpc": "2.0", "id": "x", "method": "resources/list"}));
    assert_eq!(
        (r["id"].clone(), r["error"]["code"].clone()),
        (json!("x"), json!(-32601))
    );
    let r = one(
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "secret_get"}}),
    );
    assert_eq!(r["error"]["code"], -32602, "no tool returns a value");
    let r = one(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": [1]}));
    assert_eq!(r["error"]["code"], -32602);
    let r = one(
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "secret_exists", "arguments": 5}}),
    );
    assert_eq!(r["error"]["code"], -32602);
}

#[test]
fn notifications_and_ping() {
    let r = session(concat!(
        "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n",
        "\n",
        "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":9}}\n",
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\"}\n",
    ));
    assert_eq!(r, vec![json!({"jsonrpc": "2.0", "id": 7, "result": {}})]);
}

#[test]
fn tools_have_schemas_and_none_returns_a_value() {
    let r = one(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    let tools = r["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "secret_list",
            "secret_exists",
            "secret_get_masked",
            "secret_run",
            "policy_commands",
            "capability_list",
            "capability_invoke"
        ]
    );
    for t in tools {
        assert_eq!(t["inputSchema"]["type"], "object", "{t}");
        assert_eq!(t["outputSchema"]["type"], "object", "{t}");
        assert!(t["description"].as_str().unwrap().len() > 40);
    }
}

#[test]
fn tool_failures_are_results_with_is_error() {
    let r = one(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "secret_list", "arguments": {}}}));
    assert_eq!(r["result"]["isError"], true, "{r}");
    let text = r["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("cannot connect to aivaultd"), "{text}");

    for args in [
        json!({}),
        json!({"argv": []}),
        json!({"argv": ["id"], "secrets": [{"nom": "X"}]}),
        json!({"argv": ["id"], "timeout_seconds": -1}),
        json!({"argv": ["id"], "shell": true}),
    ] {
        let r = one(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "secret_run", "arguments": args}}));
        assert_eq!(r["result"]["isError"], true, "{r}");
        let text = r["result"]["content"][0]["text"].as_str().unwrap();
        assert!(text.starts_with("invalid arguments: "), "{text}");
    }
}

#[test]
fn stateless_revision_is_served_best_effort() {
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {}});
    let r = one(
        json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}}),
    );
    assert_eq!(r["result"]["resultType"], "complete");
    assert!(r["result"]["supportedVersions"]
        .as_array()
        .unwrap()
        .contains(&json!("2026-07-28")));
    let r =
        one(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"_meta": meta}}));
    assert_eq!(r["result"]["resultType"], "complete");
    assert_eq!(r["result"]["ttlMs"], 0);
    let r = one(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}));
    assert!(r["result"].get("resultType").is_none());
    let r = one(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list",
        "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2099-01-01"}}}));
    assert_eq!(r["error"]["code"], -32022);
    assert_eq!(r["error"]["data"]["requested"], "2099-01-01");
}

#[test]
fn the_stdin_limit_is_bytes_in_the_schema_and_the_check() {
    let r = one(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    let run = r["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "secret_run")
        .unwrap()
        .clone();
    let stdin = &run["inputSchema"]["properties"]["stdin"];
    // maxLength counts characters, which the check does not.
    assert!(stdin.get("maxLength").is_none(), "{stdin}");
    let limit = super::tools::MAX_STDIN;
    let said = stdin["description"].as_str().unwrap();
    assert!(said.contains(&format!("{limit} bytes of UTF-8")), "{said}");

    let call = |text: String| {
        one(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "secret_run", "arguments": {"argv": ["cat"], "stdin": text}}}))
    };
    // Exactly the limit in bytes passes the check (and fails to connect).
    let r = call("a".repeat(limit));
    let text = r["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("cannot connect to aivaultd"), "{text}");
    // Fewer characters than the limit, but more bytes: refused, in bytes.
    let r = call("é".repeat(limit / 2 + 1));
    let text = r["result"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(
        text,
        format!("invalid arguments: \"stdin\" is limited to {limit} bytes of UTF-8")
    );
}
