//! Acceptance 7 (foundation): with the passphrase provider the daemon starts
//! sealed and refuses everything but `status` and `unlock`; a wrong
//! passphrase is refused and audited; the right one unseals. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use aivault_tests::{fails_with, ok, Daemon, Options, User};

#[test]
fn sealed_until_the_right_passphrase() {
    let d = Daemon::start_new(Options {
        provider: "passphrase",
        ..Options::default()
    });
    let root = User::root();
    let alice = User::ensure("aivt-alice");

    let st: serde_json::Value =
        serde_json::from_str(&ok(&d.vaultctl(&alice, &["--json", "status"], b""))).unwrap();
    assert_eq!(st["sealed"], true);
    assert_eq!(st["key_provider"], "passphrase");
    for args in [
        &["secrets", "list"][..],
        &["secrets", "exists", "X"],
        &["secrets", "masked", "X"],
        &["audit", "list"],
    ] {
        let err = fails_with(&d.vaultctl(&alice, args, b""), 5);
        assert!(err.contains("sealed"), "{args:?}: {err}");
    }
    fails_with(
        &d.vaultctl(&alice, &["secrets", "set", "X"], b"some-value-1234"),
        5,
    );
    // Root-only and run requests are refused as "sealed" too. While sealed
    // there is no audit key, so nothing a user sends now may leave a record
    // that `audit verify` would later flag as a problem.
    for args in [
        &["audit", "verify"][..],
        &["policy", "reload"],
        &["run", "--", "true"],
    ] {
        let err = fails_with(&d.vaultctl(&alice, args, b""), 5);
        assert!(err.contains("sealed"), "{args:?}: {err}");
    }

    // Only root may unlock; a wrong passphrase is refused.
    fails_with(
        &d.vaultctl(&alice, &["unlock"], d.opts.passphrase.as_bytes()),
        4,
    );
    let err = fails_with(&d.vaultctl(&root, &["unlock"], b"wrong passphrase\n"), 4);
    assert!(err.contains("wrong passphrase"), "{err}");
    fails_with(&d.vaultctl(&alice, &["secrets", "list"], b""), 5);

    ok(&d.vaultctl(
        &root,
        &["unlock"],
        format!("{}\n", d.opts.passphrase).as_bytes(),
    ));
    ok(&d.vaultctl(&alice, &["secrets", "set", "X"], b"some-value-1234"));
    ok(&d.vaultctl(&alice, &["secrets", "exists", "X"], b""));

    // Both refusals and the unlock are in the audit log, and the chain holds.
    let trail = ok(&d.vaultctl(&root, &["--json", "audit", "list", "--limit", "100"], b""));
    let unlocks: Vec<serde_json::Value> = trail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["op"] == "unlock")
        .collect();
    let outcomes: Vec<&str> = unlocks
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["denied", "denied", "ok"], "{trail}");
    assert_eq!(unlocks[1]["reason"], "wrong passphrase");
    ok(&d.vaultctl(&root, &["audit", "verify"], b""));
}
