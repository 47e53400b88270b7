//! Long lists against the real daemon: 20,000 secrets with the longest
//! description and tags allowed, listed over the socket (`vaultctl secrets
//! list`, table and JSON), over D-Bus (dbus-next on a private system-like
//! bus) and over MCP (the official Python SDK driving `vaultctl mcp`); a
//! policy of 2,000 rules checked and shown; and one entry too large for any
//! reply, which must be a clear error on a connection that goes on
//! answering. Each list is far larger than one frame (256 KiB), so each
//! only works page by page. Needs root, and what `scripts/dbus-deps.sh` and
//! `scripts/mcp-deps.sh` install (the tests run them and fail if they fail).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use aivault_proto::{
    decode, encode, read_frame, write_frame, ErrorCode, Hello, HelloReply, PageRequest, Reply,
    Request, RequestBody, Response, HELLO_MAGIC,
};
use aivault_tests::bus::{repo, Bus};
use aivault_tests::{fails_with, ok, token, Daemon, Options, User};
use aivaultd::ops::{MAX_DESCRIPTION_LEN, MAX_TAGS, MAX_TAG_LEN};
use aivaultd::store::MAX_NAME_LEN;
use serde_json::Value;

const COUNT: usize = 20_000;
/// Entries per `secrets import`: each import is one request frame.
const BATCH: usize = 1_500;

fn mcp_deps() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| aivault_tests::install_deps("mcp-deps.sh"))
}

fn dbus_deps() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| aivault_tests::install_deps("dbus-deps.sh"))
}

/// The `i`th name, as long as a name may be.
fn name(i: usize) -> String {
    let head = format!("S{i:05}_");
    format!("{head}{}", "N".repeat(MAX_NAME_LEN - head.len()))
}

fn names() -> Vec<String> {
    (0..COUNT).map(name).collect()
}

/// `--description` and every `--tag` at their longest.
fn meta_args() -> Vec<String> {
    let mut args = vec!["--description".to_string(), "d".repeat(MAX_DESCRIPTION_LEN)];
    for t in 0..MAX_TAGS {
        let head = format!("t{t:02}");
        args.push("--tag".into());
        args.push(format!("{head}{}", "g".repeat(MAX_TAG_LEN - head.len())));
    }
    args
}

/// Stores the secrets with `secrets import`, a batch per request.
fn populate(d: &Daemon, user: &User) {
    let meta = meta_args();
    let all = names();
    for batch in all.chunks(BATCH) {
        let mut text = String::new();
        for n in batch {
            text.push_str(&format!("{n}={}\n", token(24)));
        }
        let mut args = vec!["secrets", "import", "-", "--conflict", "overwrite"];
        args.extend(meta.iter().map(String::as_str));
        ok(&d.vaultctl(user, &args, text.as_bytes()));
    }
}

/// Every name listed, once each, and each with its full metadata.
#[track_caller]
fn assert_all_listed(listed: &[String], what: &str) {
    assert_eq!(listed.len(), COUNT, "{what}: {} names", listed.len());
    let unique: HashSet<&str> = listed.iter().map(String::as_str).collect();
    assert_eq!(unique.len(), COUNT, "{what}: names listed twice");
    for n in names() {
        assert!(unique.contains(n.as_str()), "{what}: {n} missing");
    }
}

fn user() -> User {
    User::ensure("aivt-scale")
}

#[test]
fn twenty_thousand_secrets_with_full_metadata_list_over_the_socket() {
    let alice = user();
    let d = Daemon::start_new(Options::default());
    populate(&d, &alice);

    // The JSON list: every secret once, in order, metadata whole.
    let out = d.vaultctl(&alice, &["--json", "secrets", "list"], b"");
    let v: Value = serde_json::from_str(&ok(&out)).unwrap();
    let list = v.as_array().unwrap();
    let listed: Vec<String> = list
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_all_listed(&listed, "secrets list --json");
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "not in name order");
    for s in list {
        assert_eq!(
            s["description"].as_str().map(str::len),
            Some(MAX_DESCRIPTION_LEN),
            "{}",
            s["name"]
        );
        assert_eq!(s["tags"].as_array().map(Vec::len), Some(MAX_TAGS));
    }

    // The table: a header, then a line per secret starting with its name.
    let table = ok(&d.vaultctl(&alice, &["secrets", "list"], b""));
    let rows: Vec<String> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    assert_all_listed(&rows, "secrets list");

    // The audit log, now well over a frame (each import's record lists
    // 32 KiB of names): every record once, in order, imports included.
    let out = ok(&d.vaultctl(
        &alice,
        &["--json", "audit", "list", "--limit", "10000"],
        b"",
    ));
    let records: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(out.len() > aivault_proto::MAX_FRAME, "{} bytes", out.len());
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "records out of order or twice"
    );
    let imports = records
        .iter()
        .filter(|r| r["op"] == "secret.import")
        .count();
    assert_eq!(imports, COUNT.div_ceil(BATCH));
}

#[test]
fn twenty_thousand_secrets_with_full_metadata_list_over_mcp() {
    let alice = user();
    let d = Daemon::start_new(Options::default());
    populate(&d, &alice);
    // secret_list a call at a time, following next_cursor.
    let mut cmd = Command::new(mcp_deps().join("venv/bin/python"));
    cmd.env_clear()
        .env("AIVAULT_SOCKET", d.socket())
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/tmp")
        .current_dir("/")
        .stdin(Stdio::null())
        .uid(alice.uid)
        .gid(alice.gid)
        .arg(repo().join("tests/mcp/list_pages.py"))
        .args(["secrets", "--", &vaultctl(), "mcp"]);
    let v = last_json(cmd, "MCP secret_list");
    assert!(v.get("error").is_none(), "MCP secret_list failed: {v}");
    let listed: Vec<String> = serde_json::from_value(v["names"].clone()).unwrap();
    assert_all_listed(&listed, "MCP secret_list");
    assert_eq!(v["short_meta"], 0, "metadata cut short over MCP");
    assert!(v["calls"].as_u64().unwrap() > 1, "{}", v["calls"]);
}

#[test]
fn twenty_thousand_secrets_with_full_metadata_list_over_dbus() {
    dbus_deps();
    let bus = Bus::start();
    let alice = user();
    let d = Daemon::start_new(Options {
        config: bus.daemon_config(),
        ..Options::default()
    });
    bus.wait_for_name("org.aivault.Vault1", &d);
    populate(&d, &alice);
    let mut cmd = Command::new(dbus_deps().join("venv/bin/python"));
    cmd.env_clear()
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/tmp")
        .current_dir("/")
        .stdin(Stdio::null())
        .uid(alice.uid)
        .gid(alice.gid)
        .arg(repo().join("tests/dbus/client.py"))
        .arg("pages");
    let v = last_json(cmd, "dbus-next ListSecretsPage");
    assert!(v.get("error").is_none(), "ListSecretsPage failed: {v}");
    let listed: Vec<String> = serde_json::from_value(v["names"].clone()).unwrap();
    assert_all_listed(&listed, "ListSecretsPage");
    assert_eq!(v["short_meta"], 0, "metadata cut short over D-Bus");
    // The whole list in one message is refused with a pointer to the
    // pages, and the daemon stays on the bus.
    assert_eq!(
        v["whole"]["error"], "org.aivault.Vault1.Error.Busy",
        "{}",
        v["whole"]
    );
    assert!(
        v["whole"]["message"]
            .as_str()
            .unwrap()
            .contains("ListSecretsPage"),
        "{}",
        v["whole"]
    );
}

/// A policy of `n` rules for `user`, each with its own arguments.
fn big_policy(user: &User, n: usize) -> String {
    let mut p = String::new();
    for i in 0..n {
        p.push_str(&format!(
            "[[rule]]\nname = \"rule-{i:04}\"\ncommand = \"/usr/bin/true\"\nusers = [\"{u}\"]\nargs = [{{ exact = [\"ARG_{i:04}\"] }}]\n\n",
            u = user.name
        ));
    }
    p
}

#[test]
fn a_policy_of_2000_rules_checks_and_shows_whole() {
    const RULES: usize = 2_000;
    let alice = user();
    let d = Daemon::start_new(Options {
        policy: big_policy(&alice, RULES),
        ..Options::default()
    });
    let out = d.vaultctl(&User::root(), &["--json", "policy", "check"], b"");
    let v: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let rules: Vec<&str> = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (0..RULES).map(|i| format!("rule-{i:04}")).collect();
    assert_eq!(rules, want);
    // Its explanation is larger than one frame: only pages carry it.
    assert!(
        out.stdout.len() > aivault_proto::MAX_FRAME,
        "{}",
        out.stdout.len()
    );
    let text = ok(&d.vaultctl(&User::root(), &["policy", "check"], b""));
    assert!(text.trim_end().ends_with("policy ok"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("rule-")).count(),
        RULES
    );

    // The user's commands, from vaultctl and from MCP policy_commands.
    let out = d.vaultctl(&alice, &["--json", "policy", "show"], b"");
    let v: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v.as_array().unwrap().len(), RULES);
    let mut cmd = Command::new(mcp_deps().join("venv/bin/python"));
    cmd.env_clear()
        .env("AIVAULT_SOCKET", d.socket())
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/tmp")
        .current_dir("/")
        .stdin(Stdio::null())
        .uid(alice.uid)
        .gid(alice.gid)
        .arg(repo().join("tests/mcp/list_pages.py"))
        .args(["policy", "--", &vaultctl(), "mcp"]);
    let v = last_json(cmd, "MCP policy_commands");
    assert_eq!(v["isError"], false, "{v}");
    let listed: Vec<String> = serde_json::from_value(v["rules"].clone()).unwrap();
    assert_eq!(listed, want);
}

#[test]
fn an_entry_too_large_for_any_reply_is_a_clear_error_and_the_connection_answers_on() {
    let alice = user();
    // One rule whose explanation alone is larger than a frame.
    let policy = format!(
        "[[rule]]\nname = \"huge\"\ncommand = \"/usr/bin/true\"\nusers = [\"{}\"]\nargs = [{{ exact = [\"{}\"] }}]\n",
        alice.name,
        "A".repeat(aivault_proto::MAX_FRAME + 1024)
    );
    let d = Daemon::start_new(Options {
        policy,
        ..Options::default()
    });
    // vaultctl: an error saying what and why, with the "busy" exit code.
    let err = fails_with(&d.vaultctl(&User::root(), &["policy", "check"], b""), 5);
    assert!(
        err.contains("policy entry 1 is") && err.contains("more than one reply can carry"),
        "{err}"
    );
    let err = fails_with(&d.vaultctl(&alice, &["policy", "show"], b""), 5);
    assert!(err.contains("more than one reply can carry"), "{err}");

    // One connection: the paged request, then the whole answer as an old
    // client asks for it, are refused; the connection answers on.
    let mut c = d.client();
    let page = PageRequest::default();
    for body in [
        RequestBody::PolicyCheckPage { page },
        RequestBody::PolicyCheck,
    ] {
        match c.call(body) {
            Err(aivault_client::ClientError::Daemon(e)) => {
                assert_eq!(e.code, ErrorCode::Busy, "{e:?}");
                assert!(e.message.contains("more than one reply can carry"), "{e:?}");
            }
            other => panic!("expected a Busy error, got {other:?}"),
        }
        assert!(matches!(c.call(RequestBody::Status), Ok(Reply::Status(_))));
    }

    // A raw client of this version gets the same answer to the whole
    // request, and the next request on the connection is answered.
    let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    let hello = Hello {
        magic: HELLO_MAGIC,
        version: aivault_proto::PROTOCOL_VERSION,
        client: "raw".into(),
    };
    write_frame(&mut s, &encode(&hello).unwrap()).unwrap();
    let r: HelloReply = decode(&read_frame(&mut s).unwrap()).unwrap();
    assert!(r.result.is_ok(), "{r:?}");
    for (id, body) in [(1, RequestBody::PolicyCheck), (2, RequestBody::Status)] {
        let req = Request { id, body };
        write_frame(&mut s, &encode(&req).unwrap()).unwrap();
        let resp: Response = decode(&read_frame(&mut s).unwrap()).unwrap();
        assert_eq!(resp.id, id);
        match resp.result {
            Err(e) if id == 1 => assert_eq!(e.code, ErrorCode::Busy, "{e:?}"),
            Ok(Reply::Status(_)) if id == 2 => {}
            other => panic!("request {id}: {other:?}"),
        }
    }

    // A version-2 client would send run requests of another layout: it is
    // refused at the handshake, with the versions this daemon speaks.
    let mut s = std::os::unix::net::UnixStream::connect(d.socket()).unwrap();
    let hello = Hello {
        magic: HELLO_MAGIC,
        version: 2,
        client: "version 2".into(),
    };
    write_frame(&mut s, &encode(&hello).unwrap()).unwrap();
    let r: HelloReply = decode(&read_frame(&mut s).unwrap()).unwrap();
    let e = r.result.expect_err("a version-2 client was accepted");
    assert!(e.message.contains("protocol versions 3"), "{e:?}");
}

fn vaultctl() -> String {
    aivault_tests::bin("vaultctl").display().to_string()
}

/// Runs a client script to completion and parses the JSON on its last line.
fn last_json(mut cmd: Command, what: &str) -> Value {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed ({:?})\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{what} printed no JSON ({e}): {stdout}"))
}
