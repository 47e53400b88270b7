//! Issue 13: a vault of the old single-file format (`vault.bin`, format 1)
//! moves into the transactional store when the daemon first starts, with
//! every secret and its metadata readable afterwards and the old file
//! removed once the store is verified. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use aivault_tests::{ok, Daemon, Options, User};
use aivaultd::keys::{load_kek, KeyProviderSpec};
use aivaultd::store::{format, legacy, Scope, Vault};

/// Turns the daemon's (stopped) state directory into the old format: the
/// same vault written by the format-1 writer, and no store.
fn downgrade_to_format_1(d: &Daemon) -> format::VaultFile {
    let state = d.state_dir();
    let file = format::read_all(&state).unwrap();
    std::fs::remove_file(format::store_path(&state)).unwrap();
    std::fs::remove_file(format::header_path(&state)).unwrap();
    legacy::write_file(&legacy::legacy_path(&state), &file).unwrap();
    file
}

#[test]
fn an_old_vault_is_migrated_at_the_first_start() {
    let mut d = Daemon::start_new(Options::default());
    let alice = User::ensure("aivt-alice");
    let bob = User::ensure("aivt-bob");
    let secrets = [
        (&alice, "TOKEN", "alice-token-value-0001"),
        (&alice, "DB_PASS", "alice-db-pass-0002"),
        (&bob, "TOKEN", "bob-token-value-0003"),
    ];
    for (u, n, v) in secrets {
        ok(&d.vaultctl(u, &["secrets", "set", n], v.as_bytes()));
    }
    ok(&d.vaultctl(
        &alice,
        &[
            "secrets",
            "rotate",
            "DB_PASS",
            "--description",
            "the database",
            "--tag",
            "prod",
        ],
        b"alice-db-pass-0004",
    ));
    d.stop();
    let old = downgrade_to_format_1(&d);
    assert_eq!(old.records.len(), 3);
    let state = d.state_dir();
    // `--check-config` reads the old header without migrating anything.
    let out = d.command().arg("--check-config").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(legacy::legacy_path(&state).exists());
    assert!(!format::store_path(&state).exists());

    d.start();
    assert!(!legacy::legacy_path(&state).exists(), "old file removed");
    assert!(format::store_path(&state).exists());
    for (u, n, v) in [
        (&alice, "TOKEN", "0001"),
        (&alice, "DB_PASS", "0004"),
        (&bob, "TOKEN", "0003"),
    ] {
        let masked = ok(&d.vaultctl(u, &["secrets", "masked", n], b""));
        assert!(masked.trim().ends_with(v), "{n}: {masked}");
    }
    let list = ok(&d.vaultctl(&alice, &["--json", "secrets", "list"], b""));
    assert!(
        list.contains("the database") && list.contains("prod"),
        "{list}"
    );
    // The migrated vault takes writes, and they last.
    ok(&d.vaultctl(&bob, &["secrets", "set", "NEW"], b"bob-new-after-migration"));
    d.stop();

    let kek = load_kek(&KeyProviderSpec::File(d.key_file()))
        .unwrap()
        .unwrap();
    let v = Vault::open(&state, &kek).unwrap();
    assert_eq!(v.count(), (4, 0));
    let plain = |s: Scope, n: &str| v.decrypt(s, n).unwrap().as_bytes().to_vec();
    assert_eq!(
        plain(Scope::User(alice.uid), "TOKEN"),
        b"alice-token-value-0001"
    );
    assert_eq!(
        plain(Scope::User(alice.uid), "DB_PASS"),
        b"alice-db-pass-0004"
    );
    assert_eq!(
        plain(Scope::User(bob.uid), "TOKEN"),
        b"bob-token-value-0003"
    );
    assert_eq!(
        plain(Scope::User(bob.uid), "NEW"),
        b"bob-new-after-migration"
    );
    let m = v.meta(Scope::User(alice.uid), "DB_PASS").unwrap();
    assert_eq!(m.version, 2);
    assert_eq!(m.description.as_deref(), Some("the database"));
    drop(v);
    // Every migrated record is the old one, byte for byte.
    let now = format::read_all(&state).unwrap();
    for r in &old.records {
        assert!(now.records.contains(r), "{} changed", r.name);
    }
}
