//! The HTTP capability broker end to end: the real daemon (started with
//! `--testing`, its `[broker.testing]` pointing `api.openai.com` at a
//! loopback TLS upstream whose CA is made at test time) and real clients
//! run as unprivileged users — the official OpenAI Python SDK over the
//! loopback TCP endpoint, `curl` over the Unix socket and TCP, `vaultctl
//! http`, and the MCP Python SDK driving `vaultctl mcp`.
//!
//! What every test checks: the upstream received the vault's secret as
//! `Authorization: Bearer <secret>`, and what the caller got back — the
//! upstream's echo of that header — holds no trace of it.
//!
//! Needs root, `curl` (scripts/deps.sh) and the Python SDKs that
//! scripts/mcp-deps.sh installs; a missing one fails the tests.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

use aivault_tests::tls_upstream::TlsUpstream;
use aivault_tests::{set_secret, token, Daemon, Options, User};
use serde_json::{json, Value};

const HOST: &str = "api.openai.com";

/// A daemon with the broker's test configuration, its upstream, and two
/// users: alice may invoke `openai`, bob only `bob-openai` (the same
/// provider; his own secret).
struct Setup {
    d: Daemon,
    up: TlsUpstream,
    _ca_dir: tempfile::TempDir,
    alice: User,
    bob: User,
    /// alice's OPENAI_API_KEY.
    secret: String,
    bob_secret: String,
    /// The endpoint's loopback TCP address.
    tcp: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn setup() -> Setup {
    let alice = User::ensure("aivt-brk-a");
    let bob = User::ensure("aivt-brk-b");
    let ca_dir = tempfile::Builder::new()
        .prefix("aivault-upstream-")
        .tempdir()
        .unwrap();
    let up = TlsUpstream::start(&[HOST], ca_dir.path());
    let tcp = format!("127.0.0.1:{}", free_port());
    let config = format!(
        r#"
[broker]
tcp_listen = "{tcp}"

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
name = "openai"
provider = "openai"
secret = "OPENAI_API_KEY"
methods = ["GET", "POST"]
paths = ["/v1/**"]
users = ["{a}"]

[[capability]]
name = "openai-limited"
provider = "openai"
secret = "OPENAI_API_KEY"
methods = ["GET"]
paths = ["/v1/models"]
users = ["{a}"]
rate = {{ per_caller_per_minute = 2 }}

[[capability]]
name = "bob-openai"
provider = "openai"
secret = "OPENAI_API_KEY"
methods = ["GET", "POST"]
paths = ["/v1/**"]
users = ["{b}"]
"#,
        a = alice.name,
        b = bob.name
    );
    let d = Daemon::start_new(Options {
        config,
        policy,
        testing: true,
        ..Options::default()
    });
    let secret = format!("sk-test-{}", token(40));
    let bob_secret = format!("sk-bob-{}", token(40));
    set_secret(&d, &alice, "OPENAI_API_KEY", &secret);
    set_secret(&d, &bob, "OPENAI_API_KEY", &bob_secret);
    Setup {
        d,
        up,
        _ca_dir: ca_dir,
        alice,
        bob,
        secret,
        bob_secret,
        tcp,
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The venv of scripts/mcp-deps.sh, which also holds the `openai` SDK; a
/// missing SDK or `curl` fails the test, never skips it.
fn deps() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = aivault_tests::install_deps("mcp-deps.sh");
        let py = dir.join("venv/bin/python");
        let ok = Command::new(&py)
            .args(["-c", "import openai, mcp"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "the Python packages `openai` and `mcp` are missing from {}: scripts/mcp-deps.sh installs them",
            py.display()
        );
        let curl = Command::new("curl")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(curl, "curl is missing: scripts/deps.sh installs it");
        dir
    })
}

fn python() -> PathBuf {
    deps().join("venv/bin/python")
}

/// A command run as `user`, in `/`, with a clean environment.
fn as_user(program: impl AsRef<std::ffi::OsStr>, d: &Daemon, user: &User) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("AIVAULT_SOCKET", d.socket())
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/tmp")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .uid(user.uid)
        .gid(user.gid);
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A chat-completions body whose user message carries `nonce`.
fn chat_body(nonce: &str, stream: bool) -> String {
    json!({"model": "gpt-4o-mini", "stream": stream,
           "messages": [{"role": "user", "content": format!("hello {nonce}")}]})
    .to_string()
}

impl Setup {
    /// Fails unless `got` (all a caller received) holds neither secret.
    #[track_caller]
    fn assert_clean(&self, got: &str) {
        assert!(
            !got.contains(&self.secret),
            "the caller saw the secret: {got}"
        );
        assert!(
            !got.contains(&self.bob_secret),
            "the caller saw bob's secret: {got}"
        );
    }

    /// The upstream's echo came back with the credential redacted, and it
    /// was the echo of this request (`nonce`).
    #[track_caller]
    fn assert_redacted_echo(&self, got: &str, nonce: &str) {
        self.assert_clean(got);
        assert!(got.contains(nonce), "not the echo of this request: {got}");
        assert!(
            got.contains("authorization=Bearer [REDACTED"),
            "the echoed credential is not marked as redacted: {got}"
        );
    }

    /// The request the upstream saw whose body holds `nonce`.
    #[track_caller]
    fn upstream_request(&self, nonce: &str) -> aivault_tests::tls_upstream::Seen {
        self.up
            .seen()
            .into_iter()
            .find(|r| aivault_tests::contains(&r.body, nonce.as_bytes()))
            .unwrap_or_else(|| panic!("the upstream saw no request with {nonce}"))
    }

    /// The upstream got alice's secret, at the pinned host.
    #[track_caller]
    fn assert_injected(&self, nonce: &str) {
        let r = self.upstream_request(nonce);
        let want = format!("Bearer {}", self.secret);
        assert_eq!(r.header("authorization"), Some(want.as_str()), "{r:?}");
        assert_eq!(r.sni.as_deref(), Some(HOST), "{r:?}");
        // The pinned host (a port, if the broker names one, is 443's: the
        // test resolver only changes where it connects).
        let host = r.header("host").unwrap_or("");
        assert!(host == HOST || host == format!("{HOST}:443"), "{r:?}");
        assert_eq!(r.method, "POST", "{r:?}");
        assert_eq!(r.target, "/v1/chat/completions", "{r:?}");
    }

    /// No request reached the upstream with `marker` in its body or headers.
    #[track_caller]
    fn assert_not_upstream(&self, marker: &str) {
        for r in self.up.seen() {
            let in_headers = r.headers.iter().any(|(_, v)| v.contains(marker));
            assert!(
                !in_headers && !aivault_tests::contains(&r.body, marker.as_bytes()),
                "a refused request reached the upstream: {r:?}"
            );
        }
    }

    /// Waits (at most 20 s) until `n` audit records match `want`, since a
    /// response's record is written when the broker reports it done.
    #[track_caller]
    fn wait_audit(&self, want: impl Fn(&Value) -> bool, n: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let got: Vec<Value> = self
                .d
                .audit_records()
                .into_iter()
                .filter(|r| want(r))
                .collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{n} matching audit records never came: {got:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `curl` as `user` to `url` (over the Unix socket when `unix`).
    fn curl(&self, user: &User, unix: bool, url_path: &str, args: &[&str]) -> Output {
        let mut cmd = as_user("curl", &self.d, user);
        cmd.args(["-sS", "-i", "--max-time", "120"]);
        let url = if unix {
            cmd.arg("--unix-socket").arg(self.d.http_socket());
            format!("http://localhost{url_path}")
        } else {
            format!("http://{}{url_path}", self.tcp)
        };
        cmd.args(args).arg(url).output().unwrap()
    }
}

/// The status code of `curl -i` output (the first final status line:
/// interim 1xx answers come before it).
fn curl_status(out: &Output) -> u16 {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("HTTP/"))
        .filter_map(|l| l.split(' ').nth(1))
        .find(|c| !c.starts_with('1'))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {}", text(out)))
}

/// `curl -i` output's response header names, lower-cased.
fn curl_header_names(out: &Output) -> Vec<String> {
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    let head = s.split("\r\n\r\n").next().unwrap_or("");
    head.lines()
        .skip(1)
        .filter_map(|l| {
            l.split_once(':')
                .map(|(n, _)| n.trim().to_ascii_lowercase())
        })
        .collect()
}

#[test]
fn the_test_upstream_echoes_what_it_got_over_tls_with_its_own_ca() {
    // The fixture itself, straight from curl with the test CA: what the
    // broker tests rely on (the echo, the cookie, the held stream).
    deps();
    let dir = tempfile::tempdir().unwrap();
    let up = TlsUpstream::start(&[HOST], dir.path());
    let resolve = format!("{HOST}:{}:127.0.0.1", up.port());
    let url = format!("https://{HOST}:{}/v1/chat/completions", up.port());
    let nonce = token(12);
    let out = Command::new("curl")
        .args(["-sS", "-i", "--cacert"])
        .arg(&up.ca_pem)
        .args([
            "--resolve",
            &resolve,
            "-H",
            "Authorization: Bearer direct-key",
        ])
        .args([
            "-H",
            "Content-Type: application/json",
            "-d",
            &chat_body(&nonce, false),
        ])
        .arg(&url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(curl_status(&out), 200, "{}", text(&out));
    assert!(curl_header_names(&out).contains(&"set-cookie".to_string()));
    let body = String::from_utf8_lossy(&out.stdout);
    let json_start = body.find("\r\n\r\n").unwrap() + 4;
    let v: Value = serde_json::from_str(&body[json_start..]).unwrap();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        content.starts_with("authorization=Bearer direct-key; body={"),
        "{content}"
    );
    assert!(content.contains(&nonce), "{content}");
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].sni.as_deref(), Some(HOST));

    // The guards' paths.
    let get = |path: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-i", "--cacert"])
            .arg(&up.ca_pem)
            .args([
                "--resolve",
                &resolve,
                "-H",
                "Authorization: Bearer direct-key",
            ])
            .arg(format!("https://{HOST}:{}{path}", up.port()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{path}: {}", text(&out));
        out
    };
    let out = get("/v1/echo?x=1");
    let body = String::from_utf8_lossy(&out.stdout).to_string();
    let v: Value = serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(v["authorization"], "Bearer direct-key", "{v}");
    assert_eq!(v["authorization_b64"], "QmVhcmVyIGRpcmVjdC1rZXk=", "{v}");
    assert_eq!(v["path"], "/v1/echo?x=1", "{v}");
    let out = get("/v1/redirect?to=https://elsewhere.example/x");
    assert_eq!(curl_status(&out), 302);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("location: https://elsewhere.example/x\r\n")
    );
    let out = get("/v1/status/401");
    assert_eq!(curl_status(&out), 401);
    assert!(curl_header_names(&out).contains(&"www-authenticate".to_string()));
    let out = get("/v1/bytes?n=5");
    assert!(out.stdout.ends_with(b"\r\n\r\naaaaa"), "{}", text(&out));

    // A held stream: its first events arrive, the rest after release().
    let mut child = Command::new("curl")
        .args(["-sS", "-N", "--cacert"])
        .arg(&up.ca_pem)
        .args(["--resolve", &resolve, "-H", "x-hold-stream: 1"])
        .args([
            "-H",
            "Content-Type: application/json",
            "-d",
            &chat_body(&nonce, true),
        ])
        .arg(&url)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = line_reader(child.stdout.take().unwrap());
    let first = wait_line(&lines, |l| l.contains(&nonce), "the upstream's echo event");
    assert!(
        !first.iter().any(|l| l.contains("[DONE]")),
        "the stream was not held: {first:?}"
    );
    up.release();
    wait_line(&lines, |l| l == "data: [DONE]", "the end of the stream");
    assert!(child.wait().unwrap().success());
}

/// Lines of `r` as they arrive, on a channel.
fn line_reader(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits (at most two minutes: a hang is a failure, not a timing
/// assertion) for a line that `want` accepts; returns the lines so far.
#[track_caller]
fn wait_line(rx: &mpsc::Receiver<String>, want: impl Fn(&str) -> bool, what: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(l) => {
                let done = want(&l);
                seen.push(l);
                if done {
                    return seen;
                }
            }
            Err(_) => panic!("{what} never arrived; the lines so far: {seen:?}"),
        }
    }
}

#[test]
fn the_openai_sdk_completes_a_chat_through_the_tcp_endpoint_and_gets_the_echo_redacted() {
    let s = setup();
    let nonce = token(16);
    let out = as_user(python(), &s.d, &s.alice)
        .arg(repo().join("tests/broker/openai_client.py"))
        .args(["chat", &nonce])
        .env("OPENAI_BASE_URL", format!("http://{}/openai/v1", s.tcp))
        .env("OPENAI_API_KEY", "aivault")
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "the SDK failed: {all}");
    s.assert_clean(&all);
    let v: Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or(""),
    )
    .unwrap_or_else(|e| panic!("no JSON ({e}): {all}"));
    s.assert_redacted_echo(v["content"].as_str().unwrap(), &nonce);
    assert_eq!(v["model"], "gpt-4o-mini", "{v}");
    let headers = v["headers"].as_object().unwrap();
    assert!(!headers.contains_key("set-cookie"), "{v}");
    assert!(!headers.contains_key("www-authenticate"), "{v}");
    s.assert_injected(&nonce);
    // The SDK's stand-in key went nowhere: the broker put the real one
    // in its place.
    s.assert_not_upstream("Bearer aivault");
}

#[test]
fn curl_over_the_unix_socket_and_over_tcp_gets_the_echo_redacted() {
    let s = setup();
    deps();
    for unix in [true, false] {
        let nonce = token(16);
        let body = chat_body(&nonce, false);
        let out = s.curl(
            &s.alice,
            unix,
            "/openai/v1/chat/completions",
            &[
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &body,
            ],
        );
        let all = text(&out);
        assert!(out.status.success(), "unix={unix}: {all}");
        assert_eq!(curl_status(&out), 200, "unix={unix}: {all}");
        s.assert_redacted_echo(&all, &nonce);
        let names = curl_header_names(&out);
        assert!(
            !names.contains(&"set-cookie".to_string()),
            "unix={unix}: {all}"
        );
        s.assert_injected(&nonce);
    }
    // Each request is audited as alice's, with no value in the log; a TCP
    // caller's pid is unknown (0), a Unix one's is not.
    let requests = s.wait_audit(|r| r["op"] == "http.request" && r["outcome"] == "ok", 2);
    for r in &requests {
        assert_eq!(r["uid"], s.alice.uid, "{r}");
        assert_eq!(r["name"], "openai", "{r}");
        assert_eq!(r["detail"]["method"], "POST", "{r}");
        assert_eq!(r["detail"]["path"], "/v1/chat/completions", "{r}");
    }
    let pids: Vec<u64> = requests
        .iter()
        .map(|r| r["pid"].as_u64().unwrap())
        .collect();
    assert!(pids[0] != 0 && pids[1] == 0, "{requests:?}");
    let responses = s.wait_audit(|r| r["op"] == "http.response", 2);
    assert!(
        responses.iter().all(|r| r["detail"]["status"] == 200),
        "{responses:?}"
    );
    let log = std::fs::read(s.d.audit_log()).unwrap();
    s.assert_clean(&String::from_utf8_lossy(&log));
}

#[test]
fn vaultctl_http_streams_the_answer_and_fails_with_22_on_a_refusal() {
    let s = setup();
    let nonce = token(16);
    let out = s.d.vaultctl(
        &s.alice,
        &[
            "http",
            "openai",
            "--path",
            "/v1/chat/completions",
            "--header",
            "Content-Type: application/json",
            "--data",
            "-",
            "--include",
        ],
        chat_body(&nonce, false).as_bytes(),
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    s.assert_redacted_echo(&all, &nonce);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("HTTP/1.1 200"), "{all}");
    assert!(!stdout.to_ascii_lowercase().contains("set-cookie"), "{all}");
    s.assert_injected(&nonce);

    // bob may not invoke alice's capability: an HTTP refusal, exit 22.
    let out =
        s.d.vaultctl(&s.bob, &["http", "openai", "--path", "/v1/models"], b"");
    let all = text(&out);
    assert_eq!(out.status.code(), Some(22), "{all}");
    s.assert_clean(&all);
}

#[test]
fn vaultctl_capabilities_lists_only_the_callers_own() {
    let s = setup();
    let out = s.d.vaultctl(&s.alice, &["--json", "capabilities"], b"");
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let caps = v["capabilities"].as_array().unwrap();
    let names: Vec<&str> = caps.iter().map(|c| c["name"].as_str().unwrap()).collect();
    // Both of alice's capabilities, none of the others.
    assert_eq!(names, ["openai", "openai-limited"], "{v}");
    assert_eq!(caps[0]["host"], HOST, "{v}");
    assert_eq!(caps[0]["secret"], "OPENAI_API_KEY", "{v}");
    assert_eq!(caps[0]["secret_present"], true, "{v}");
    assert_eq!(v["http_tcp"], s.tcp.as_str(), "{v}");
    assert_eq!(
        v["http_socket"],
        s.d.http_socket().display().to_string().as_str(),
        "{v}"
    );
    // The table too, and `http --list` is the same list.
    let table = aivault_tests::ok(&s.d.vaultctl(&s.alice, &["http", "--list"], b""));
    assert!(table.contains("openai") && table.contains(HOST), "{table}");
    assert!(!table.contains("bob-openai"), "{table}");
    s.assert_clean(&table);
}

#[test]
fn another_users_capability_is_refused_on_both_endpoints() {
    let s = setup();
    deps();
    for unix in [true, false] {
        let nonce = token(16);
        let body = chat_body(&nonce, false);
        let out = s.curl(
            &s.bob,
            unix,
            "/openai/v1/chat/completions",
            &[
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &body,
            ],
        );
        let all = text(&out);
        let status = curl_status(&out);
        assert!(
            status == 403 || status == 404,
            "unix={unix}: bob reached alice's capability: {all}"
        );
        s.assert_clean(&all);
        s.assert_not_upstream(&nonce);
    }
    // bob's own capability works, with his own secret.
    let nonce = token(16);
    let body = chat_body(&nonce, false);
    let out = s.curl(
        &s.bob,
        true,
        "/bob-openai/v1/chat/completions",
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
        ],
    );
    assert_eq!(curl_status(&out), 200, "{}", text(&out));
    let r = s.upstream_request(&nonce);
    let want = format!("Bearer {}", s.bob_secret);
    assert_eq!(r.header("authorization"), Some(want.as_str()), "{r:?}");
    s.assert_clean(&text(&out));
}

#[test]
fn a_caller_supplied_credential_header_is_refused() {
    let s = setup();
    deps();
    for header in ["Authorization: Bearer", "X-Api-Key:", "Cookie: session="] {
        for unix in [true, false] {
            let marker = format!("caller-{}", token(12));
            let h = format!("{header}{marker}");
            let out = s.curl(
                &s.alice,
                unix,
                "/openai/v1/chat/completions",
                &[
                    "-H",
                    &h,
                    "-H",
                    "Content-Type: application/json",
                    "--data-binary",
                    &chat_body(&marker, false),
                ],
            );
            let all = text(&out);
            let status = curl_status(&out);
            assert!(
                (400..500).contains(&status),
                "{header} unix={unix}: not refused: {all}"
            );
            s.assert_not_upstream(&marker);
        }
    }
    // The SDK configured with a key other than the stand-in: refused.
    let dummy = format!("sk-dummy-{}", token(12));
    let out = as_user(python(), &s.d, &s.alice)
        .arg(repo().join("tests/broker/openai_client.py"))
        .args(["plain", &dummy])
        .env("OPENAI_BASE_URL", format!("http://{}/openai/v1", s.tcp))
        .env("OPENAI_API_KEY", &dummy)
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let v: Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or(""),
    )
    .unwrap_or_else(|e| panic!("no JSON ({e}): {all}"));
    let refused = v["refused"].as_u64().unwrap_or(0);
    assert!(
        (400..500).contains(&refused),
        "the SDK's own key was not refused: {all}"
    );
    s.assert_not_upstream(&dummy);

    // vaultctl passes the header on and reports the broker's refusal.
    let out = s.d.vaultctl(
        &s.alice,
        &[
            "http",
            "openai",
            "-p",
            "/v1/models",
            "-H",
            "Authorization: Bearer mine",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(22), "{}", text(&out));
    s.assert_not_upstream("Bearer mine");
}

#[test]
fn server_sent_events_pass_through_the_broker_as_they_arrive() {
    let s = setup();
    deps();
    // The SDK over TCP: it has the first content delta while the upstream
    // still holds the rest of the stream.
    let nonce = token(16);
    let mut child = as_user(python(), &s.d, &s.alice)
        .arg(repo().join("tests/broker/openai_client.py"))
        .args(["stream", &nonce])
        .env("OPENAI_BASE_URL", format!("http://{}/openai/v1", s.tcp))
        .env("OPENAI_API_KEY", "aivault")
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = line_reader(child.stdout.take().unwrap());
    wait_line(
        &lines,
        |l| l == "first-content",
        "the first event through the broker (it held the stream back)",
    );
    s.up.release();
    let rest = wait_line(&lines, |l| l.starts_with('{'), "the SDK's result");
    assert!(child.wait().unwrap().success());
    let v: Value = serde_json::from_str(rest.last().unwrap()).unwrap();
    s.assert_redacted_echo(v["content"].as_str().unwrap(), &nonce);
    s.assert_clean(&rest.join("\n"));

    // curl over the Unix socket, reading the raw events.
    let nonce = token(16);
    let mut cmd = as_user("curl", &s.d, &s.alice);
    cmd.args(["-sS", "-N", "--max-time", "120", "--unix-socket"])
        .arg(s.d.http_socket())
        .args([
            "-H",
            "Content-Type: application/json",
            "-H",
            "x-hold-stream: 1",
        ])
        .args(["--data-binary", &chat_body(&nonce, true)])
        .arg("http://localhost/openai/v1/chat/completions")
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    let lines = line_reader(child.stdout.take().unwrap());
    let first = wait_line(
        &lines,
        |l| l.contains(&nonce),
        "the echo event through the broker",
    );
    s.up.release();
    let rest = wait_line(&lines, |l| l == "data: [DONE]", "the end of the stream");
    assert!(child.wait().unwrap().success());
    let all = format!("{}\n{}", first.join("\n"), rest.join("\n"));
    s.assert_redacted_echo(&all, &nonce);
}

#[test]
fn mcp_capability_invoke_returns_the_echo_redacted() {
    let s = setup();
    let nonce = token(16);
    let vaultctl = aivault_tests::bin("vaultctl").display().to_string();
    let out = as_user(python(), &s.d, &s.alice)
        .arg(repo().join("tests/broker/mcp_invoke.py"))
        .args(["openai", "bob-openai", &nonce, "--", &vaultctl, "mcp"])
        .output()
        .unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    s.assert_clean(&all);
    let v: Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or(""),
    )
    .unwrap_or_else(|e| panic!("no JSON ({e}): {all}"));
    let tools = v["tools"].as_array().unwrap();
    assert!(tools.contains(&json!("capability_list")), "{v}");
    assert!(tools.contains(&json!("capability_invoke")), "{v}");
    let caps = &v["list"]["structuredContent"]["capabilities"];
    assert_eq!(caps[0]["name"], "openai", "{v}");
    assert_eq!(caps[1]["name"], "openai-limited", "{v}");
    assert_eq!(caps.as_array().unwrap().len(), 2, "{v}");

    let invoke = &v["invoke"];
    assert_eq!(invoke["isError"], false, "{invoke}");
    let sc = &invoke["structuredContent"];
    assert_eq!(sc["status"], 200, "{invoke}");
    assert!(sc["headers"].get("set-cookie").is_none(), "{invoke}");
    let body: Value = serde_json::from_str(sc["body"].as_str().unwrap()).unwrap();
    s.assert_redacted_echo(
        body["choices"][0]["message"]["content"].as_str().unwrap(),
        &nonce,
    );
    s.assert_injected(&nonce);

    // bob's capability is not alice's to invoke; nor is a credential hers to send.
    for key in ["denied", "credential"] {
        let r = &v[key];
        assert_eq!(r["isError"], true, "{key}: {r}");
        let status = r["structuredContent"]["status"].as_u64().unwrap_or(0);
        assert!((400..500).contains(&status), "{key}: {r}");
    }
    s.assert_not_upstream(&format!("caller-supplied-{nonce}"));
}

/// A fake endpoint in `dir`: answers each connection with the next of
/// `answers` after reading the request head; returns the requests seen.
fn fake_endpoint(dir: &Path, answers: Vec<&'static [u8]>) -> std::thread::JoinHandle<Vec<String>> {
    use std::io::{Read, Write};
    let listener = std::os::unix::net::UnixListener::bind(dir.join("http.sock")).unwrap();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        for answer in answers {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !aivault_tests::contains(&got, b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let _ = s.write_all(answer);
            seen.push(String::from_utf8_lossy(&got).to_string());
        }
        seen
    })
}

#[test]
fn vaultctl_http_exit_codes_follow_the_answer() {
    // No broker needed: a fake endpoint beside a (missing) daemon socket.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("aivaultd.sock");
    let root = User::root();
    let run = |args: &[&str], stdin: &[u8]| aivault_tests::vaultctl_at(&socket, &root, args, stdin);

    // Checked before connecting: usage errors even with no endpoint.
    for args in [
        &["http", "Open AI"][..],
        &["http", "openai", "-H", "no colon"],
        &["http", "openai", "-H", "X: a\rb"],
        &["http", "openai", "-p", "relative"],
        &["http", "openai", "--data", "inline"],
        &["http", "openai", "--data", "@/nonexistent/body.json"],
    ] {
        let out = run(args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
    let out = run(&["http", "openai"], b"");
    assert_eq!(out.status.code(), Some(5), "no endpoint: {}", text(&out));

    let server = fake_endpoint(
        dir.path(),
        vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\n\r\ndenied\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\ncut",
            b"not http at all\r\n\r\n",
        ],
    );
    let out = run(
        &[
            "http",
            "openai",
            "-p",
            "/v1/x?q=1",
            "-H",
            "X-A: b",
            "--data",
            "-",
        ],
        b"{\"a\":1}",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(out.stdout, b"abc");
    let out = run(&["http", "openai", "-i"], b"");
    assert_eq!(out.status.code(), Some(22), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{stdout}");
    assert!(
        stdout.ends_with("\r\n\r\ndenied\n"),
        "the body of an error is written: {stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 403"));
    let out = run(&["http", "openai"], b"");
    assert_eq!(out.status.code(), Some(8), "cut short: {}", text(&out));
    assert_eq!(out.stdout, b"cut");
    let out = run(&["http", "openai"], b"");
    assert_eq!(out.status.code(), Some(8), "not HTTP: {}", text(&out));
    let seen = server.join().unwrap();
    assert!(
        seen[0].starts_with("POST /openai/v1/x?q=1 HTTP/1.1\r\n"),
        "{}",
        seen[0]
    );
    assert!(seen[0].contains("\r\nX-A: b\r\n"), "{}", seen[0]);
    assert!(seen[0].contains("\r\nContent-Length: 7\r\n"), "{}", seen[0]);
    assert!(
        seen[1].starts_with("GET /openai/ HTTP/1.1\r\n"),
        "{}",
        seen[1]
    );
}

#[test]
fn the_credential_is_redacted_in_its_encodings_and_credential_headers_are_stripped() {
    use base64::Engine as _;
    let s = setup();
    deps();
    let out = s.curl(&s.alice, true, "/openai/v1/echo", &[]);
    let all = text(&out);
    assert_eq!(curl_status(&out), 200, "{all}");
    s.assert_clean(&all);
    // The upstream echoed the header and its base64; neither comes back.
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("Bearer {}", s.secret));
    let inner = &b64[12..b64.len() - 4];
    assert!(
        !all.contains(inner),
        "the base64 of the credential came back: {all}"
    );
    assert!(all.contains("[REDACTED"), "{all}");
    let names = curl_header_names(&out);
    assert!(!names.contains(&"set-cookie".to_string()), "{all}");
    let seen = s.up.seen();
    let r = seen.iter().find(|r| r.target == "/v1/echo").unwrap();
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {}", s.secret).as_str())
    );

    // An upstream 401 carrying the credential in www-authenticate.
    let out = s.curl(&s.alice, false, "/openai/v1/status/401", &[]);
    let all = text(&out);
    assert_eq!(curl_status(&out), 401, "{all}");
    s.assert_clean(&all);
    assert!(
        !curl_header_names(&out).contains(&"www-authenticate".to_string()),
        "{all}"
    );
}

#[test]
fn a_rate_limit_holds_across_separate_processes_and_a_daemon_restart() {
    let mut s = setup();
    deps();
    // Two curl processes get through; the third is refused with 429 and a
    // Retry-After, before the upstream is contacted.
    for i in 0..2 {
        let out = s.curl(&s.alice, true, "/openai-limited/v1/models", &[]);
        assert_eq!(curl_status(&out), 200, "request {i}: {}", text(&out));
    }
    let over = |s: &Setup, what: &str| {
        let marker = token(12);
        let out = s.curl(
            &s.alice,
            true,
            "/openai-limited/v1/models",
            &["-H", &format!("x-marker: {marker}")],
        );
        let all = text(&out);
        assert_eq!(curl_status(&out), 429, "{what}: {all}");
        assert!(
            curl_header_names(&out).contains(&"retry-after".to_string()),
            "{what}: {all}"
        );
        s.assert_not_upstream(&marker);
    };
    over(&s, "third request");
    // The state is the daemon's, kept on disk: a restart changes nothing.
    s.d.stop();
    s.d.start();
    over(&s, "after a restart");
    // The unlimited capability of the same caller is not affected.
    let out = s.curl(&s.alice, true, "/openai/v1/models", &[]);
    assert_eq!(curl_status(&out), 200, "{}", text(&out));
    // The refusals are audited with the limit that refused them.
    let limited = s.wait_audit(
        |r| r["op"] == "http.request" && r["detail"]["rate"]["limited"].is_string(),
        2,
    );
    assert_eq!(limited.len(), 2, "{limited:?}");
}
