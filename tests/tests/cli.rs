//! `vaultctl` and `aivaultd` answer bad input with a clear error and a
//! meaningful exit status — never a panic. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use aivault_tests::{bin, fails_with, ok, Daemon, Options, User};

fn no_panic(out: &std::process::Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_names_values_and_flags() {
    let d = Daemon::start_new(Options::default());
    let alice = User::ensure("aivt-alice");
    for bad in [
        "",
        "1ABC",
        "has space",
        "semi;colon",
        "../etc",
        &"N".repeat(129),
    ] {
        let out = d.vaultctl(&alice, &["secrets", "set", bad], b"a-fine-value-123");
        let err = fails_with(&out, 2);
        no_panic(&out);
        assert!(err.contains("name"), "{bad:?}: {err}");
    }
    let err = fails_with(&d.vaultctl(&alice, &["secrets", "set", "EMPTY"], b""), 2);
    assert!(err.contains("empty"), "{err}");
    let err = fails_with(&d.vaultctl(&alice, &["secrets", "set", "EMPTY"], b"\n"), 2);
    assert!(err.contains("empty"), "{err}");
    let big = vec![b'x'; 64 * 1024 + 1];
    let err = fails_with(&d.vaultctl(&alice, &["secrets", "set", "BIG"], &big), 2);
    assert!(err.contains("65536"), "{err}");
    let max = vec![b'x'; 64 * 1024];
    ok(&d.vaultctl(&alice, &["secrets", "set", "MAX"], &max));

    let out = d.vaultctl(&alice, &["secrets", "set", "SHORT"], b"abc");
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning"),
        "short values warn"
    );

    for args in [
        &["secrets", "frobnicate"][..],
        &["--bogus", "status"],
        &["secrets", "set"],
        &["secrets", "set", "A", "--expires", "tomorrow"],
    ] {
        let out = d.vaultctl(&alice, args, b"");
        fails_with(&out, 2);
        no_panic(&out);
    }
    // The value is never accepted from argv.
    fails_with(
        &d.vaultctl(&alice, &["secrets", "set", "A", "the-value"], b""),
        2,
    );
}

#[test]
fn help_is_there_and_unreachable_daemon_is_exit_5() {
    let alice = User::ensure("aivt-alice");
    for args in [
        &["--help"][..],
        &["secrets", "--help"],
        &["secrets", "set", "--help"],
        &["audit", "verify", "--help"],
    ] {
        let out =
            aivault_tests::vaultctl_at(std::path::Path::new("/nonexistent"), &alice, args, b"");
        let text = ok(&out);
        assert!(text.contains("Usage"), "{text}");
    }
    let help = ok(&aivault_tests::vaultctl_at(
        std::path::Path::new("/x"),
        &alice,
        &["--help"],
        b"",
    ));
    assert!(help.contains("Exit status"), "exit codes are documented");
    let out = aivault_tests::vaultctl_at(
        std::path::Path::new("/nonexistent/sock"),
        &alice,
        &["status"],
        b"",
    );
    let err = fails_with(&out, 5);
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn daemon_refuses_to_run_unprivileged_or_on_insecure_paths() {
    let alice = User::ensure("aivt-alice");
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new(bin("aivaultd"))
        .arg("--state-dir")
        .arg("/tmp")
        .uid(alice.uid)
        .gid(alice.gid)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must run as root"));

    // A group-writable state directory is refused, naming the path.
    let d = Daemon::init(Options::default());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.state_dir(), std::fs::Permissions::from_mode(0o770)).unwrap();
    let out = d.command().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&d.state_dir().display().to_string()), "{err}");
    std::fs::set_permissions(d.state_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();

    // A key file readable by others is refused.
    std::fs::set_permissions(d.key_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = d.command().output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    no_panic(&out);
}
