//! Acceptance 2 (foundation): after storing known values, no byte sequence of
//! any value appears under the state directory, in the audit log, or in the
//! daemon's output. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use aivault_tests::{contains, files_below, ok, token, Daemon, Options, User};

#[test]
fn no_value_bytes_reach_disk_logs_or_daemon_output() {
    let mut d = Daemon::start_new(Options::default());
    let alice = User::ensure("aivt-alice");
    let values: Vec<String> = (0..20).map(|i| format!("pt-{i}-{}", token(24))).collect();
    for (i, v) in values.iter().enumerate() {
        ok(&d.vaultctl(&alice, &["secrets", "set", &format!("S{i}")], v.as_bytes()));
    }
    ok(&d.vaultctl(
        &alice,
        &["secrets", "import", "-"],
        format!("IMPORTED={}\n", values[0]).as_bytes(),
    ));
    for i in 0..5 {
        ok(&d.vaultctl(
            &alice,
            &["secrets", "rotate", &format!("S{i}")],
            values[19 - i].as_bytes(),
        ));
        ok(&d.vaultctl(&alice, &["secrets", "masked", &format!("S{i}")], b""));
    }
    ok(&d.vaultctl(&alice, &["audit", "list"], b""));
    d.stop();

    let mut files = files_below(&d.state_dir());
    files.push(d.audit_log());
    files.push(d.output_log());
    assert!(
        files.len() >= 3,
        "expected vault, anchor, audit log and output: {files:?}"
    );
    for f in &files {
        let bytes = std::fs::read(f).expect("read");
        for v in &values {
            // Any 8-byte window of a value is enough to count as a leak.
            for w in v.as_bytes().windows(8) {
                assert!(
                    !contains(&bytes, w),
                    "{} contains bytes of a secret value",
                    f.display()
                );
            }
        }
    }
}
