//! `vaultctl mcp-gateway` against the real daemon: the daemon starts a
//! jailed `aivault-gateway` under a fresh run uid for the connection, hands
//! the connection over and audits what the gateway reports; a caller no
//! `[[mcp_server]]` admits is refused; the agent's disconnect ends the
//! gateway's processes. Needs root.
//!
//! The upstream is a small MCP server of the standard library's Python
//! (written out by the test), run through `/usr/bin/python3`.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aivault_tests::{bin, fails_with, Daemon, Options, User};
use serde_json::{json, Value};

fn policy(alice: &User) -> String {
    format!(
        r#"
[[mcp_server]]
name = "fs"
command = "/nonexistent/mcp-server"
users = ["{a}"]
[mcp_server.tools]
allow = ["*"]
"#,
        a = alice.name
    )
}

fn setup() -> (Daemon, User) {
    let alice = User::ensure("aivt-gw");
    let d = Daemon::start_new(Options {
        policy: policy(&alice),
        ..Options::default()
    });
    (d, alice)
}

struct Agent {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Agent {
    fn start(d: &Daemon, user: &User) -> Agent {
        let mut child = Command::new(bin("vaultctl"))
            .arg("mcp-gateway")
            .env_clear()
            .env("AIVAULT_SOCKET", d.socket())
            .env("PATH", "/usr/bin:/bin")
            .current_dir("/")
            .uid(user.uid)
            .gid(user.gid)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vaultctl mcp-gateway");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Agent { child, lines }
    }

    fn send(&mut self, msg: &Value) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{msg}").unwrap();
        stdin.flush().unwrap();
    }

    fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let line = self.lines.next().expect("an answer").unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            if v.get("id") == Some(&json!(id)) {
                return v;
            }
        }
    }

    fn initialize(&mut self) -> Value {
        let init = self.request(
            1,
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}}),
        );
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        init
    }

    /// Closes stdin and waits for `vaultctl` to exit.
    fn finish(mut self) -> std::process::ExitStatus {
        drop(self.child.stdin.take());
        self.child.wait().unwrap()
    }
}

/// Waits (at most 30 s, then fails) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_gateway_serves_the_connection_under_its_own_uid_and_ends_with_it() {
    let (d, alice) = setup();
    let mut agent = Agent::start(&d, &alice);
    let init = agent.initialize();
    assert!(init["result"]["protocolVersion"].is_string(), "{init}");
    // While the session lives, a process under a run uid (not alice's) serves it.
    let gateway: Vec<(i32, u32)> = d.run_processes();
    assert!(!gateway.is_empty(), "no gateway process");
    assert!(gateway
        .iter()
        .all(|(_, uid)| *uid != alice.uid && d.run_uids.contains(uid)));

    // The upstream's command does not exist: no tools, and calls are refused.
    let list = agent.request(2, "tools/list", json!({}));
    assert_eq!(list["result"]["tools"], json!([]), "{list}");
    let call = agent.request(
        3,
        "tools/call",
        json!({"name": "fs__anything", "arguments": {"path": "/etc/shadow"}}),
    );
    assert!(call.get("error").is_some(), "{call}");
    let ping = agent.request(4, "ping", json!({}));
    assert_eq!(ping["result"], json!({}), "{ping}");

    let status = agent.finish();
    assert!(status.success(), "{status}");
    eventually("the gateway's processes end with the session", || {
        d.run_processes().is_empty()
    });

    let recs = d.audit_records();
    let ops: Vec<&Value> = recs
        .iter()
        .filter(|r| r["op"].as_str().is_some_and(|o| o.starts_with("mcp.")))
        .collect();
    let start = ops
        .iter()
        .find(|r| r["op"] == "mcp.gateway" && r["detail"]["event"] == "start")
        .unwrap_or_else(|| panic!("no start record: {ops:?}"));
    assert_eq!(start["uid"], alice.uid, "{start}");
    let gw_uid = start["detail"]["gateway_uid"].as_u64().unwrap() as u32;
    assert!(
        gw_uid != alice.uid && d.run_uids.contains(&gw_uid),
        "{start}"
    );
    assert!(gateway.iter().any(|(_, uid)| *uid == gw_uid));
    assert!(
        ops.iter()
            .any(|r| r["op"] == "mcp.upstream" && r["name"] == "fs" && r["outcome"] == "failed"),
        "{ops:?}"
    );
    let call = ops
        .iter()
        .find(|r| r["op"] == "mcp.call")
        .unwrap_or_else(|| panic!("no call record: {ops:?}"));
    assert_eq!(call["uid"], alice.uid);
    assert_eq!(call["detail"]["decision"], "unknown_tool", "{call}");
    assert_eq!(call["detail"]["exposed"], "fs__anything");
    assert_eq!(
        call["detail"]["argument_digest"].as_str().unwrap().len(),
        64
    );
    assert!(
        !call.to_string().contains("shadow"),
        "an argument value reached the audit: {call}"
    );
    assert!(
        ops.iter()
            .any(|r| r["op"] == "mcp.gateway" && r["detail"]["event"] == "end"),
        "{ops:?}"
    );
}

#[test]
fn a_caller_no_mcp_server_admits_is_refused_and_audited() {
    let (d, _alice) = setup();
    let bob = User::ensure("aivt-gw-bob");
    let out = d.vaultctl(&bob, &["mcp-gateway"], b"");
    let err = fails_with(&out, 4); // permission denied
    assert!(err.contains("mcp_server"), "{err}");
    assert!(d.run_processes().is_empty());
    let recs = d.audit_records();
    assert!(
        recs.iter()
            .any(|r| r["op"] == "mcp.gateway" && r["uid"] == bob.uid && r["outcome"] == "denied"),
        "{recs:?}"
    );
}
