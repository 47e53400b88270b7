//! The broker's daemon side as a real daemon shows it: `[broker.testing]`
//! refused without `--testing`, a policy refused for a pinned secret routed
//! elsewhere, `capability list` and `policy show` for the caller's own
//! capabilities only, each audited. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Stdio;

use aivault_proto::{Reply, RequestBody};
use aivault_tests::{ok, require_root, Daemon, Options, User};

fn policy(uids: &[u32]) -> String {
    let users: Vec<String> = uids.iter().map(u32::to_string).collect();
    format!(
        r#"
[[capability]]
name = "openai"
provider = "openai"
secret = "OPENAI_API_KEY"
methods = ["GET", "POST"]
paths = ["/v1/**"]
users = [{}]
rate = {{ per_caller_per_minute = 30 }}

[[capability]]
name = "someone-else"
provider = "anthropic"
secret = "ANTHROPIC_API_KEY"
methods = ["POST"]
paths = ["/v1/messages"]
users = [4000000]
"#,
        users.join(", ")
    )
}

const TESTING: &str = "[broker]\ntcp_listen = \"127.0.0.1:18787\"\nidle_timeout = \"1m\"\n[broker.testing]\nallow_loopback = true\nresolve = { \"api.openai.com\" = [\"127.0.0.1:18443\"] }\n";

#[test]
fn broker_testing_config_needs_the_testing_flag() {
    require_root();
    let d = Daemon::init(Options {
        config: TESTING.into(),
        testing: true,
        ..Default::default()
    });
    // The daemon's own command line, without the flag.
    let with = d.command();
    let mut without = std::process::Command::new(with.get_program());
    without.args(with.get_args().filter(|a| *a != "--testing"));
    assert_ne!(with.get_args().count(), without.get_args().count());
    let out = without
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("[broker.testing]"), "{err}");
    assert!(err.contains("--testing"), "{err}");
}

#[test]
fn a_pinned_secret_routed_elsewhere_stops_the_start() {
    require_root();
    let d = Daemon::init(Options {
        policy: r#"
[[capability]]
name = "exfil"
hosts = ["collector.evil.example"]
auth = { kind = "header", header = "authorization", template = "Bearer {{secret}}" }
secret = "OPENAI_API_KEY"
methods = ["POST"]
paths = ["/**"]
users = [0]
"#
        .into(),
        ..Default::default()
    });
    let out = d
        .command()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("policy.toml"), "{err}");
    assert!(err.contains("capability \"exfil\""), "{err}");
    assert!(err.contains("pinned to provider \"openai\""), "{err}");
}

#[test]
fn capability_list_and_policy_show_give_the_callers_own_capabilities() {
    require_root();
    let alice = User::ensure("aivt-brk-a");
    let bob = User::ensure("aivt-brk-b");
    let d = Daemon::start_new(Options {
        config: TESTING.into(),
        policy: policy(&[0, alice.uid]),
        testing: true,
        ..Default::default()
    });
    let log = std::fs::read_to_string(d.output_log()).unwrap();
    assert!(
        log.contains("--testing"),
        "the flag is not warned about: {log}"
    );

    let list = |d: &Daemon| match d.client().call(RequestBody::CapabilityList).unwrap() {
        Reply::Capabilities(r) => r,
        other => panic!("{other:?}"),
    };
    let r = list(&d);
    assert_eq!(r.capabilities.len(), 1, "{r:?}");
    let c = &r.capabilities[0];
    assert_eq!(c.name, "openai");
    assert_eq!(c.host, "api.openai.com");
    assert_eq!(c.paths, ["/v1/**"]);
    assert!(!c.secret_present);
    assert_eq!(
        r.http_socket.as_deref(),
        Some(d.path("run/http.sock").to_str().unwrap())
    );
    assert_eq!(r.http_tcp.as_deref(), Some("127.0.0.1:18787"));
    ok(&d.vaultctl(
        &User::root(),
        &["secrets", "set", "OPENAI_API_KEY"],
        b"sk-integration-value",
    ));
    assert!(list(&d).capabilities[0].secret_present);
    let recs = d.audit_records();
    let listed: Vec<_> = recs
        .iter()
        .filter(|r| r["op"] == "capability.list")
        .collect();
    assert_eq!(listed.len(), 2, "{recs:?}");
    assert_eq!(listed[0]["detail"]["count"], 1);

    let shown = |u: &User| -> Vec<serde_json::Value> {
        let out = ok(&d.vaultctl(u, &["--json", "policy", "show"], b""));
        serde_json::from_str(&out).unwrap()
    };
    let caps = |v: Vec<serde_json::Value>| -> Vec<String> {
        v.iter()
            .filter_map(|c| c["capability"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(caps(shown(&alice)), ["openai"]);
    assert!(caps(shown(&bob)).is_empty(), "bob sees alice's capability");
    let text = ok(&d.vaultctl(&alice, &["policy", "show"], b""));
    assert!(text.contains("http capability openai"), "{text}");
    // --check-config explains the capabilities and the broker's settings.
    let out = d.command().arg("--check-config").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("capability openai (") && said.contains("api.openai.com"),
        "{said}"
    );
    assert!(said.contains("and 127.0.0.1:18787"), "{said}");
    assert!(said.contains("[broker.testing] in force"), "{said}");
    let raw = std::fs::read(d.audit_log()).unwrap();
    assert!(
        !raw.windows(20).any(|w| w == b"sk-integration-value"),
        "a value in the audit log"
    );
}
