//! The decisions against a real audit log, rate-limit file and policy,
//! with a vault that notes what the log held when a value was read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aivault_proto::broker::{BrokerTesting, ResolveOverride};
use aivault_proto::ErrorCode;

use super::*;
use crate::audit::{AuditKey, AuditLog};

const SECRET: &[u8] = b"sk-live-0123456789abcdef";
const NOW: u64 = 60 * 30_000 + 7;

const POLICY: &str = r#"
[[capability]]
name = "openai"
provider = "openai"
secret = "OPENAI_API_KEY"
methods = ["GET", "POST"]
paths = ["/v1/**"]
users = [1000]
rate = { per_caller_per_minute = 2 }

[[capability]]
name = "shared/gh"
provider = "github"
secret = "GITHUB_TOKEN"
scope = "system"
methods = ["GET"]
paths = ["/repos/*/*"]
users = [1000, 1001]
"#;

struct Fixture {
    dir: tempfile::TempDir,
    audit: AuditGate,
    policy: Policy,
}

fn fixture() -> Fixture {
    fixture_with(POLICY)
}

fn fixture_with(policy: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let key = AuditKey::derive(&[9u8; 32]);
    let log = AuditLog::open(
        &dir.path().join("audit.jsonl"),
        &dir.path().join("state/audit.anchor"),
        Some(key.clone()),
    )
    .unwrap();
    Fixture {
        audit: AuditGate::new(log, Some(key)),
        policy: crate::policy::from_str_for_test("/etc/aivault/policy.toml", policy).unwrap(),
        dir,
    }
}

impl Fixture {
    fn log(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn records(&self) -> Vec<serde_json::Value> {
        AuditLog::read(&self.log(), None, 1000).unwrap()
    }
}

/// A vault of a few values that, whenever one is read, notes the newest
/// audit record at that moment.
struct Vault {
    log: PathBuf,
    values: Mutex<HashMap<(Scope, String), Vec<u8>>>,
    expiries: Mutex<HashMap<(Scope, String), u64>>,
    seen_at_read: Mutex<Vec<serde_json::Value>>,
}

impl Vault {
    fn new(log: &Path) -> Vault {
        let mut values = HashMap::new();
        values.insert(
            (Scope::User(1000), "OPENAI_API_KEY".into()),
            SECRET.to_vec(),
        );
        values.insert(
            (Scope::System, "GITHUB_TOKEN".into()),
            b"ghp_system".to_vec(),
        );
        Vault {
            log: log.into(),
            values: Mutex::new(values),
            expiries: Mutex::new(HashMap::new()),
            seen_at_read: Mutex::new(Vec::new()),
        }
    }
}

impl SecretSource for Vault {
    fn expiry(&self, scope: Scope, name: &str) -> Option<u64> {
        self.expiries
            .lock()
            .unwrap()
            .get(&(scope, name.to_owned()))
            .copied()
    }
    fn exists(&self, scope: Scope, name: &str) -> bool {
        self.values
            .lock()
            .unwrap()
            .contains_key(&(scope, name.to_owned()))
    }
    fn store(
        &self,
        scope: Scope,
        name: &str,
        value: SecretBytes,
        expires: Option<u64>,
    ) -> Result<(), WireError> {
        let key = (scope, name.to_owned());
        self.values
            .lock()
            .unwrap()
            .insert(key.clone(), value.as_bytes().to_vec());
        if let Some(at) = expires {
            self.expiries.lock().unwrap().insert(key, at);
        }
        Ok(())
    }
    fn value(&self, scope: Scope, name: &str) -> Result<SecretBytes, WireError> {
        let newest = AuditLog::read(&self.log, None, 1).unwrap().pop();
        self.seen_at_read
            .lock()
            .unwrap()
            .push(newest.unwrap_or_default());
        self.values
            .lock()
            .unwrap()
            .get(&(scope, name.to_owned()))
            .map(|v| SecretBytes::new(v.clone()))
            .ok_or_else(|| WireError::new(ErrorCode::NotFound, format!("secret {name} is not set")))
    }
}

fn caller(uid: u32) -> Caller {
    Caller {
        uid,
        gid: uid,
        pid: 4242,
    }
}

fn who(uid: u32) -> Who {
    Who {
        uid,
        gid: uid,
        groups: Vec::new(),
    }
}

fn ask<'a>(capability: &'a str, method: &'a str, path: &'a str) -> Ask<'a> {
    Ask {
        capability,
        method,
        path,
    }
}

fn decide(
    f: &Fixture,
    rate: &RateState,
    vault: &Vault,
    uid: u32,
    a: &Ask<'_>,
) -> Result<SecretBytes, Denied> {
    decide_all(f, rate, vault, uid, a).map(|g| g.secret)
}

fn decide_all(
    f: &Fixture,
    rate: &RateState,
    vault: &Vault,
    uid: u32,
    a: &Ask<'_>,
) -> Result<Granted, Denied> {
    let ctx = Context {
        policy: &f.policy,
        audit: &f.audit,
        rate,
        secrets: vault,
        now: NOW,
    };
    authorize(&ctx, &caller(uid), &who(uid), a)
}

const SIGV4_POLICY: &str = r#"
[[capability]]
name = "s3"
provider = "aws"
hosts = ["s3.us-east-1.amazonaws.com"]
secret = "AWS_SECRET_ACCESS_KEY"
auth = { kind = "aws-sigv4", service = "s3", region = "us-east-1", access_key_id = "AWS_ACCESS_KEY_ID" }
methods = ["GET"]
paths = ["/**"]
users = [1000]
"#;

#[test]
fn a_sigv4_grant_carries_the_access_key_id_read_after_the_record() {
    let f = fixture_with(SIGV4_POLICY);
    let rate = RateState::open(&f.state()).unwrap();
    let vault = Vault::new(&f.log());
    vault.values.lock().unwrap().insert(
        (Scope::User(1000), "AWS_SECRET_ACCESS_KEY".into()),
        b"wJalr-secret".to_vec(),
    );
    vault.values.lock().unwrap().insert(
        (Scope::User(1000), "AWS_ACCESS_KEY_ID".into()),
        b"AKIAEXAMPLE1".to_vec(),
    );
    let g = decide_all(&f, &rate, &vault, 1000, &ask("s3", "GET", "/bucket/key")).unwrap();
    assert_eq!(g.secret.as_bytes(), b"wJalr-secret");
    assert_eq!(g.extra.len(), 1);
    assert_eq!(g.extra[0].0, aivault_broker::auth::ACCESS_KEY_ID);
    assert_eq!(g.extra[0].1.as_bytes(), b"AKIAEXAMPLE1");
    // Both were read after the grant was recorded.
    let seen = vault.seen_at_read.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(seen
        .iter()
        .all(|r| r["op"] == OP_REQUEST && r["outcome"] == "ok"));

    // Without the access key id: unavailable, recorded as failed.
    vault
        .values
        .lock()
        .unwrap()
        .remove(&(Scope::User(1000), "AWS_ACCESS_KEY_ID".into()));
    let d = decide_all(&f, &rate, &vault, 1000, &ask("s3", "GET", "/bucket/key")).unwrap_err();
    assert_eq!(d.reason, DenyReason::Unavailable);
    assert!(d.message.contains("AWS_ACCESS_KEY_ID"), "{}", d.message);
    assert_eq!(f.records().pop().unwrap()["outcome"], "failed");

    // An expired access key id refuses before anything is read.
    vault.values.lock().unwrap().insert(
        (Scope::User(1000), "AWS_ACCESS_KEY_ID".into()),
        b"AKIAEXAMPLE1".to_vec(),
    );
    vault
        .expiries
        .lock()
        .unwrap()
        .insert((Scope::User(1000), "AWS_ACCESS_KEY_ID".into()), NOW);
    let reads = vault.seen_at_read.lock().unwrap().len();
    let d = decide_all(&f, &rate, &vault, 1000, &ask("s3", "GET", "/bucket/key")).unwrap_err();
    assert!(d.message.contains("expired"), "{}", d.message);
    assert_eq!(vault.seen_at_read.lock().unwrap().len(), reads);
}

/// A query value long and irregular enough that it cannot turn up in an
/// audit record by chance (a record's hashes and ids are hex).
const QUERY_VALUE: &str = "Qv7zT0kXr2WmP9cLy4SnA8hDuJ3bGe6F";

#[test]
fn the_grant_is_durable_before_the_secret_is_read_and_no_record_holds_it() {
    let f = fixture();
    let rate = RateState::open(&f.state()).unwrap();
    let vault = Vault::new(&f.log());
    let got = decide(
        &f,
        &rate,
        &vault,
        1000,
        &ask(
            "openai",
            "POST",
            &format!("/v1/chat/completions?key={QUERY_VALUE}&stream"),
        ),
    )
    .unwrap();
    assert_eq!(got.as_bytes(), SECRET);
    let seen = vault.seen_at_read.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r["op"], OP_REQUEST, "{r}");
    assert_eq!(r["outcome"], "ok", "{r}");
    assert_eq!(r["name"], "openai", "{r}");
    assert_eq!(
        (r["uid"].clone(), r["gid"].clone(), r["pid"].clone()),
        (1000.into(), 1000.into(), 4242.into())
    );
    assert_eq!(r["scope"], "user");
    assert_eq!(r["detail"]["method"], "POST");
    assert_eq!(r["detail"]["secret"], "OPENAI_API_KEY");
    assert_eq!(r["detail"]["rate"], "counted");
    // Query values are recorded as `*`, whatever the broker sent.
    assert_eq!(
        r["detail"]["path"], "/v1/chat/completions?key=*&stream",
        "{r}"
    );

    // A denial, a failure and an outcome later, no record holds a value.
    let _ = decide(&f, &rate, &vault, 1001, &ask("openai", "GET", "/v1/models"));
    let _ = decide(
        &f,
        &rate,
        &vault,
        1001,
        &ask("shared/gh", "GET", "/repos/a/b"),
    );
    finished(
        &f.audit,
        &caller(1000),
        &Outcome {
            capability: "openai",
            method: "POST",
            path: &format!("/v1/chat/completions?key={QUERY_VALUE}"),
            status: Some(200),
            request_bytes: 10,
            response_bytes: 20,
            duration_us: 300,
            error: None,
        },
    );
    let raw = std::fs::read(f.log()).unwrap();
    for v in [SECRET, b"ghp_system".as_slice(), QUERY_VALUE.as_bytes()] {
        assert!(
            !raw.windows(v.len()).any(|w| w == v),
            "{} in the audit log",
            String::from_utf8_lossy(v)
        );
    }
    let ops: Vec<String> = f
        .records()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["op"].as_str().unwrap(),
                r["outcome"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        ops,
        [
            "http.request ok",
            "http.request denied",
            "http.request ok",
            "http.response ok"
        ]
    );
}

#[test]
fn another_users_capability_is_refused_like_one_that_does_not_exist() {
    let f = fixture();
    let rate = RateState::open(&f.state()).unwrap();
    let vault = Vault::new(&f.log());
    let other = decide(&f, &rate, &vault, 1001, &ask("openai", "GET", "/v1/models")).unwrap_err();
    let none = decide(&f, &rate, &vault, 1001, &ask("nosuch", "GET", "/v1/models")).unwrap_err();
    assert_eq!(other.reason, DenyReason::Forbidden);
    assert_eq!(none.reason, DenyReason::Forbidden);
    assert_eq!(
        other.message.replace("openai", "X"),
        none.message.replace("nosuch", "X"),
        "the refusal tells bob that alice's capability exists"
    );
    assert!(
        vault.seen_at_read.lock().unwrap().is_empty(),
        "a secret was read"
    );
    let recs = f.records();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["outcome"], "denied");
    assert_eq!(recs[0]["uid"], 1001);
    assert_eq!(recs[0]["detail"]["why"], "not-allowed");
    assert_eq!(recs[1]["detail"]["why"], "unknown");
}

#[test]
fn method_and_path_are_checked_again() {
    let f = fixture();
    let rate = RateState::open(&f.state()).unwrap();
    let vault = Vault::new(&f.log());
    for (method, path) in [
        ("DELETE", "/v1/models"),
        ("GET", "/v2/models"),
        ("GET", "/v1/../admin"),
        ("GET", "/v1/%2e%2e/admin"),
        ("GET", "/v1"),
        ("get", "/v1/models"),
    ] {
        let d = decide(&f, &rate, &vault, 1000, &ask("openai", method, path)).unwrap_err();
        assert_eq!(d.reason, DenyReason::Forbidden, "{method} {path}");
    }
    assert!(vault.seen_at_read.lock().unwrap().is_empty());
    assert!(f.records().iter().all(|r| r["outcome"] == "denied"));
    // The system-scope capability, for both its users.
    for uid in [1000, 1001] {
        let s = decide(
            &f,
            &rate,
            &vault,
            uid,
            &ask("shared/gh", "GET", "/repos/o/r"),
        )
        .unwrap();
        assert_eq!(s.as_bytes(), b"ghp_system");
    }
    assert_eq!(f.records().last().unwrap()["scope"], "system");
}

#[test]
fn a_rate_limit_holds_across_a_daemon_restart() {
    let f = fixture();
    let vault = Vault::new(&f.log());
    let a = ask("openai", "GET", "/v1/models");
    {
        let rate = RateState::open(&f.state()).unwrap();
        decide(&f, &rate, &vault, 1000, &a).unwrap();
        decide(&f, &rate, &vault, 1000, &a).unwrap();
        let d = decide(&f, &rate, &vault, 1000, &a).unwrap_err();
        assert_eq!(d.reason, DenyReason::RateLimited);
        assert_eq!(d.retry_after_s, Some(60 - NOW as u32 % 60));
    }
    // A new daemon: the counts come back from the state directory.
    let rate = RateState::open(&f.state()).unwrap();
    let d = decide(&f, &rate, &vault, 1000, &a).unwrap_err();
    assert_eq!(d.reason, DenyReason::RateLimited);
    let last = f.records().pop().unwrap();
    assert_eq!(last["outcome"], "denied");
    assert_eq!(last["detail"]["rate"]["limited"], "caller");
    assert_eq!(last["detail"]["rate"]["limit"], 2);
    assert_eq!(vault.seen_at_read.lock().unwrap().len(), 2);
}

#[test]
fn a_missing_or_expired_secret_is_unavailable() {
    let f = fixture();
    let rate = RateState::open(&f.state()).unwrap();
    let vault = Vault::new(&f.log());
    vault.values.lock().unwrap().clear();
    let d = decide(&f, &rate, &vault, 1000, &ask("openai", "GET", "/v1/models")).unwrap_err();
    assert_eq!(d.reason, DenyReason::Unavailable);
    assert!(d.message.contains("OPENAI_API_KEY"), "{}", d.message);
    let recs = f.records();
    assert_eq!(recs[0]["outcome"], "ok");
    assert_eq!(recs[1]["outcome"], "failed");

    vault
        .expiries
        .lock()
        .unwrap()
        .insert((Scope::User(1000), "OPENAI_API_KEY".into()), NOW);
    let d = decide(&f, &rate, &vault, 1000, &ask("openai", "GET", "/v1/models")).unwrap_err();
    assert_eq!(d.reason, DenyReason::Unavailable);
    assert!(d.message.contains("expired"), "{}", d.message);
    assert_eq!(f.records().pop().unwrap()["outcome"], "denied");
}

#[test]
fn untrusted_fields_are_bounded_in_the_record() {
    let f = fixture();
    let long = "e".repeat(10_000);
    let name = "n".repeat(1000);
    finished(
        &f.audit,
        &caller(1000),
        &Outcome {
            capability: &name,
            method: "POST",
            path: &format!("/v1/{long}"),
            status: None,
            request_bytes: 0,
            response_bytes: 0,
            duration_us: 5,
            error: Some(&long),
        },
    );
    let r = f.records().pop().unwrap();
    assert_eq!(r["op"], OP_RESPONSE);
    assert_eq!(r["outcome"], "failed");
    assert!(r["reason"].as_str().unwrap().chars().count() <= MAX_ERROR + 1);
    assert!(r["name"].as_str().unwrap().chars().count() <= MAX_NAME + 1);
    assert!(r["detail"]["path"].as_str().unwrap().chars().count() <= MAX_PATH + 1);
    assert_eq!(r["detail"]["status"], serde_json::Value::Null);
}

#[test]
fn the_init_names_the_callers_capabilities_and_the_ports_it_may_reach() {
    let f = fixture();
    let mut cfg = BrokerConfig::default();
    assert!(broker_init(&f.policy, &who(1002), &cfg).is_none());
    let init = broker_init(&f.policy, &who(1001), &cfg).unwrap();
    assert!(init.capabilities.contains("shared/gh"));
    assert!(
        !init.capabilities.contains("OPENAI_API_KEY"),
        "{}",
        init.capabilities
    );
    assert_eq!(init.tcp_connect, [443]);
    assert!(init.require_full_landlock);
    assert_eq!(init.testing, None);
    cfg.testing = Some(BrokerTesting {
        extra_roots_pem: None,
        resolve: vec![ResolveOverride {
            host: "api.openai.com".into(),
            addrs: vec![
                "127.0.0.1:8443".parse().unwrap(),
                "[::1]:443".parse().unwrap(),
            ],
        }],
        allow_loopback: true,
    });
    let init = broker_init(&f.policy, &who(1000), &cfg).unwrap();
    assert_eq!(init.tcp_connect, [443, 8443]);
    assert_eq!(init.testing, cfg.testing);
}

#[test]
fn an_init_too_large_for_its_datagram_is_not_made() {
    let one = |i: usize| {
        format!(
            "[[capability]]\nname = \"c{i}\"\nprovider = \"openai\"\nsecret = \"OPENAI_API_KEY\"\nmethods = [\"GET\"]\npaths = [\"/v1/**\"]\nusers = [1000]\n"
        )
    };
    let many: String = (0..3000).map(one).collect();
    let p = crate::policy::from_str_for_test("/etc/aivault/policy.toml", &many).unwrap();
    assert!(p.broker_text(&who(1000)).unwrap().len() > aivault_proto::broker::MAX_CONTROL);
    assert!(broker_init(&p, &who(1000), &BrokerConfig::default()).is_none());
    let few: String = (0..10).map(one).collect();
    let p = crate::policy::from_str_for_test("/etc/aivault/policy.toml", &few).unwrap();
    let init = broker_init(&p, &who(1000), &BrokerConfig::default()).unwrap();
    let bytes = postcard::to_stdvec(&aivault_proto::broker::ToBroker::Init(init)).unwrap();
    assert!(bytes.len() < aivault_proto::broker::MAX_CONTROL);
}

const OAUTH_POLICY: &str = r#"
[[capability]]
name = "example"
hosts = ["api.example.com", "auth.example.com"]
secret = "EXAMPLE_ACCESS"
methods = ["GET"]
paths = ["/v1/**"]
users = [1000]
auth = { kind = "oauth2", grant = "refresh-token", token_url = "https://auth.example.com/token", client_id = "cli", client_secret = "EXAMPLE_CLIENT", refresh_token = "EXAMPLE_REFRESH" }

[[capability]]
name = "machine"
hosts = ["api.example.com"]
secret = "MACHINE_ACCESS"
scope = "system"
methods = ["GET"]
paths = ["/**"]
users = [1000]
auth = { kind = "oauth2", grant = "client-credentials", token_url = "https://api.example.com/oauth/token", client_id = "m", client_secret = "MACHINE_CLIENT" }

[[capability]]
name = "plain"
hosts = ["api.example.com"]
secret = "PLAIN_KEY"
methods = ["GET"]
paths = ["/**"]
users = [1000]
auth = { kind = "header", header = "x-key", template = "{{secret}}" }
"#;

fn oauth_fixture() -> (Fixture, Vault) {
    let mut f = fixture();
    f.policy = crate::policy::from_str_for_test("/etc/aivault/policy.toml", OAUTH_POLICY).unwrap();
    let vault = Vault::new(&f.log());
    {
        let mut v = vault.values.lock().unwrap();
        let user = Scope::User(1000);
        v.insert((user, "EXAMPLE_ACCESS".into()), b"at-stored-1".to_vec());
        v.insert((user, "EXAMPLE_CLIENT".into()), b"cs-user-1".to_vec());
        v.insert((user, "EXAMPLE_REFRESH".into()), b"rt-user-1".to_vec());
        v.insert(
            (Scope::System, "MACHINE_CLIENT".into()),
            b"cs-machine".to_vec(),
        );
    }
    vault
        .expiries
        .lock()
        .unwrap()
        .insert((Scope::User(1000), "EXAMPLE_ACCESS".into()), NOW + 3600);
    (f, vault)
}

fn grant(f: &Fixture, rate: &RateState, vault: &Vault, a: &Ask<'_>) -> Result<Granted, Denied> {
    let ctx = Context {
        policy: &f.policy,
        audit: &f.audit,
        rate,
        secrets: vault,
        now: NOW,
    };
    authorize(&ctx, &caller(1000), &who(1000), a)
}

fn refreshed(f: &Fixture, vault: &Vault, capability: &str, t: Tokens) -> Result<(), String> {
    let rate = RateState::open(&f.state()).unwrap();
    let ctx = Context {
        policy: &f.policy,
        audit: &f.audit,
        rate: &rate,
        secrets: vault,
        now: NOW,
    };
    tokens_refreshed(&ctx, &caller(1000), &who(1000), capability, t)
}

#[test]
fn a_valid_stored_access_token_is_granted_without_refresh_material() {
    let (f, vault) = oauth_fixture();
    let rate = RateState::open(&f.state()).unwrap();
    let g = grant(&f, &rate, &vault, &ask("example", "GET", "/v1/me")).unwrap();
    assert_eq!(g.secret.as_bytes(), b"at-stored-1");
    assert!(g.extra.is_empty());
    assert!(!g.refreshable);
    let rec = f.records().pop().unwrap();
    assert_eq!(rec["detail"]["token"], "stored", "{rec}");
}

#[test]
fn an_expired_or_missing_access_token_yields_the_refresh_material() {
    let (f, vault) = oauth_fixture();
    let rate = RateState::open(&f.state()).unwrap();
    // Expiring within the margin counts as expired.
    vault
        .expiries
        .lock()
        .unwrap()
        .insert((Scope::User(1000), "EXAMPLE_ACCESS".into()), NOW + 5);
    let g = grant(&f, &rate, &vault, &ask("example", "GET", "/v1/me")).unwrap();
    assert!(g.secret.as_bytes().is_empty());
    assert!(g.refreshable);
    let extra: Vec<(&str, &[u8])> = g
        .extra
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    assert_eq!(
        extra,
        [
            ("client_secret", &b"cs-user-1"[..]),
            ("refresh_token", &b"rt-user-1"[..])
        ]
    );
    let rec = f.records().pop().unwrap();
    assert_eq!(
        (rec["outcome"].as_str(), rec["detail"]["token"].as_str()),
        (Some("ok"), Some("refresh"))
    );
    // A client-credentials capability with no token stored yet: its
    // client secret, from the system scope.
    let g = grant(&f, &rate, &vault, &ask("machine", "GET", "/x")).unwrap();
    assert!(g.refreshable);
    assert_eq!(g.extra.len(), 1);
    assert_eq!(g.extra[0].0, "client_secret");
    assert_eq!(g.extra[0].1.as_bytes(), b"cs-machine");
    // Missing refresh material is unavailable, recorded as failed.
    vault
        .values
        .lock()
        .unwrap()
        .remove(&(Scope::System, "MACHINE_CLIENT".into()));
    let d = grant(&f, &rate, &vault, &ask("machine", "GET", "/x")).unwrap_err();
    assert_eq!(d.reason, DenyReason::Unavailable);
    assert_eq!(f.records().pop().unwrap()["outcome"], "failed");
}

#[test]
fn refreshed_tokens_are_written_to_the_vault_and_recorded_without_values() {
    let (f, vault) = oauth_fixture();
    refreshed(
        &f,
        &vault,
        "example",
        Tokens {
            access_token: SecretBytes::new(b"at-new-77".to_vec()),
            expires_in_s: Some(120),
            refresh_token: Some(SecretBytes::new(b"rt-new-77".to_vec())),
        },
    )
    .unwrap();
    let user = Scope::User(1000);
    let values = vault.values.lock().unwrap();
    assert_eq!(values[&(user, "EXAMPLE_ACCESS".into())], b"at-new-77");
    assert_eq!(values[&(user, "EXAMPLE_REFRESH".into())], b"rt-new-77");
    drop(values);
    assert_eq!(
        vault.expiries.lock().unwrap()[&(user, "EXAMPLE_ACCESS".into())],
        NOW + 120
    );
    let rec = f.records().pop().unwrap();
    assert_eq!(rec["op"], OP_TOKEN_REFRESH);
    assert_eq!(rec["detail"]["secret"], "EXAMPLE_ACCESS");
    assert_eq!(rec["detail"]["refresh_token"], "EXAMPLE_REFRESH");
    let log = std::fs::read_to_string(f.log()).unwrap();
    assert!(!log.contains("at-new-77") && !log.contains("rt-new-77"));

    // The stored token is granted from now on.
    let rate = RateState::open(&f.state()).unwrap();
    let g = grant(&f, &rate, &vault, &ask("example", "GET", "/v1/me")).unwrap();
    assert_eq!(g.secret.as_bytes(), b"at-new-77");
    assert!(!g.refreshable);

    // A client-credentials capability goes to the system scope; a refresh
    // token it has no name for is not stored anywhere.
    refreshed(
        &f,
        &vault,
        "machine",
        Tokens {
            access_token: SecretBytes::new(b"at-machine".to_vec()),
            expires_in_s: None,
            refresh_token: Some(SecretBytes::new(b"rt-stray".to_vec())),
        },
    )
    .unwrap();
    let values = vault.values.lock().unwrap();
    assert_eq!(
        values[&(Scope::System, "MACHINE_ACCESS".into())],
        b"at-machine"
    );
    assert!(!values.values().any(|v| v == b"rt-stray"));
}

#[test]
fn tokens_for_a_capability_that_is_no_oauth2_one_or_not_the_callers_are_refused() {
    let (f, vault) = oauth_fixture();
    let t = || Tokens {
        access_token: SecretBytes::new(b"at-x".to_vec()),
        expires_in_s: None,
        refresh_token: None,
    };
    let before = f.records().len();
    assert!(refreshed(&f, &vault, "plain", t()).is_err());
    assert!(refreshed(&f, &vault, "nonexistent", t()).is_err());
    assert_eq!(f.records().len(), before);
    assert!(!vault.values.lock().unwrap().values().any(|v| v == b"at-x"));
}
