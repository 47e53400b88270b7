//! The official MCP Python SDK, as the agent's client, through a gateway
//! session served on a Unix socket (a byte-pump stands where `vaultctl mcp`
//! will), against two real upstreams.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use aivault_gateway::hooks::PassThrough;
use aivault_gateway::session::{self, Hooks};
use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_lists_and_calls_namespaced_tools() {
    drive("legacy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_clients_probe_of_a_newer_revision_falls_back() {
    drive("auto").await;
}

async fn drive(mode: &str) {
    let dir = deps();
    let sock = temp_log("sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let mut spawner = ProcessSpawner::default();
    spawner
        .servers
        .insert("py".into(), python_server(&[("FIXTURE_MARK", "seen")]));
    spawner.servers.insert("every".into(), everything_server());
    let audit = Arc::new(Recorded::default());
    let hooks = Hooks {
        policy: Arc::new(PassThrough),
        audit: audit.clone(),
        digest: Arc::new(digest),
    };
    let server = tokio::spawn(async move {
        let (conn, _) = listener.accept().await.unwrap();
        let (r, w) = conn.into_split();
        session::serve(r, w, config(&["py", "every"]), Arc::new(spawner), hooks).await
    });
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let python = dir.join("venv/bin/python");
    let out = tokio::process::Command::new(&python)
        .arg(fixtures.join("python_client.py"))
        .arg(mode)
        .arg(&python)
        .arg(fixtures.join("bridge.py"))
        .arg(&sock)
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_file(&sock);
    assert!(
        out.status.success(),
        "python client ({mode}) failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    let version = seen["protocol_version"].as_str().unwrap();
    assert!(
        aivault_gateway::upstream::PROTOCOL_VERSIONS.contains(&version),
        "{mode}: negotiated {version}"
    );
    let tools: Vec<&str> = seen["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for want in ["py__slow", "py__echo_env", "every__echo", "every__get-sum"] {
        assert!(tools.contains(&want), "{want} not in {tools:?}");
    }
    assert!(
        seen["sum"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains('5'),
        "{seen}"
    );
    assert_eq!(seen["env"]["content"][0]["text"], "seen", "{seen}");
    assert!(
        seen["unknown_error"]
            .as_str()
            .unwrap()
            .contains("unknown tool"),
        "{seen}"
    );
    // The client left: the session ends and stops its upstreams.
    server.await.unwrap().unwrap();
    assert_eq!(audit.all().len(), 3);
}
