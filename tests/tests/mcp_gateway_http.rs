//! A streamable-HTTP `[[mcp_server]]` through the broker, against the real
//! daemon: `vaultctl mcp-gateway` as the agent, the jailed gateway (no TCP)
//! asking the daemon for a broker connection per request, the caller's
//! broker adding the capability's credential and redacting the answer, and
//! a hand-written MCP server (`aivault_tests::mcp_http`) on a loopback TLS
//! upstream (`[broker.testing]` resolves its host there and trusts the CA
//! made at test time). Needs root.
//!
//! What is checked: the agent lists `web__whoami`, `web__held` and
//! `web__add` (the server answers the listing as server-sent events), a
//! call works, progress streams through the broker before the answer, the
//! server received the vault's secret as `Authorization: Bearer …` with
//! the session id it handed out, the agent never sees the secret (the
//! server echoes it; the broker redacts it), the broker and the gateway
//! both audit the call; a caller the capability does not admit is refused
//! by the broker, and the refusal reaches the agent as an error.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aivault_tests::tls_upstream::TlsUpstream;
use aivault_tests::{bin, set_secret, token, Daemon, Options, User};
use serde_json::{json, Value};

const HOST: &str = "mcp.example.test";

struct Setup {
    d: Daemon,
    up: TlsUpstream,
    _ca_dir: tempfile::TempDir,
    alice: User,
    bob: User,
    secret: String,
}

/// alice may use server `web` and capability `example/mcp`; bob may use
/// the server but no capability admits him.
fn setup() -> Setup {
    let alice = User::ensure("aivt-gwh-a");
    let bob = User::ensure("aivt-gwh-b");
    let ca_dir = tempfile::Builder::new()
        .prefix("aivault-upstream-")
        .tempdir()
        .unwrap();
    let up = TlsUpstream::start(&[HOST], ca_dir.path());
    let config = format!(
        r#"
[broker.testing]
extra_roots = "{ca}"
allow_loopback = true
resolve = {{ "{HOST}" = ["127.0.0.1:{port}"] }}
"#,
        ca = up.ca_pem.display(),
        port = up.port(),
    );
    let policy = format!(
        r#"
[[capability]]
name = "example/mcp"
hosts = ["{HOST}"]
methods = ["POST"]
paths = ["/mcp"]
secret = "EXAMPLE_MCP_TOKEN"
auth = {{ kind = "header", header = "authorization", template = "Bearer {{{{secret}}}}" }}
users = ["{a}"]

[[mcp_server]]
name = "web"
url = "https://{HOST}/mcp"
capability = "example/mcp"
users = ["{a}", "{b}"]
[mcp_server.tools]
allow = ["*"]
"#,
        a = alice.name,
        b = bob.name,
    );
    let d = Daemon::start_new(Options {
        config,
        policy,
        testing: true,
        ..Options::default()
    });
    let secret = format!("mcp-secret-{}", token(32));
    set_secret(&d, &alice, "EXAMPLE_MCP_TOKEN", &secret);
    Setup {
        d,
        up,
        _ca_dir: ca_dir,
        alice,
        bob,
        secret,
    }
}

/// `vaultctl mcp-gateway` run as a user, spoken to line by line.
struct Agent {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    /// Everything read from the gateway, for the leak check.
    all: String,
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
            .stderr(Stdio::null())
            .spawn()
            .expect("vaultctl mcp-gateway");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Agent {
            child,
            lines,
            all: String::new(),
        }
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
            self.all.push_str(&line);
            self.all.push('\n');
            let v: Value = serde_json::from_str(&line).unwrap();
            if v.get("id") == Some(&json!(id)) {
                return v;
            }
        }
    }

    fn next_line(&mut self) -> Value {
        let line = self.lines.next().expect("a message").unwrap();
        self.all.push_str(&line);
        self.all.push('\n');
        serde_json::from_str(&line).unwrap()
    }

    fn initialize(&mut self) {
        let init = self.request(
            1,
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "t", "version": "1"}}),
        );
        assert!(init["result"]["protocolVersion"].is_string(), "{init}");
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    }

    fn finish(mut self) -> String {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
        self.all
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

fn tool_text(answer: &Value) -> String {
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {answer}"))
        .to_string()
}

#[test]
fn an_http_server_is_served_through_the_broker_which_alone_holds_the_credential() {
    let s = setup();
    let mut agent = Agent::start(&s.d, &s.alice);
    agent.initialize();
    let list = agent.request(2, "tools/list", json!({}));
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["web__whoami", "web__held", "web__add"], "{list}");

    let add = agent.request(
        3,
        "tools/call",
        json!({"name": "web__add", "arguments": {"a": 2, "b": 40}}),
    );
    assert_eq!(tool_text(&add), "42", "{add}");
    // The progress event reaches the agent while the server still holds
    // the answer: the broker and the gateway pass events as they come.
    agent.send(&json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
                       "params": {"name": "web__held", "arguments": {},
                                  "_meta": {"progressToken": "agent-token"}}}));
    let progress = agent.next_line();
    assert_eq!(progress["method"], "notifications/progress", "{progress}");
    assert_eq!(
        progress["params"]["progressToken"], "agent-token",
        "{progress}"
    );
    assert_eq!(progress["params"]["progress"], 1, "{progress}");
    s.up.release();
    let held = agent.next_line();
    assert_eq!(held["id"], 5, "{held}");
    assert_eq!(tool_text(&held), "released", "{held}");

    let who = agent.request(
        4,
        "tools/call",
        json!({"name": "web__whoami", "arguments": {}}),
    );
    let text = tool_text(&who);
    assert!(text.starts_with("authorization="), "{who}");
    assert!(text.contains("REDACTED"), "{who}");
    let all = agent.finish();
    assert!(
        !all.contains(&s.secret),
        "the agent saw the credential: {all}"
    );

    // The server got the credential from the broker, and its session id
    // on every request after the handshake.
    let seen = s.up.seen();
    let posts: Vec<_> = seen.iter().filter(|r| r.target == "/mcp").collect();
    assert!(posts.len() >= 5, "{seen:?}");
    let bearer = format!("Bearer {}", s.secret);
    assert!(posts
        .iter()
        .all(|r| r.method == "POST" && r.header("authorization") == Some(bearer.as_str())));
    assert!(posts[1..]
        .iter()
        .all(|r| r.header("mcp-session-id") == Some(aivault_tests::mcp_http::SESSION)));
    assert!(posts.iter().all(|r| r
        .header("accept")
        .is_some_and(|a| a.contains("text/event-stream"))));

    // Audited twice: by the broker (the capability's request) and by the
    // gateway (the tool call), both as alice. The gateway's reports are in
    // once its session's end is (the daemon takes them in order).
    eventually("the session's end is audited", || {
        s.d.audit_records()
            .iter()
            .any(|r| r["op"] == "mcp.gateway" && r["detail"]["event"] == "end")
    });
    let recs = s.d.audit_records();
    assert!(
        !recs.iter().any(|r| r.to_string().contains(&s.secret)),
        "the credential reached the audit"
    );
    let call = recs
        .iter()
        .find(|r| r["op"] == "mcp.call" && r["name"] == "web/whoami")
        .unwrap_or_else(|| panic!("no call record: {recs:?}"));
    assert_eq!(call["uid"], s.alice.uid, "{call}");
    assert_eq!(call["detail"]["decision"], "allowed", "{call}");
    assert!(
        recs.iter().any(|r| r["op"] == "http.request"
            && r["uid"] == s.alice.uid
            && r["name"] == "example/mcp"),
        "no broker record: {recs:?}"
    );
}

#[test]
fn a_caller_the_capability_does_not_admit_is_refused_by_the_broker() {
    let s = setup();
    let mut agent = Agent::start(&s.d, &s.bob);
    agent.initialize();
    // The handshake is refused: the server contributes no tools, and a
    // call is an error, never a result.
    let list = agent.request(2, "tools/list", json!({}));
    assert_eq!(list["result"]["tools"], json!([]), "{list}");
    let call = agent.request(
        3,
        "tools/call",
        json!({"name": "web__add", "arguments": {}}),
    );
    assert!(call.get("error").is_some(), "{call}");
    agent.finish();
    assert!(
        s.up.seen().iter().all(|r| r.target != "/mcp"),
        "a request of bob's reached the server"
    );
    let recs = s.d.audit_records();
    assert!(
        recs.iter().any(|r| r["op"] == "mcp.upstream"
            && r["uid"] == s.bob.uid
            && r["name"] == "web"
            && r["outcome"] == "failed"),
        "{recs:?}"
    );
}
