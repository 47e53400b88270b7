//! Encrypted backup and restore: `vaultctl secrets backup FILE [--all]` and
//! `secrets restore FILE [--verify-only] [--conflict …]`, restored on a
//! second installation with the same key. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use aivault_tests::{contains, fails_with, ok, set_secret, Daemon, Options, User};

const VALUE: &str = "backup-test-value-0123456789";

/// `sh` for alice and bob, with `aws/access_key` as `AWS_ACCESS_KEY`.
fn policy(users: &[&User]) -> String {
    let users: Vec<String> = users.iter().map(|u| format!("\"{}\"", u.name)).collect();
    format!(
        "[[rule]]\nname = \"sh\"\ncommand = \"/usr/bin/sh\"\nusers = [{}]\n\
         allow_interpreter = true\nsecrets = [{{ name = \"aws/access_key\" }}]\n",
        users.join(", ")
    )
}

fn opts(users: &[&User]) -> Options {
    Options {
        policy: policy(users),
        ..Options::default()
    }
}

/// A second installation whose vault is wrapped under `first`'s key file,
/// as another machine given the same key would be.
fn same_key_as(first: &Daemon, o: Options) -> Daemon {
    let mut d = Daemon::init(o);
    std::fs::remove_dir_all(d.state_dir()).unwrap();
    let _ = std::fs::remove_file(d.audit_log());
    std::fs::copy(first.key_file(), d.key_file()).unwrap();
    let out = d.command().arg("init").output().unwrap();
    assert!(
        out.status.success(),
        "init with the copied key: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.start();
    d
}

/// A directory only `user` can write, for their backup files.
fn user_dir(d: &Daemon, user: &User) -> PathBuf {
    let dir = d.path(&format!("files-{}", user.name));
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::chown(
        &dir,
        Some(nix::unistd::Uid::from_raw(user.uid)),
        Some(nix::unistd::Gid::from_raw(user.gid)),
    )
    .unwrap();
    dir
}

fn names(d: &Daemon, user: &User) -> Vec<String> {
    let out = ok(&d.vaultctl(user, &["--json", "secrets", "list"], b""));
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut n: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

fn sees_value(d: &Daemon, user: &User, value: &str) -> bool {
    let script = format!("test \"$AWS_ACCESS_KEY\" = '{value}' && echo same || echo different");
    ok(&d.vaultctl(user, &["run", "--", "sh", "-c", &script], b"")).trim() == "same"
}

#[test]
fn a_backup_restores_on_another_installation_with_the_same_key() {
    let alice = User::ensure("aivt-alice");
    let d1 = Daemon::start_new(opts(&[&alice]));
    ok(&d1.vaultctl(
        &alice,
        &[
            "secrets",
            "set",
            "aws/access_key",
            "--description",
            "prod key",
            "--tag",
            "aws",
        ],
        VALUE.as_bytes(),
    ));
    set_secret(&d1, &alice, "OTHER", "other-backup-value-0123456789");
    let dir = user_dir(&d1, &alice);
    let file = dir.join("alice.bak");
    let file_s = file.to_str().unwrap();
    let said = d1.vaultctl(&alice, &["secrets", "backup", file_s], b"");
    ok(&said);
    assert!(String::from_utf8_lossy(&said.stderr).contains("backed up 2 secrets"));

    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), alice.uid);
    let blob = std::fs::read(&file).unwrap();
    assert!(!contains(&blob, VALUE.as_bytes()) && !contains(&blob, b"aws/access_key"));
    // An existing file is never replaced.
    let err = fails_with(&d1.vaultctl(&alice, &["secrets", "backup", file_s], b""), 2);
    assert!(err.contains("exists"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), blob);
    let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");

    let d2 = same_key_as(&d1, opts(&[&alice]));
    let out = ok(&d2.vaultctl(
        &alice,
        &["--json", "secrets", "restore", file_s, "--verify-only"],
        b"",
    ));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["created"], 2, "{report}");
    assert_eq!(report["verify_only"], true, "{report}");
    assert!(
        names(&d2, &alice).is_empty(),
        "--verify-only wrote something"
    );

    ok(&d2.vaultctl(&alice, &["secrets", "restore", file_s], b""));
    assert_eq!(names(&d2, &alice), ["OTHER", "aws/access_key"]);
    assert!(
        sees_value(&d2, &alice, VALUE),
        "the restored value is not the one backed up"
    );
    let list = ok(&d2.vaultctl(&alice, &["secrets", "list"], b""));
    assert!(
        list.contains("prod key") && list.contains("[aws]"),
        "{list}"
    );

    // Again: every name exists now.
    let err = fails_with(
        &d2.vaultctl(&alice, &["secrets", "restore", file_s], b""),
        2,
    );
    assert!(
        err.contains("exist already") && err.contains("nothing was restored"),
        "{err}"
    );
    let out = ok(&d2.vaultctl(
        &alice,
        &["--json", "secrets", "restore", file_s, "--conflict", "skip"],
        b"",
    ));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (report["created"].as_u64(), report["skipped"].as_u64()),
        (Some(0), Some(2))
    );

    let log = std::fs::read_to_string(d2.audit_log()).unwrap();
    assert!(
        log.contains("\"secret.restore\"") && !log.contains(VALUE),
        "{log}"
    );
    let log = std::fs::read_to_string(d1.audit_log()).unwrap();
    assert!(
        log.contains("\"secret.backup\"") && !log.contains(VALUE),
        "{log}"
    );
}

#[test]
fn a_truncated_altered_or_foreign_backup_is_refused_as_a_whole() {
    let alice = User::ensure("aivt-alice");
    let d1 = Daemon::start_new(opts(&[&alice]));
    set_secret(&d1, &alice, "aws/access_key", VALUE);
    set_secret(&d1, &alice, "B", "second-backup-value-0123456789");
    let dir = user_dir(&d1, &alice);
    let good = dir.join("good.bak");
    ok(&d1.vaultctl(&alice, &["secrets", "backup", good.to_str().unwrap()], b""));
    let blob = std::fs::read(&good).unwrap();
    let d2 = same_key_as(&d1, opts(&[&alice]));

    let mut flipped = blob.clone();
    let at = blob.len() - 40;
    flipped[at] ^= 1;
    for (name, bytes) in [
        ("truncated.bak", blob[..blob.len() - 1].to_vec()),
        ("half.bak", blob[..blob.len() / 2].to_vec()),
        ("flipped.bak", flipped),
    ] {
        let p = d2.path(name);
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = fails_with(
            &d2.vaultctl(&alice, &["secrets", "restore", p.to_str().unwrap()], b""),
            2,
        );
        assert!(err.contains("truncated, altered"), "{name}: {err}");
    }
    assert!(
        names(&d2, &alice).is_empty(),
        "a refused backup wrote something"
    );

    // A daemon with another key opens nothing.
    let other = Daemon::start_new(opts(&[&alice]));
    let err = fails_with(
        &other.vaultctl(&alice, &["secrets", "restore", good.to_str().unwrap()], b""),
        2,
    );
    assert!(err.contains("another key"), "{err}");
    assert!(names(&other, &alice).is_empty());
    let env = d2.path("not.bak");
    std::fs::write(&env, "A=b\n").unwrap();
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = fails_with(
        &d2.vaultctl(&alice, &["secrets", "restore", env.to_str().unwrap()], b""),
        2,
    );
    assert!(err.contains("not an aivault backup"), "{err}");
}

#[test]
fn a_user_restores_only_their_own_backup_and_root_the_whole_vault() {
    let alice = User::ensure("aivt-alice");
    let bob = User::ensure("aivt-bob");
    let d1 = Daemon::start_new(opts(&[&alice, &bob]));
    set_secret(&d1, &alice, "aws/access_key", VALUE);
    set_secret(&d1, &bob, "aws/access_key", "bob-backup-value-0123456789");
    ok(&d1.vaultctl(
        &User::root(),
        &["secrets", "set", "--scope", "system", "SYS"],
        b"system-backup-value-0123456789",
    ));
    let alice_file = user_dir(&d1, &alice).join("alice.bak");
    ok(&d1.vaultctl(
        &alice,
        &["secrets", "backup", alice_file.to_str().unwrap()],
        b"",
    ));
    let bob_dir = user_dir(&d1, &bob);
    let err = fails_with(
        &d1.vaultctl(
            &bob,
            &[
                "secrets",
                "backup",
                "--all",
                bob_dir.join("all.bak").to_str().unwrap(),
            ],
            b"",
        ),
        4,
    );
    assert!(err.contains("only root"), "{err}");
    assert_eq!(std::fs::read_dir(&bob_dir).unwrap().count(), 0);

    // Bob holding a copy of alice's backup cannot restore it, into any scope.
    let copy = bob_dir.join("alice-copy.bak");
    std::fs::copy(&alice_file, &copy).unwrap();
    nix::unistd::chown(&copy, Some(nix::unistd::Uid::from_raw(bob.uid)), None).unwrap();
    let d2 = same_key_as(&d1, opts(&[&alice, &bob]));
    let err = fails_with(
        &d2.vaultctl(&bob, &["secrets", "restore", copy.to_str().unwrap()], b""),
        4,
    );
    assert!(err.contains(&format!("uid {}", alice.uid)), "{err}");
    assert!(names(&d2, &bob).is_empty());

    // Root's whole-vault backup brings back every scope, each value its own.
    let all = d1.path("all.bak");
    ok(&d1.vaultctl(
        &User::root(),
        &["secrets", "backup", "--all", all.to_str().unwrap()],
        b"",
    ));
    std::fs::set_permissions(&all, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = fails_with(
        &d2.vaultctl(&alice, &["secrets", "restore", all.to_str().unwrap()], b""),
        4,
    );
    assert!(err.contains("whole vault"), "{err}");
    ok(&d2.vaultctl(
        &User::root(),
        &["secrets", "restore", all.to_str().unwrap()],
        b"",
    ));
    assert!(sees_value(&d2, &alice, VALUE));
    assert!(sees_value(&d2, &bob, "bob-backup-value-0123456789"));
    let sys = ok(&d2.vaultctl(
        &User::root(),
        &["secrets", "list", "--scope", "system"],
        b"",
    ));
    assert!(sys.contains("SYS"), "{sys}");
}

#[test]
fn a_backup_too_large_for_one_message_is_refused_and_leaves_no_file() {
    let alice = User::ensure("aivt-alice");
    let d = Daemon::start_new(opts(&[&alice]));
    for i in 0..4 {
        let value = format!("{i}").repeat(64 * 1024);
        set_secret(&d, &alice, &format!("big/v{i}"), &value);
    }
    let dir = user_dir(&d, &alice);
    let file = dir.join("big.bak");
    let err = fails_with(
        &d.vaultctl(&alice, &["secrets", "backup", file.to_str().unwrap()], b""),
        2,
    );
    assert!(err.contains("fit in one reply"), "{err}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "a file was left"
    );
    // With one secret fewer it fits.
    ok(&d.vaultctl(&alice, &["secrets", "rm", "big/v3"], b""));
    ok(&d.vaultctl(&alice, &["secrets", "backup", file.to_str().unwrap()], b""));
}
