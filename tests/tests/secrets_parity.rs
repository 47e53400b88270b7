//! Secret features on a par with other secret managers: expiry that runs
//! respect, and values generated inside the daemon. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use aivault_client::ClientError;
use aivault_proto::{
    Charset, ErrorCode, ImportConflict, MetaInput, Reply, RequestBody, SecretBytes, SetMode,
    WireScope,
};
use aivault_tests::{fails_with, ok, Daemon, Options, User};

/// 2020-01-01T00:00:00Z, as `--expires 2020-01-01` stores it.
const PAST: &str = "2020-01-01";
const PAST_RFC3339: &str = "2020-01-01T00:00:00.000Z";

fn set_with(d: &Daemon, user: &User, name: &str, extra: &[&str]) {
    let mut args = vec!["secrets", "set", name];
    args.extend_from_slice(extra);
    ok(&d.vaultctl(user, &args, b"parity-test-value-0123456789"));
}

fn list_json(d: &Daemon, user: &User, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["--json", "secrets", "list"];
    args.extend_from_slice(extra);
    let out = ok(&d.vaultctl(user, &args, b""));
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn names(list: &[serde_json::Value]) -> Vec<String> {
    let mut n: Vec<String> = list
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

#[test]
fn list_marks_expired_secrets_and_filters_by_window() {
    let d = Daemon::start_new(Options::default());
    let alice = User::ensure("aivt-alice");
    set_with(&d, &alice, "OLD", &["--expires", PAST]);
    set_with(&d, &alice, "SOON", &["--expires", "3d"]);
    set_with(&d, &alice, "LATER", &["--expires", "400d"]);
    set_with(&d, &alice, "NEVER", &[]);

    let table = ok(&d.vaultctl(&alice, &["secrets", "list"], b""));
    let line = |n: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{n} ")))
            .unwrap_or_else(|| panic!("{n} missing from:\n{table}"))
            .to_string()
    };
    assert!(line("OLD").contains("EXPIRED"), "{table}");
    for n in ["SOON", "LATER", "NEVER"] {
        assert!(!line(n).contains("EXPIRED"), "{table}");
    }

    let all = list_json(&d, &alice, &[]);
    assert_eq!(all.len(), 4);
    for s in &all {
        let expect = s["name"] == "OLD";
        assert_eq!(s["expired"], expect, "{s}");
    }

    let soon = list_json(&d, &alice, &["--expiring", "7d"]);
    assert_eq!(names(&soon), ["OLD", "SOON"]);
    let table = ok(&d.vaultctl(&alice, &["secrets", "list", "--expiring", "7d"], b""));
    assert!(
        table.contains("OLD") && table.contains("SOON") && !table.contains("LATER"),
        "{table}"
    );

    let err = fails_with(
        &d.vaultctl(&alice, &["secrets", "list", "--expiring", "soon"], b""),
        2,
    );
    assert!(err.contains("--expiring"), "{err}");
}

#[test]
fn a_run_refuses_an_expired_secret_unless_the_rule_allows_it() {
    let alice = User::ensure("aivt-alice");
    let policy = format!(
        "[[rule]]\nname = \"strict\"\ncommand = \"/usr/bin/true\"\nusers = [\"{u}\"]\n\
         secrets = [{{ name = \"OLD\" }}]\n\n\
         [[rule]]\nname = \"lenient\"\ncommand = \"/usr/bin/echo\"\nusers = [\"{u}\"]\n\
         secrets = [{{ name = \"OLD\" }}]\nallow_expired = true\n",
        u = alice.name
    );
    let d = Daemon::start_new(Options {
        policy,
        ..Options::default()
    });
    set_with(&d, &alice, "OLD", &["--expires", PAST]);

    let reason = format!("secret OLD expired at {PAST_RFC3339}");
    let err = fails_with(&d.vaultctl(&alice, &["run", "--", "true"], b""), 4);
    assert!(err.contains(&reason), "{err}");
    let log = std::fs::read_to_string(d.audit_log()).unwrap();
    let record = log
        .lines()
        .find(|l| l.contains(&reason))
        .unwrap_or_else(|| panic!("no audit record with {reason:?}:\n{log}"));
    let record: serde_json::Value = serde_json::from_str(record).unwrap();
    assert_eq!(record["op"], "run", "{record}");

    let out = ok(&d.vaultctl(&alice, &["run", "--", "echo", "ran-anyway"], b""));
    assert!(out.contains("ran-anyway"), "{out}");

    // A secret not yet expired runs under the strict rule.
    ok(&d.vaultctl(
        &alice,
        &["secrets", "set", "--force", "OLD", "--expires", "30d"],
        b"parity-test-value-0123456789",
    ));
    ok(&d.vaultctl(&alice, &["run", "--", "true"], b""));
}

/// `sh` under a rule that knowingly allows it, with `G` as `TOKEN`.
fn generate_daemon(alice: &User) -> Daemon {
    let policy = format!(
        "[[rule]]\nname = \"sh\"\ncommand = \"/usr/bin/sh\"\nusers = [\"{}\"]\n\
         allow_interpreter = true\nsecrets = [{{ name = \"G\", env = \"TOKEN\" }}]\n",
        alice.name
    );
    Daemon::start_new(Options {
        policy,
        ..Options::default()
    })
}

fn sh(d: &Daemon, user: &User, script: &str) -> String {
    ok(&d.vaultctl(user, &["run", "--", "sh", "-c", script], b""))
        .trim()
        .to_string()
}

#[test]
fn generate_stores_a_value_drawn_by_the_daemon_and_never_shows_it() {
    let alice = User::ensure("aivt-alice");
    let d = generate_daemon(&alice);
    let out = d.vaultctl(
        &alice,
        &[
            "secrets",
            "generate",
            "G",
            "--length",
            "40",
            "--charset",
            "hex",
        ],
        b"",
    );
    ok(&out);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(said.contains("generated G (40 characters)"), "{said}");

    let mask = ok(&d.vaultctl(&alice, &["secrets", "masked", "G"], b""));
    assert_eq!(mask.trim().chars().count(), 12, "{mask}");

    // Length and charset, seen from inside a run.
    assert_eq!(sh(&d, &alice, "printf %s \"$TOKEN\" | wc -c"), "40");
    assert_eq!(
        sh(&d, &alice, "printf %s \"$TOKEN\" | tr -d 0-9a-f | wc -c"),
        "0"
    );
    // The value itself is redacted from output; reversed it is not, which
    // lets the test know it and look for it where it must never be.
    let shown = sh(&d, &alice, "printf %s \"$TOKEN\"");
    let reversed = sh(&d, &alice, "printf %s \"$TOKEN\" | rev");
    let value: String = reversed.chars().rev().collect();
    assert_eq!(value.len(), 40, "{reversed}");
    assert!(value.bytes().all(|b| b"0123456789abcdef".contains(&b)));
    assert!(!shown.contains(&value), "{shown}");
    assert!(!said.contains(&value) && !String::from_utf8_lossy(&out.stdout).contains(&value));
    let log = std::fs::read_to_string(d.audit_log()).unwrap();
    assert!(!log.contains(&value));
    assert!(log.contains("\"secret.generate\""), "{log}");

    // Like `set`: an existing secret is replaced only with --force, and
    // then with a new value.
    let err = fails_with(&d.vaultctl(&alice, &["secrets", "generate", "G"], b""), 2);
    assert!(err.contains("exists"), "{err}");
    let json = ok(&d.vaultctl(
        &alice,
        &[
            "--json",
            "secrets",
            "generate",
            "G",
            "--force",
            "--charset",
            "base64url",
        ],
        b"",
    ));
    let reply: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(reply["version"], 2, "{json}");
    assert_eq!(reply["length"], 32, "{json}");
    assert_eq!(sh(&d, &alice, "printf %s \"$TOKEN\" | wc -c"), "32");
    assert_eq!(
        sh(
            &d,
            &alice,
            "printf %s \"$TOKEN\" | tr -d A-Za-z0-9_- | wc -c"
        ),
        "0"
    );
    let again = sh(&d, &alice, "printf %s \"$TOKEN\" | rev");
    assert_ne!(again, reversed);
}

#[test]
fn generate_refuses_lengths_out_of_range() {
    let alice = User::ensure("aivt-alice");
    let d = generate_daemon(&alice);
    for n in ["7", "4097"] {
        fails_with(
            &d.vaultctl(&alice, &["secrets", "generate", "G", "--length", n], b""),
            2,
        );
    }
    let exists = d.vaultctl(&alice, &["secrets", "exists", "G"], b"");
    assert_eq!(exists.status.code(), Some(1));
    // The daemon checks the length itself, whatever a client sends, and
    // records the refusal.
    for length in [0, 7, 4097, u32::MAX] {
        let reply = d.client().call(RequestBody::SecretGenerate {
            scope: WireScope::Own,
            name: "G".into(),
            length,
            charset: Charset::Alnum,
            meta: MetaInput::default(),
            mode: SetMode::Create,
        });
        match reply {
            Err(ClientError::Daemon(e)) => {
                assert_eq!(e.code, ErrorCode::BadRequest, "{length}: {e:?}");
                assert!(e.message.contains("8 to 4096"), "{}", e.message);
            }
            other => panic!("length {length}: {other:?}"),
        }
    }
    let log = std::fs::read_to_string(d.audit_log()).unwrap();
    let refusals = log
        .lines()
        .filter(|l| l.contains("\"secret.generate\"") && l.contains("8 to 4096"))
        .count();
    assert_eq!(refusals, 4, "{log}");
}

fn version(d: &Daemon, user: &User, name: &str) -> Option<u64> {
    list_json(d, user, &[])
        .iter()
        .find(|s| s["name"] == name)
        .map(|s| s["version"].as_u64().unwrap())
}

#[test]
fn import_refuses_skips_or_overwrites_existing_names_and_can_dry_run() {
    let d = Daemon::start_new(Options::default());
    let alice = User::ensure("aivt-alice");
    set_with(&d, &alice, "A", &[]);
    let file = b"A=import-new-value-0001\nB=import-new-value-0002\n";
    let import = |extra: &[&str]| {
        let mut args = vec!["secrets", "import", "-"];
        args.extend_from_slice(extra);
        d.vaultctl(&alice, &args, file)
    };

    // By default an existing name refuses the whole import.
    let err = fails_with(&import(&[]), 2);
    assert!(
        err.contains("A exist") && err.contains("nothing was imported"),
        "{err}"
    );
    assert_eq!(version(&d, &alice, "B"), None);

    // A dry run says what would happen and stores nothing.
    let plan = ok(&import(&["--dry-run", "--conflict", "skip"]));
    assert!(
        plan.contains("would create B") && plan.contains("would skip A"),
        "{plan}"
    );
    let plan = ok(&import(&["--dry-run", "--conflict", "overwrite"]));
    assert!(plan.contains("would overwrite A"), "{plan}");
    fails_with(&import(&["--dry-run"]), 2);
    assert_eq!(version(&d, &alice, "B"), None);
    assert_eq!(version(&d, &alice, "A"), Some(1));

    let out = import(&["--conflict", "skip"]);
    ok(&out);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        said.contains("imported 1 secrets: B") && said.contains("skipped 1 existing: A"),
        "{said}"
    );
    assert_eq!(version(&d, &alice, "A"), Some(1));
    assert_eq!(version(&d, &alice, "B"), Some(1));

    ok(&import(&["--conflict", "overwrite"]));
    assert_eq!(version(&d, &alice, "A"), Some(2));
    assert_eq!(version(&d, &alice, "B"), Some(2));
    let log = std::fs::read_to_string(d.audit_log()).unwrap();
    assert!(log.contains("\"conflict\":\"overwrite\""), "{log}");
}

#[test]
fn the_daemon_decides_import_conflicts_itself() {
    let d = Daemon::start_new(Options::default());
    let root = User::root();
    set_with(&d, &root, "R", &[]);
    let entries = || {
        vec![
            (
                "R".to_string(),
                SecretBytes::new(b"import-new-value-1".to_vec()),
            ),
            (
                "S".to_string(),
                SecretBytes::new(b"import-new-value-2".to_vec()),
            ),
        ]
    };
    let call = |conflict| {
        d.client().call(RequestBody::SecretImportWith {
            scope: WireScope::Own,
            entries: entries(),
            conflict,
        })
    };
    match call(ImportConflict::Error) {
        Err(ClientError::Daemon(e)) => assert_eq!(e.code, ErrorCode::AlreadyExists, "{e:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(version(&d, &root, "S"), None);
    assert_eq!(
        call(ImportConflict::Skip).unwrap(),
        Reply::Imported { count: 1 }
    );
    assert_eq!(version(&d, &root, "R"), Some(1));
    assert_eq!(
        call(ImportConflict::Skip).unwrap(),
        Reply::Imported { count: 0 }
    );
    assert_eq!(
        call(ImportConflict::Overwrite).unwrap(),
        Reply::Imported { count: 2 }
    );
    assert_eq!(version(&d, &root, "R"), Some(2));
    // A name twice in one import is refused as a whole, whatever the mode:
    // the second value would silently replace the first.
    for conflict in [ImportConflict::Error, ImportConflict::Overwrite] {
        let twice = d.client().call(RequestBody::SecretImportWith {
            scope: WireScope::Own,
            entries: vec![
                (
                    "T".to_string(),
                    SecretBytes::new(b"first-value-0001".to_vec()),
                ),
                (
                    "T".to_string(),
                    SecretBytes::new(b"second-value-002".to_vec()),
                ),
            ],
            conflict,
        });
        match twice {
            Err(ClientError::Daemon(e)) => {
                assert_eq!(e.code, ErrorCode::BadRequest, "{e:?}");
                assert!(e.message.contains("more than once"), "{e:?}");
            }
            other => panic!("a duplicate name was imported: {other:?}"),
        }
        assert_eq!(version(&d, &root, "T"), None, "nothing of it was stored");
    }
}

/// A quoted value over several lines (a PEM key, as `.env` files of other
/// tools hold them) is imported whole; an empty value is skipped, said by
/// name and line, and not stored.
#[test]
fn import_takes_multi_line_quoted_values_and_skips_empty_ones() {
    let alice = User::ensure("aivt-alice");
    let d = generate_daemon(&alice);
    let file = b"EMPTY=\nG=\"-----BEGIN TEST KEY-----\nline-two-of-the-key\n-----END TEST KEY-----\"\nALSO_EMPTY=''\n";
    let out = d.vaultctl(&alice, &["secrets", "import", "-"], file);
    ok(&out);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        said.contains("line 1: EMPTY has an empty value; skipped")
            && said.contains("line 5: ALSO_EMPTY has an empty value; skipped")
            && said.contains("imported 1 secrets: G"),
        "{said}"
    );
    assert_eq!(version(&d, &alice, "EMPTY"), None);
    assert_eq!(version(&d, &alice, "ALSO_EMPTY"), None);
    // The command sees the three lines, joined by line feeds.
    let lines = sh(
        &d,
        &alice,
        "printf '%s' \"$TOKEN\" | wc -l; case \"$TOKEN\" in '-----BEGIN TEST KEY-----\nline-two-of-the-key\n-----END TEST KEY-----') echo whole;; esac",
    );
    assert_eq!(lines, "2\nwhole", "{lines}");
    // A file of empty values only stores nothing and says why.
    let err = fails_with(&d.vaultctl(&alice, &["secrets", "import", "-"], b"X=\n"), 2);
    assert!(err.contains("no NAME=value lines with a value"), "{err}");
}
