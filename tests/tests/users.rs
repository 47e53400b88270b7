//! Acceptance 1 (foundation): two real unprivileged users each manage their own
//! secrets through `vaultctl`; neither can see or touch the other's; neither
//! can manage the system scope. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use aivault_tests::{fails_with, ok, Daemon, Options, User};

fn names(list_json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(list_json).expect("list --json is JSON");
    v.as_array()
        .expect("array")
        .iter()
        .map(|e| e["name"].as_str().expect("name").to_string())
        .collect()
}

#[test]
fn two_users_manage_only_their_own_secrets() {
    let d = Daemon::start_new(Options::default());
    let alice = User::ensure("aivt-alice");
    let bob = User::ensure("aivt-bob");

    ok(&d.vaultctl(
        &alice,
        &[
            "secrets",
            "set",
            "GITHUB_TOKEN",
            "--description",
            "ci token",
            "--tag",
            "ci",
        ],
        b"ghp_alice_0123456789abcdWXYZ\n",
    ));
    ok(&d.vaultctl(
        &bob,
        &["secrets", "set", "GITHUB_TOKEN"],
        b"ghp_bob_9876543210zyxwvuQRST\n",
    ));
    ok(&d.vaultctl(
        &bob,
        &["secrets", "set", "BOB_ONLY"],
        b"bob-only-value-1234\n",
    ));

    // Listing shows each user only their own names.
    assert_eq!(
        names(&ok(&d.vaultctl(
            &alice,
            &["--json", "secrets", "list"],
            b""
        ))),
        ["GITHUB_TOKEN"]
    );
    assert_eq!(
        names(&ok(&d.vaultctl(&bob, &["--json", "secrets", "list"], b""))),
        ["BOB_ONLY", "GITHUB_TOKEN"]
    );
    let human = ok(&d.vaultctl(&alice, &["secrets", "list"], b""));
    assert!(
        human.contains("ci token") && human.contains("[ci]"),
        "{human}"
    );

    // exists: 0 present, 1 absent — and bob's secret is absent for alice.
    ok(&d.vaultctl(&alice, &["secrets", "exists", "GITHUB_TOKEN"], b""));
    fails_with(
        &d.vaultctl(&alice, &["secrets", "exists", "BOB_ONLY"], b""),
        1,
    );

    // masked: fixed width, at most the last four characters, each their own.
    assert_eq!(
        ok(&d.vaultctl(&alice, &["secrets", "masked", "GITHUB_TOKEN"], b"")).trim(),
        "********WXYZ"
    );
    assert_eq!(
        ok(&d.vaultctl(&bob, &["secrets", "masked", "GITHUB_TOKEN"], b"")).trim(),
        "********QRST"
    );
    fails_with(
        &d.vaultctl(&alice, &["secrets", "masked", "BOB_ONLY"], b""),
        3,
    );

    // Alice can neither rotate nor remove bob's secret, nor overwrite it by name.
    fails_with(
        &d.vaultctl(
            &alice,
            &["secrets", "rotate", "BOB_ONLY"],
            b"stolen-value-xyz\n",
        ),
        3,
    );
    fails_with(&d.vaultctl(&alice, &["secrets", "rm", "BOB_ONLY"], b""), 3);
    assert_eq!(
        ok(&d.vaultctl(&bob, &["secrets", "masked", "GITHUB_TOKEN"], b"")).trim(),
        "********QRST"
    );

    // set refuses to clobber; rotate bumps the version; rm removes.
    fails_with(
        &d.vaultctl(
            &alice,
            &["secrets", "set", "GITHUB_TOKEN"],
            b"another-value-000\n",
        ),
        2,
    );
    let rotated = ok(&d.vaultctl(
        &alice,
        &["--json", "secrets", "rotate", "GITHUB_TOKEN"],
        b"ghp_alice_rotated_value_ABCD\n",
    ));
    let v: serde_json::Value = serde_json::from_str(&rotated).unwrap();
    assert_eq!(v["version"], 2);
    assert_eq!(
        ok(&d.vaultctl(&alice, &["secrets", "masked", "GITHUB_TOKEN"], b"")).trim(),
        "********ABCD"
    );
    let list: serde_json::Value = serde_json::from_str(&ok(&d.vaultctl(
        &alice,
        &["--json", "secrets", "list"],
        b"",
    )))
    .unwrap();
    assert_eq!(list[0]["description"], "ci token", "rotate keeps metadata");
    ok(&d.vaultctl(&alice, &["secrets", "rm", "GITHUB_TOKEN"], b""));
    fails_with(
        &d.vaultctl(&alice, &["secrets", "exists", "GITHUB_TOKEN"], b""),
        1,
    );
    ok(&d.vaultctl(&bob, &["secrets", "exists", "GITHUB_TOKEN"], b""));

    // Neither user reaches the system scope; root does.
    for u in [&alice, &bob] {
        let err = fails_with(
            &d.vaultctl(
                u,
                &["secrets", "set", "--scope", "system", "SYS"],
                b"system-value-123\n",
            ),
            4,
        );
        assert!(err.contains("only root"), "{err}");
        fails_with(
            &d.vaultctl(u, &["secrets", "list", "--scope", "system"], b""),
            4,
        );
    }
    ok(&d.vaultctl(
        &User::root(),
        &["secrets", "set", "--scope", "system", "SYS"],
        b"system-value-123\n",
    ));
    assert_eq!(
        names(&ok(&d.vaultctl(
            &User::root(),
            &["--json", "secrets", "list", "--scope", "system"],
            b""
        ))),
        ["SYS"]
    );
    fails_with(
        &d.vaultctl(
            &alice,
            &["secrets", "exists", "--scope", "system", "SYS"],
            b"",
        ),
        4,
    );

    // status reports the identity the kernel gave, not anything the client said.
    let st: serde_json::Value =
        serde_json::from_str(&ok(&d.vaultctl(&bob, &["--json", "status"], b""))).unwrap();
    assert_eq!(st["caller_uid"], bob.uid);
    assert_eq!(st["own_secrets"], 2);

    // Each user's audit trail holds only their own records.
    let trail = ok(&d.vaultctl(&alice, &["--json", "audit", "list", "--limit", "1000"], b""));
    assert!(!trail.is_empty());
    for line in trail.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["uid"], alice.uid, "alice sees only her records: {line}");
    }
    fails_with(&d.vaultctl(&alice, &["audit", "verify"], b""), 4);
}

#[test]
fn import_reads_dotenv_and_never_echoes_values() {
    let d = Daemon::start_new(Options::default());
    let alice = User::ensure("aivt-alice");
    let env =
        b"# comment\nexport API_KEY=sk-import-0123456789\nDB_URL=\"postgres://u:p4ss@h/db\"\n";
    let out = d.vaultctl(&alice, &["secrets", "import", "-"], env);
    ok(&out);
    for v in [&b"sk-import-0123456789"[..], b"p4ss"] {
        assert!(
            !aivault_tests::contains(&out.stdout, v) && !aivault_tests::contains(&out.stderr, v)
        );
    }
    assert_eq!(
        names(&ok(&d.vaultctl(
            &alice,
            &["--json", "secrets", "list"],
            b""
        ))),
        ["API_KEY", "DB_URL"]
    );
    // A malformed file is refused whole, naming the line but not its content.
    let err = fails_with(
        &d.vaultctl(
            &alice,
            &["secrets", "import", "-"],
            b"NEW=1234567\nthis-has-s3cret-no-equals\n",
        ),
        2,
    );
    assert!(err.contains("line 2") && !err.contains("s3cret"), "{err}");
    fails_with(&d.vaultctl(&alice, &["secrets", "exists", "NEW"], b""), 1);
}
