//! The broker's endpoint as the real daemon serves it: `http.sock` beside
//! its socket (mode 0666) and the loopback TCP listener `[broker]
//! tcp_listen` asks for, each caller identified by the kernel; a caller
//! the policy gives no capability is answered 403 and closed, without a
//! broker started; the socket goes when the daemon stops. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use aivault_tests::{require_root, Daemon, Options, User};

/// The stand-in broker's client mode, run as `user`: what came back.
fn client_as(user: &User, how: &str, target: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aivault-test-broker"))
        .args([how, target])
        .uid(user.uid)
        .gid(user.gid)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_daemon_serves_http_sock_and_loopback_tcp_and_refuses_callers_without_a_capability() {
    require_root();
    let alice = User::ensure("aivt-brk-a");
    let bob = User::ensure("aivt-brk-b");
    let port = 20000 + std::process::id() % 20000;
    let mut d = Daemon::start_new(Options {
        config: format!("[broker]\ntcp_listen = \"127.0.0.1:{port}\"\n"),
        policy: format!(
            r#"
[[capability]]
name = "openai"
provider = "openai"
secret = "OPENAI_API_KEY"
methods = ["GET"]
paths = ["/v1/**"]
users = [{}]
"#,
            alice.uid
        ),
        ..Default::default()
    });
    let sock = d.path("run/http.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o666, "http.sock is for every local user");
    let sock = sock.to_str().unwrap().to_string();
    let tcp = format!("127.0.0.1:{port}");
    for (how, target) in [("connect-unix-quiet", &sock), ("connect-tcp-quiet", &tcp)] {
        let text = client_as(&bob, how, target);
        assert!(
            text.starts_with("HTTP/1.1 403 Forbidden")
                && text.contains("the policy gives this caller no capability"),
            "{how}: {text}"
        );
    }
    let log = std::fs::read_to_string(d.output_log()).unwrap();
    assert!(log.contains("broker endpoint listening"), "{log}");
    assert!(
        !log.contains("broker started"),
        "a broker for nobody: {log}"
    );
    d.stop();
    assert!(
        !std::path::Path::new(&sock).exists(),
        "http.sock goes with the daemon"
    );
}
