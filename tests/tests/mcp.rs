//! `vaultctl mcp` against the real daemon, driven by real MCP clients: the
//! official Python SDK, the official TypeScript SDK and the MCP Inspector's
//! CLI, each run as an unprivileged user; then concurrency and cancellation
//! over raw JSON-RPC. Needs root, and the clients that `scripts/mcp-deps.sh`
//! installs (the tests run it first and fail if it fails).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aivault_tests::{set_secret, Daemon, Options, User};
use serde_json::{json, Value};

const SECRET: &str = "mcp-Secret-Value-0123456789-abcdef";

fn policy(alice: &User) -> String {
    format!(
        r#"
[[rule]]
name = "printenv"
command = "/usr/bin/printenv"
users = ["{a}"]
args = [{{ exact = ["TOKEN"] }}]
allow_interpreter = true
secrets = [{{ name = "TOKEN", scope = "user", env = "TOKEN" }}]

[[rule]]
name = "cat"
command = "/usr/bin/cat"
users = ["{a}"]
secrets = [{{ name = "TOKEN", scope = "user", env = "TOKEN" }}]

[[rule]]
name = "sleep"
command = "/usr/bin/sleep"
users = ["{a}"]
secrets = [{{ name = "TOKEN", scope = "user", env = "TOKEN" }}]
[rule.sandbox]
tcp_connect = [443]
timeout = "90s"
max_output = "2M"
"#,
        a = alice.name
    )
}

fn setup() -> (Daemon, User) {
    let alice = User::ensure("aivt-mcp");
    let d = Daemon::start_new(Options {
        policy: policy(&alice),
        ..Options::default()
    });
    set_secret(&d, &alice, "TOKEN", SECRET);
    (d, alice)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs `scripts/mcp-deps.sh` once per test binary and returns the
/// directory it installed into. A missing client is a failure, not a skip.
fn deps() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| aivault_tests::install_deps("mcp-deps.sh"))
}

/// A command run as `user`, in `/`, with the daemon's socket in its environment.
fn as_user(program: &Path, d: &Daemon, user: &User) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("AIVAULT_SOCKET", d.socket())
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/tmp")
        .current_dir("/")
        .stdin(Stdio::null())
        .uid(user.uid)
        .gid(user.gid);
    cmd
}

/// Runs a client script to completion and parses the JSON on its last line.
fn client_json(mut cmd: Command, what: &str) -> Value {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert!(
        !stdout.contains(SECRET) && !stderr.contains(SECRET),
        "{what} saw the secret"
    );
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{what} printed no JSON ({e}): {stdout}\n{stderr}"))
}

fn vaultctl() -> String {
    aivault_tests::bin("vaultctl").display().to_string()
}

const TOOLS: [&str; 7] = [
    "secret_list",
    "secret_exists",
    "secret_get_masked",
    "secret_run",
    "policy_commands",
    "capability_list",
    "capability_invoke",
];

/// The redacted run and the denial, as every client reports them.
fn assert_run_and_denial(v: &Value) {
    let run = &v["run"];
    assert_ne!(run["isError"], true, "{run}");
    // The output once, in the text content after the status line.
    assert_eq!(run["content"][1]["text"], "[REDACTED:TOKEN]\n", "{run}");
    assert!(run["structuredContent"].get("stdout").is_none(), "{run}");
    assert_eq!(run["structuredContent"]["stdout_bytes"], 17, "{run}");
    assert_eq!(run["structuredContent"]["exit_code"], 0, "{run}");
    assert_eq!(run["structuredContent"]["stdout_truncated"], false, "{run}");
    let denied = &v["denied"];
    assert_eq!(denied["isError"], true, "{denied}");
    let text = denied["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("permission-denied: "), "{text}");
}

/// `policy_commands` gives each rule's arguments and sandbox as data.
fn assert_policy_commands(commands: &Value) {
    let by_rule = |name: &str| {
        commands
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["rule"] == name)
            .unwrap_or_else(|| panic!("no rule {name}: {commands}"))
            .clone()
    };
    let printenv = by_rule("printenv");
    assert_eq!(printenv["command"], "/usr/bin/printenv", "{printenv}");
    assert_eq!(
        printenv["arg_patterns"],
        json!([{"kind": "exact", "args": ["TOKEN"]}]),
        "{printenv}"
    );
    assert!(printenv.get("args").is_none(), "pseudo-syntax: {printenv}");
    assert_eq!(printenv["sandbox"]["tcp_connect"], json!([]), "{printenv}");
    assert_eq!(printenv["sandbox"]["timeout_ms"], 60_000, "{printenv}");
    let sleep = by_rule("sleep");
    assert_eq!(sleep["arg_patterns"], Value::Null, "any arguments: {sleep}");
    let sb = &sleep["sandbox"];
    assert_eq!(sb["working_directory"], "private_home", "{sleep}");
    assert_eq!(sb["tcp_connect"], json!([443]), "{sleep}");
    assert_eq!(sb["timeout_ms"], 90_000, "{sleep}");
    assert_eq!(sb["max_output_bytes"], 2 * 1024 * 1024, "{sleep}");
    assert_eq!(sleep["secrets"][0]["env"], "TOKEN", "{sleep}");
}

#[test]
fn the_python_sdk_lists_runs_and_is_refused() {
    let (d, alice) = setup();
    let deps = deps();
    for (mode, version) in [("legacy", "2025-11-25"), ("auto", "2026-07-28")] {
        let mut cmd = as_user(&deps.join("venv/bin/python"), &d, &alice);
        cmd.arg(repo().join("tests/mcp/python_client.py"))
            .args([mode, "--", &vaultctl(), "mcp"]);
        let v = client_json(cmd, &format!("python client ({mode})"));
        assert_eq!(v["protocol_version"], version, "{v}");
        assert_eq!(v["tools"], json!(TOOLS), "{v}");
        assert_run_and_denial(&v);
        let secrets = &v["list"]["structuredContent"]["secrets"];
        assert_eq!(secrets[0]["name"], "TOKEN", "{v}");
        let masked = v["masked"]["structuredContent"]["masked"].as_str().unwrap();
        assert!(masked.ends_with(&SECRET[SECRET.len() - 4..]), "{masked}");
        assert_policy_commands(&v["policy"]["structuredContent"]["commands"]);
    }
}

#[test]
fn secret_list_says_which_secrets_have_expired() {
    let (d, alice) = setup();
    aivault_tests::ok(&d.vaultctl(
        &alice,
        &["secrets", "set", "OLD", "--expires", "2020-01-01"],
        b"an-expired-value-0123456789",
    ));
    aivault_tests::ok(&d.vaultctl(
        &alice,
        &["secrets", "set", "LATER", "--expires", "400d"],
        b"a-later-value-0123456789",
    ));
    let mut cmd = as_user(&deps().join("venv/bin/python"), &d, &alice);
    cmd.arg(repo().join("tests/mcp/python_client.py"))
        .args(["legacy", "--", &vaultctl(), "mcp"]);
    let v = client_json(cmd, "python client");
    let secrets = v["list"]["structuredContent"]["secrets"]
        .as_array()
        .unwrap();
    let entry = |name: &str| {
        secrets
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name}: {v}"))
            .clone()
    };
    // 2020-01-01T00:00:00Z
    assert_eq!(entry("OLD")["expires"], 1_577_836_800, "{v}");
    assert_eq!(entry("OLD")["expired"], true, "{v}");
    assert_eq!(entry("LATER")["expired"], false, "{v}");
    assert_eq!(entry("TOKEN")["expired"], false, "{v}");
    assert_eq!(entry("TOKEN")["expires"], Value::Null, "{v}");
}

#[test]
fn the_typescript_sdk_and_the_inspector_cli_work() {
    let (d, alice) = setup();
    let deps = deps();
    let node = deps.join("node-bin");
    let mut cmd = as_user(&node, &d, &alice);
    cmd.arg(repo().join("tests/mcp/ts_client.mts"))
        .arg(deps.join("node"))
        .args(["--", &vaultctl(), "mcp"]);
    let v = client_json(cmd, "typescript client");
    assert_eq!(v["server"]["name"], "aivault", "{v}");
    assert_eq!(v["tools"], json!(TOOLS), "{v}");
    assert_run_and_denial(&v);
    assert_eq!(v["exists"]["structuredContent"]["exists"], true, "{v}");

    let cli = deps.join("node/node_modules/@modelcontextprotocol/inspector/cli/build/cli.js");
    let mut cmd = as_user(&node, &d, &alice);
    cmd.arg(&cli)
        .args(["--cli", &vaultctl(), "mcp", "--method", "tools/list"]);
    let v = client_json_whole(cmd, "inspector tools/list");
    let names: Vec<&str> = v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, TOOLS, "{v}");

    let mut cmd = as_user(&node, &d, &alice);
    cmd.arg(&cli).args([
        "--cli",
        &vaultctl(),
        "mcp",
        "--method",
        "tools/call",
        "--tool-name",
        "secret_exists",
        "--tool-arg",
        "name=TOKEN",
    ]);
    let v = client_json_whole(cmd, "inspector tools/call");
    assert_eq!(v["structuredContent"]["exists"], true, "{v}");
}

/// Like [`client_json`] for tools that pretty-print one JSON document.
fn client_json_whole(mut cmd: Command, what: &str) -> Value {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains(SECRET), "{what} saw the secret");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {stdout}"))
}

/// `vaultctl mcp` as `user`, with a thread turning its stdout into messages.
struct RawSession {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    rx: mpsc::Receiver<Value>,
}

impl RawSession {
    fn start(d: &Daemon, user: &User) -> RawSession {
        let mut child = as_user(&aivault_tests::bin("vaultctl"), d, user)
            .arg("mcp")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                assert!(!line.contains(SECRET), "the server wrote the secret");
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    return;
                }
            }
        });
        RawSession {
            child,
            stdin: Some(stdin),
            rx,
        }
    }

    fn send(&mut self, msg: Value) {
        self.send_raw(&msg.to_string());
    }

    fn send_raw(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes stdin and waits for the server to exit.
    fn close(&mut self, within: Duration) -> std::process::ExitStatus {
        self.stdin = None;
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "vaultctl mcp did not exit at end of input"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn recv(&self, within: Duration) -> Option<Value> {
        self.rx.recv_timeout(within).ok()
    }
}

impl Drop for RawSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn call(id: u64, tool: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": args}})
}

#[test]
fn a_slow_run_does_not_block_a_list_and_cancelling_kills_it() {
    let (d, alice) = setup();
    let mut s = RawSession::start(&d, &alice);
    s.send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}}}),
    );
    let init = s.recv(Duration::from_secs(10)).unwrap();
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18", "{init}");
    s.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));

    // The slow run first, then the list: the list answers first.
    let started = Instant::now();
    s.send(call(2, "secret_run", json!({"argv": ["sleep", "3"]})));
    s.send(call(3, "secret_list", json!({})));
    // The order is the property: had the list waited for the run, the
    // run's answer (at 3 s at the earliest) would come first. No bound on
    // the list's own time, which a loaded machine can stretch.
    let first = s.recv(Duration::from_secs(10)).unwrap();
    assert_eq!(first["id"], 3, "the list waited for the run: {first}");
    assert_eq!(
        first["result"]["structuredContent"]["secrets"][0]["name"],
        "TOKEN"
    );
    let second = s.recv(Duration::from_secs(20)).unwrap();
    assert_eq!(second["id"], 2, "{second}");
    assert_eq!(
        second["result"]["structuredContent"]["exit_code"], 0,
        "{second}"
    );
    assert!(started.elapsed() >= Duration::from_secs(3));

    // A long run, cancelled once its processes exist: they all go away and
    // the request gets no answer.
    s.send(call(4, "secret_run", json!({"argv": ["sleep", "60"]})));
    let deadline = Instant::now() + Duration::from_secs(15);
    while d.run_processes().is_empty() {
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    s.send(
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                  "params": {"requestId": 4, "reason": "test"}}),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = d.run_processes();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "run processes survived cancellation: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // stdin reaches the command, then end of file.
    s.send(call(
        7,
        "secret_run",
        json!({"argv": ["cat"], "stdin": "hello\n", "timeout_seconds": 10}),
    ));
    let cat = s.recv(Duration::from_secs(20)).unwrap();
    assert_eq!(cat["id"], 7, "{cat}");
    assert_eq!(cat["result"]["content"][1]["text"], "hello\n", "{cat}");

    s.send(json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}));
    let pong = s.recv(Duration::from_secs(10)).unwrap();
    assert_eq!(
        pong,
        json!({"jsonrpc": "2.0", "id": 5, "result": {}}),
        "request 4 was answered"
    );

    // Protocol errors on the same connection.
    s.send_raw("{oops");
    assert_eq!(
        s.recv(Duration::from_secs(10)).unwrap()["error"]["code"],
        -32700
    );
    s.send(json!({"jsonrpc": "2.0", "id": 6, "method": "secrets/get"}));
    assert_eq!(
        s.recv(Duration::from_secs(10)).unwrap()["error"]["code"],
        -32601
    );

    // End of input: the server exits cleanly.
    let status = s.close(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

/// Messages until the responses to every id in `ids` are in.
fn until_answered(s: &RawSession, ids: &[u64], within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let answered = |seen: &[Value]| {
        ids.iter()
            .all(|id| seen.iter().any(|m: &Value| m["id"] == *id))
    };
    while !answered(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = s
            .recv(left)
            .unwrap_or_else(|| panic!("no answer to {ids:?}; saw {seen:?}"));
        seen.push(m);
    }
    seen
}

#[test]
fn a_long_run_reports_progress_only_when_asked() {
    let (d, alice) = setup();
    let mut s = RawSession::start(&d, &alice);
    // Longer than the 5 s tick; the one without a token runs alongside.
    s.send(
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "secret_run", "arguments": {"argv": ["sleep", "6"]},
        "_meta": {"progressToken": "run-1"}}}),
    );
    s.send(call(2, "secret_run", json!({"argv": ["sleep", "6"]})));
    let seen = until_answered(&s, &[1, 2], Duration::from_secs(30));
    let result_at = seen.iter().position(|m| m["id"] == 1).unwrap();
    assert_eq!(
        seen[result_at]["result"]["structuredContent"]["exit_code"], 0,
        "{seen:?}"
    );
    let progress: Vec<(usize, &Value)> = seen
        .iter()
        .enumerate()
        .filter(|(_, m)| m["method"] == "notifications/progress")
        .collect();
    assert!(!progress.is_empty(), "no progress: {seen:?}");
    for (at, n) in &progress {
        assert_eq!(n["params"]["progressToken"], "run-1", "{n}");
        assert!(*at < result_at, "progress after the result: {seen:?}");
        let message = n["params"]["message"].as_str().unwrap();
        assert!(message.contains("bytes of output so far"), "{message}");
        assert!(n["params"]["progress"].as_f64().unwrap() > 0.0, "{n}");
    }
    // Nothing else: request 2 had no token.
    assert_eq!(seen.len(), progress.len() + 2, "{seen:?}");
}

#[test]
fn a_long_output_is_cut_to_the_asked_part_and_sent_once() {
    let (d, alice) = setup();
    let mut s = RawSession::start(&d, &alice);
    let input = format!("{}{}", "a".repeat(3000), "b".repeat(3000));
    let run = |s: &mut RawSession, id: u64, extra: Value| {
        let mut args = json!({"argv": ["cat"], "stdin": input});
        args.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        s.send(call(id, "secret_run", args));
        let r = s.recv(Duration::from_secs(20)).unwrap();
        assert_eq!(r["id"], id, "{r}");
        r["result"].clone()
    };
    for (id, keep, kept) in [(1, "head", "a"), (2, "tail", "b")] {
        let r = run(&mut s, id, json!({"max_output_bytes": 1000, "keep": keep}));
        assert_eq!(r["content"][1]["text"], kept.repeat(1000), "{keep}: {r}");
        let sc = &r["structuredContent"];
        assert_eq!(sc["stdout_truncated"], true, "{r}");
        assert_eq!(sc["stdout_bytes"], 6000, "{r}");
        assert_eq!(sc["keep"], keep, "{r}");
        assert!(sc.get("stdout").is_none(), "{r}");
        // Once: no other copy anywhere in the result.
        let all = r.to_string();
        assert_eq!(all.matches(&kept.repeat(1000)).count(), 1, "{keep}: {r}");
        assert!(!all.contains(&kept.repeat(1001)), "{keep}: {r}");
        let status = r["content"][0]["text"].as_str().unwrap();
        assert!(status.contains("truncated"), "{status}");
    }
    // The default keeps the last 16 KiB.
    let long = format!("{}{}", "a".repeat(10_000), "b".repeat(16_384));
    s.send(call(
        3,
        "secret_run",
        json!({"argv": ["cat"], "stdin": long}),
    ));
    let r = s.recv(Duration::from_secs(20)).unwrap();
    assert_eq!(r["result"]["content"][1]["text"], "b".repeat(16_384), "{r}");
    assert_eq!(r["result"]["structuredContent"]["max_output_bytes"], 16_384);
    // Beyond the maximum: refused as invalid arguments.
    let r = run(&mut s, 4, json!({"max_output_bytes": 2 * 1024 * 1024}));
    assert_eq!(r["isError"], true, "{r}");
}

#[test]
fn no_request_may_reuse_the_id_of_a_call_in_flight() {
    let (d, alice) = setup();
    let mut s = RawSession::start(&d, &alice);
    s.send(call(9, "secret_run", json!({"argv": ["sleep", "3"]})));
    let deadline = Instant::now() + Duration::from_secs(15);
    while d.run_processes().is_empty() {
        assert!(Instant::now() < deadline, "the run never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    for method in ["ping", "tools/list", "initialize"] {
        s.send(
            json!({"jsonrpc": "2.0", "id": 9, "method": method, "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "raw", "version": "0"}}}),
        );
        let r = s.recv(Duration::from_secs(10)).unwrap();
        assert_eq!(r["id"], 9, "{method}: {r}");
        assert_eq!(r["error"]["code"], -32600, "{method}: {r}");
    }
    // The string id "9" is another id.
    s.send(json!({"jsonrpc": "2.0", "id": "9", "method": "ping"}));
    let r = s.recv(Duration::from_secs(10)).unwrap();
    assert_eq!(r, json!({"jsonrpc": "2.0", "id": "9", "result": {}}));
    // The call itself is answered once, with its result.
    let r = s.recv(Duration::from_secs(20)).unwrap();
    assert_eq!(r["id"], 9, "{r}");
    assert_eq!(r["result"]["structuredContent"]["exit_code"], 0, "{r}");
    // Free again once answered.
    s.send(json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}));
    let r = s.recv(Duration::from_secs(10)).unwrap();
    assert_eq!(r, json!({"jsonrpc": "2.0", "id": 9, "result": {}}));
}
