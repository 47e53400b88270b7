//! Acceptance 3 (foundation): swapping two records' ciphertexts on disk makes
//! both fail with a tamper error while the daemon keeps serving the rest.
//! Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use aivault_tests::{fails_with, ok, Daemon, Options, User};
use aivaultd::store::format;

#[test]
fn swapped_ciphertexts_are_reported_as_tampering() {
    let mut d = Daemon::start_new(Options::default());
    let alice = User::ensure("aivt-alice");
    for (n, v) in [
        ("AAA", "value-of-aaa-0001"),
        ("BBB", "value-of-bbb-0002"),
        ("CCC", "value-of-ccc-0003WXYZ"),
    ] {
        ok(&d.vaultctl(&alice, &["secrets", "set", n], v.as_bytes()));
    }
    d.stop();

    let mut file = format::read_all(&d.state_dir()).expect("read vault");
    let ia = file
        .records
        .iter()
        .position(|r| r.name == "AAA")
        .expect("AAA");
    let ib = file
        .records
        .iter()
        .position(|r| r.name == "BBB")
        .expect("BBB");
    let a = file.records[ia].sealed.clone();
    file.records[ia].sealed = file.records[ib].sealed.clone();
    file.records[ib].sealed = a;
    format::write_all(&d.state_dir(), &file).expect("write vault");

    d.start();
    for n in ["AAA", "BBB"] {
        let err = fails_with(&d.vaultctl(&alice, &["secrets", "masked", n], b""), 6);
        assert!(err.contains("tampered"), "{err}");
    }
    // The daemon is still up and the untouched record still decrypts.
    assert_eq!(
        ok(&d.vaultctl(&alice, &["secrets", "masked", "CCC"], b"")).trim(),
        "********WXYZ"
    );
    let list = ok(&d.vaultctl(&alice, &["secrets", "list"], b""));
    assert!(list.contains("AAA") && list.contains("CCC"));
    // The failure is in the audit trail.
    let trail = ok(&d.vaultctl(&alice, &["--json", "audit", "list", "--limit", "100"], b""));
    assert!(
        trail
            .lines()
            .any(|l| l.contains("\"failed\"") && l.contains("AAA")),
        "{trail}"
    );
    assert!(d.alive());
}

#[test]
fn a_record_moved_to_another_user_does_not_decrypt() {
    let mut d = Daemon::start_new(Options::default());
    let alice = User::ensure("aivt-alice");
    let bob = User::ensure("aivt-bob");
    ok(&d.vaultctl(
        &alice,
        &["secrets", "set", "TOKEN"],
        b"alice-token-value-1234",
    ));
    d.stop();
    let mut file = format::read_all(&d.state_dir()).expect("read vault");
    // Re-label alice's record as bob's: same ciphertext, other scope.
    let rec = file
        .records
        .iter_mut()
        .find(|r| r.name == "TOKEN")
        .expect("record");
    rec.scope = aivaultd::store::Scope::User(bob.uid);
    format::write_all(&d.state_dir(), &file).expect("write vault");
    d.start();
    let err = fails_with(&d.vaultctl(&bob, &["secrets", "masked", "TOKEN"], b""), 6);
    assert!(err.contains("tampered"), "{err}");
}
