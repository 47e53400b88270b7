//! The MCP gateway as a host uses it: the official Python SDK (PyPI `mcp`)
//! starts `vaultctl mcp-gateway` as an unprivileged user against the real
//! daemon, whose policy names two real upstreams —
//! `@modelcontextprotocol/server-everything` from npm and a server written
//! with the Python SDK — each run jailed under a uid of its own. The SDK
//! lists the namespaced tools of both and calls them; denied tools are
//! absent and refused by every name, a renamed tool's original name
//! included. Needs root, and what `scripts/gateway-deps.sh` installs (a
//! failing installer fails the test).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Command;

use aivault_tests::real_upstreams::RealUpstreams;
use aivault_tests::{bin, bus, require_root, Daemon, Options, User};
use serde_json::{json, Value};

/// Runs the SDK client with `calls` through `vaultctl mcp-gateway` as
/// `user`, and returns what it saw.
fn sdk(real: &RealUpstreams, d: &Daemon, user: &User, calls: &[Value]) -> Value {
    let plan = json!({
        "command": [
            "/usr/bin/setpriv",
            format!("--reuid={}", user.uid),
            format!("--regid={}", user.gid),
            "--clear-groups",
            bin("vaultctl"),
            "mcp-gateway",
        ],
        "env": {
            "AIVAULT_SOCKET": d.socket(),
            "PATH": "/usr/bin:/bin",
            "AIVT_CALLER_MARK": "from-the-caller",
        },
        "calls": calls,
    });
    let out = Command::new(real.venv_python())
        .arg(bus::repo().join("tests/fixtures/sdk_client.py"))
        .arg(plan.to_string())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the SDK client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn text(call: &Value) -> String {
    call["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text result: {call}"))
        .to_string()
}

#[test]
fn the_python_sdk_lists_and_calls_two_real_upstreams_and_never_reaches_a_denied_tool() {
    require_root();
    let alice = User::ensure("aivt-gw-sdk");
    let real = RealUpstreams::install("sdk");
    let policy = real.policy(
        "every",
        &real.everything(),
        &alice.name,
        r#"allow = ["*"]
deny = ["get-env", "trigger-*"]
rename = { "get-sum" = "add" }
description = { echo = "Echoes its message." }"#,
    ) + &real.policy(
        "py",
        &real.python(),
        &alice.name,
        r#"allow = ["*"]
deny = ["crash"]"#,
    );
    let d = Daemon::start_new(Options {
        policy,
        ..Options::default()
    });
    let refused_names = [
        "every__get-sum", // the renamed tool's original name, namespaced
        "get-sum",        // and bare
        "every__get-env", // denied
        "get-env",
        "py__crash", // denied (it would end the upstream)
        "crash",
        "every__trigger-long-running-operation",
    ];
    let mut calls = vec![
        json!({"name": "every__add", "arguments": {"a": 2, "b": 3}}),
        json!({"name": "every__echo", "arguments": {"message": "through the gateway"}}),
        json!({"name": "py__echo_env", "arguments": {"name": "AIVT_CALLER_MARK"}}),
        json!({"name": "py__echo_env", "arguments": {"name": "HOME"}}),
    ];
    calls.extend(
        refused_names
            .iter()
            .map(|n| json!({"name": n, "arguments": {}})),
    );
    let seen = sdk(&real, &d, &alice, &calls);

    let tools: Vec<&str> = seen["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{seen}"))
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for want in ["every__add", "every__echo", "py__echo_env", "py__slow"] {
        assert!(tools.contains(&want), "{want} not in {tools:?}");
    }
    for hidden in &refused_names {
        assert!(!tools.contains(hidden), "{hidden} is listed: {tools:?}");
    }
    assert!(
        tools
            .iter()
            .all(|t| t.starts_with("every__") || t.starts_with("py__")),
        "a tool outside the namespaces: {tools:?}"
    );
    let answers = seen["calls"].as_array().unwrap();
    assert_eq!(answers.len(), calls.len(), "{seen}");
    assert!(text(&answers[0]).contains('5'), "2 + 3: {}", answers[0]);
    assert!(
        text(&answers[1]).contains("through the gateway"),
        "{}",
        answers[1]
    );
    // The upstream runs with nothing of the caller's environment and a
    // home of its own.
    assert_eq!(text(&answers[2]), "", "the caller's environment leaked");
    let home = text(&answers[3]);
    // (Its run's private `<runs>/<uid>/home`.)
    assert!(
        home.starts_with('/') && home.ends_with("/home") && !home.starts_with("/root"),
        "HOME of the upstream: {home:?}"
    );
    for (answer, name) in answers[4..].iter().zip(refused_names) {
        let refusal = answer["error"].as_str().map(str::to_string).or_else(|| {
            (answer["result"]["isError"] == true).then(|| answer["result"].to_string())
        });
        assert!(refusal.is_some(), "{name} was not refused: {answer}");
    }

    // Every call is audited; the refused ones never reached an upstream.
    let recs = d.audit_records();
    let calls_seen: Vec<&Value> = recs.iter().filter(|r| r["op"] == "mcp.call").collect();
    let allowed = |exposed: &str| {
        calls_seen
            .iter()
            .any(|r| r["detail"]["exposed"] == exposed && r["detail"]["decision"] == "allowed")
    };
    assert!(allowed("every__add"), "{calls_seen:?}");
    assert!(allowed("every__echo"), "{calls_seen:?}");
    let add = calls_seen
        .iter()
        .find(|r| r["detail"]["exposed"] == "every__add")
        .unwrap();
    assert_eq!(add["detail"]["tool"], "get-sum", "{add}");
    for name in refused_names {
        let rec = calls_seen
            .iter()
            .find(|r| r["detail"]["exposed"] == name)
            .unwrap_or_else(|| panic!("no record of the call to {name}: {calls_seen:?}"));
        assert_eq!(rec["detail"]["decision"], "unknown_tool", "{rec}");
    }
    let started: Vec<&Value> = recs
        .iter()
        .filter(|r| r["op"] == "mcp.upstream" && r["detail"]["event"] == "start")
        .collect();
    for server in ["every", "py"] {
        assert!(
            started.iter().any(|r| r["name"] == server),
            "{server} never started: {started:?}"
        );
    }
}
