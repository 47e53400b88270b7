//! The HTTP capability broker over D-Bus: `ListCapabilities` and
//! `OpenCapabilityConnection` on a private system-like bus (as in
//! `dbus.rs`), called by the dbus-next client as real unprivileged users,
//! with the broker's test configuration (as in `broker.rs`): the daemon
//! started with `--testing`, `api.openai.com` pointed at a loopback TLS
//! upstream whose CA is made at test time.
//!
//! Needs root and what `scripts/dbus-deps.sh` installs (run first; a
//! failure fails the tests).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aivault_tests::bus::{repo, Bus};
use aivault_tests::tls_upstream::TlsUpstream;
use aivault_tests::{set_secret, token, Daemon, Options, User};
use serde_json::{json, Value};

const HOST: &str = "api.openai.com";
const NAME: &str = "org.aivault.Vault1";

fn deps() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| aivault_tests::install_deps("dbus-deps.sh"))
}

/// A bus, the daemon on it with the broker's test configuration, the
/// upstream; alice may invoke `openai`, carol `carol-openai`, bob nothing.
struct Setup {
    bus: Bus,
    d: Daemon,
    up: TlsUpstream,
    _ca_dir: tempfile::TempDir,
    alice: User,
    bob: User,
    carol: User,
    secret: String,
}

fn setup() -> Setup {
    deps();
    let bus = Bus::start();
    let alice = User::ensure("aivt-dbk-a");
    let bob = User::ensure("aivt-dbk-b");
    let carol = User::ensure("aivt-dbk-c");
    let ca_dir = tempfile::Builder::new()
        .prefix("aivault-upstream-")
        .tempdir()
        .unwrap();
    let up = TlsUpstream::start(&[HOST], ca_dir.path());
    let config = format!(
        r#"{dbus}
[broker.testing]
extra_roots = "{ca}"
allow_loopback = true
resolve = {{ "{HOST}" = ["127.0.0.1:{port}"] }}
"#,
        dbus = bus.daemon_config(),
        ca = up.ca_pem.display(),
        port = up.port(),
    );
    let policy = format!(
        r#"
[[capability]]
name = "openai"
provider = "openai"
secret = "OPENAI_API_KEY"
methods = ["GET", "POST"]
paths = ["/v1/**"]
users = ["{a}"]

[[capability]]
name = "carol-openai"
provider = "openai"
secret = "OPENAI_API_KEY"
methods = ["GET"]
paths = ["/v1/models"]
users = ["{c}"]
"#,
        a = alice.name,
        c = carol.name
    );
    let d = Daemon::start_new(Options {
        config,
        policy,
        testing: true,
        ..Options::default()
    });
    let secret = format!("sk-dbus-{}", token(40));
    set_secret(&d, &alice, "OPENAI_API_KEY", &secret);
    let s = Setup {
        bus,
        d,
        up,
        _ca_dir: ca_dir,
        alice,
        bob,
        carol,
        secret,
    };
    s.bus.wait_for_name(NAME, &s.d);
    s
}

impl Setup {
    /// `client.py http REQUEST` as `user`; its JSON line.
    fn http(&self, user: &User, request: &str) -> Value {
        let out = Command::new(deps().join("venv/bin/python"))
            .arg(repo().join("tests/dbus/client.py"))
            .args(["http", request])
            .env_clear()
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus.address)
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/tmp")
            .current_dir("/")
            .stdin(Stdio::null())
            .uid(user.uid)
            .gid(user.gid)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let all = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "client.py http failed: {all}");
        assert!(
            !all.contains(&self.secret),
            "the caller saw the secret: {all}"
        );
        serde_json::from_str(stdout.lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("client.py printed no JSON ({e}): {all}"))
    }

    /// Waits (at most 20 s) for an audit record matching `want`.
    #[track_caller]
    fn wait_audit(&self, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(r) = self.d.audit_records().into_iter().find(|r| want(r)) {
                return r;
            }
            assert!(Instant::now() < deadline, "the audit record never came");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A chat-completions request for `/openai/v1/chat/completions` carrying
/// `nonce`, the connection closed after the answer.
fn chat_request(nonce: &str) -> String {
    let body = json!({"model": "gpt-4o-mini",
                      "messages": [{"role": "user", "content": format!("hello {nonce}")}]})
    .to_string();
    format!(
        "POST /openai/v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn a_capability_connection_over_dbus_reaches_the_upstream_with_the_credential_redacted() {
    let s = setup();
    let nonce = token(12);
    let v = s.http(&s.alice, &chat_request(&nonce));
    // ListCapabilities: alice's own capability only, and where the endpoint is.
    let list = &v["list"];
    let names: Vec<&str> = list[0]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["openai"], "{v}");
    assert_eq!(list[0][0]["host"], HOST, "{v}");
    assert_eq!(list[0][0]["secret"], "OPENAI_API_KEY", "{v}");
    assert_eq!(list[0][0]["secret_present"], true, "{v}");
    assert_eq!(list[0][0]["methods"], json!(["GET", "POST"]), "{v}");
    assert_eq!(
        list[1],
        s.d.http_socket().display().to_string(),
        "the endpoint's socket: {v}"
    );
    assert_eq!(list[2], "", "no TCP endpoint configured: {v}");
    // OpenCapabilityConnection: a descriptor, on which the broker answered
    // with the upstream's echo of this request, the credential redacted.
    assert_eq!(v["signature"], "h", "{v}");
    let got = v["response"].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains(&nonce), "not the echo of this request: {got}");
    assert!(
        got.contains("authorization=Bearer [REDACTED"),
        "the echoed credential is not marked as redacted: {got}"
    );
    // The upstream got the vault's credential at the pinned host.
    let seen =
        s.up.seen()
            .into_iter()
            .find(|r| aivault_tests::contains(&r.body, nonce.as_bytes()))
            .unwrap_or_else(|| panic!("the upstream saw no request with {nonce}"));
    let want = format!("Bearer {}", s.secret);
    assert_eq!(
        seen.header("authorization"),
        Some(want.as_str()),
        "{seen:?}"
    );
    assert_eq!(seen.sni.as_deref(), Some(HOST), "{seen:?}");
    assert_eq!(seen.target, "/v1/chat/completions", "{seen:?}");
    // Audited as alice's, with the pid the bus reported for the client.
    let listed = s.wait_audit(|r| r["op"] == "capability.list");
    assert_eq!(listed["uid"], s.alice.uid, "{listed}");
    assert_eq!(listed["detail"]["count"], 1, "{listed}");
    let request = s.wait_audit(|r| r["op"] == "http.request" && r["outcome"] == "ok");
    assert_eq!(request["uid"], s.alice.uid, "{request}");
    assert_eq!(request["pid"], v["pid"], "{request}");
    assert_eq!(request["name"], "openai", "{request}");
    assert_eq!(request["detail"]["method"], "POST", "{request}");
    let log = std::fs::read(s.d.audit_log()).unwrap();
    assert!(
        !aivault_tests::contains(&log, s.secret.as_bytes()),
        "the credential is in the audit log"
    );
}

#[test]
fn a_caller_without_a_capability_gets_an_error_and_no_descriptor() {
    let s = setup();
    let nonce = token(12);
    let v = s.http(&s.bob, &chat_request(&nonce));
    // bob lists nothing: neither alice's capability nor carol's.
    assert_eq!(v["list"][0], json!([]), "{v}");
    assert_eq!(
        v["open"]["error"], "org.aivault.Vault1.Error.PermissionDenied",
        "{v}"
    );
    assert!(
        v["open"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no capability")),
        "{v}"
    );
    assert!(v.get("response").is_none(), "{v}");
    // No broker was started for him, and nothing reached the upstream.
    assert!(s
        .d
        .audit_records()
        .iter()
        .all(|r| r["op"] != "http.request"));
    assert!(s.up.seen().is_empty(), "{:?}", s.up.seen());
    let listed = s.wait_audit(|r| r["op"] == "capability.list");
    assert_eq!(listed["uid"], s.bob.uid, "{listed}");
    assert_eq!(listed["detail"]["count"], 0, "{listed}");
}

#[test]
fn a_dbus_connection_goes_to_the_callers_own_broker() {
    // carol has a capability of her own, not alice's: her connection is
    // served by her broker, which does not know alice's capability (a
    // connection handed to alice's broker would reach the upstream).
    let s = setup();
    set_secret(
        &s.d,
        &s.carol,
        "OPENAI_API_KEY",
        "sk-carol-0123456789abcdef",
    );
    let nonce = token(12);
    let v = s.http(&s.carol, &chat_request(&nonce));
    let names: Vec<&str> = v["list"][0]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["carol-openai"], "{v}");
    let got = v["response"].as_str().unwrap_or_else(|| panic!("{v}"));
    // Her broker was compiled with her capabilities alone.
    assert!(
        got.starts_with("HTTP/1.1 404") && got.contains("no such capability"),
        "{got}"
    );
    assert!(
        s.up.seen()
            .iter()
            .all(|r| !aivault_tests::contains(&r.body, nonce.as_bytes())),
        "a refused request reached the upstream"
    );
    let listed_by: Vec<u64> =
        s.d.audit_records()
            .iter()
            .filter(|r| r["op"] == "capability.list")
            .map(|r| r["uid"].as_u64().unwrap())
            .collect();
    assert_eq!(listed_by, [u64::from(s.carol.uid)]);
}
