//! The Debian package, end to end, on the real system: `scripts/package-test.sh`
//! builds two versions of the `.deb`, installs, verifies the units, renders
//! the man pages, loads the completions, runs the installed daemon the way
//! systemd would (readiness, status, watchdog, reload, stop), uses it as an
//! unprivileged user, upgrades, removes and purges. This test runs the script
//! and checks its verdict line by line, so a check the script silently
//! stopped making fails here too.
//!
//! Needs root and installs into this system: CI runs it on a throwaway
//! machine. It fails — never skips — without root, and refuses (fails) when
//! aivault is already installed or has state here (see the script).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::Path;
use std::process::Command;

/// Checks the script must report, one `ok - …` line each (prefixes).
const REQUIRED: &[&str] = &[
    "ok - built ",
    "ok - postinst sealed a key and created a vault",
    "installed paths have the expected type, owner and mode",
    "ok - every packaged path is root:root and not group/world-writable",
    "ok - the installed policy allows nothing",
    "ok - systemd-analyze verify passes on aivaultd.service and aivaultd.socket",
    "ok - systemd-analyze security rates",
    "ok - man aivaultd renders",
    "ok - man vaultctl renders",
    "ok - bash completion loads: complete -p vaultctl",
    "ok - bash completion completes 'vaultctl sec' to secrets",
    "ok - READY=1 from the installed daemon",
    "ok - STATUS= says it is ready",
    "ok - periodic WATCHDOG=1",
    "ok - vaultctl secrets list shows both names",
    "ok - vaultctl secrets masked shows at most the last 4 characters",
    "ok - SIGHUP: RELOADING=1, then READY=1",
    "ok - vaultctl run: the command ran under a per-run uid",
    "ok - vaultctl run: the secret reached the command and came back redacted",
    "ok - after the runs only the warm runners' directories are left",
    "ok - SIGTERM: STOPPING=1, and aivaultd exits 0",
    "ok - SIGTERM ends the warm runners: no run directory is left",
    "ok - the upgrade left the sealed key and the vault byte for byte",
    "ok - after the upgrade every secret is still listed",
    "ok - after the upgrade the masked value is unchanged",
    "ok - remove: the vault, the sealed key, the audit log and the policy stay",
    "ok - purge says what it deletes",
    "ok - purge leaves nothing behind",
];

#[test]
fn debian_package_installs_serves_upgrades_and_purges() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the packaging test needs root: it installs the .deb into this system (run scripts/test.sh as root)"
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new("bash")
        .arg(repo.join("scripts/package-test.sh"))
        .current_dir(repo)
        .output()
        .expect("running scripts/package-test.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = format!("--- stdout\n{stdout}\n--- stderr\n{stderr}");
    assert!(
        out.status.success(),
        "package-test.sh failed ({}):\n{report}",
        out.status
    );
    assert!(!stdout.contains("FAIL - "), "{report}");
    for check in REQUIRED {
        assert!(
            stdout.lines().any(|l| l.contains(check)),
            "package-test.sh did not report {check:?}:\n{report}"
        );
    }
    let verdict = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("package-test: "))
        .unwrap_or_default();
    assert!(
        verdict.ends_with(" passed, 0 failed"),
        "no clean verdict line:\n{report}"
    );
}
