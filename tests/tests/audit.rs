//! Acceptance 6 (foundation): editing, deleting or truncating audit records is
//! detected by `audit verify`; an unwritable audit log makes state-changing
//! operations fail with a clear error and no change to the vault. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use aivault_tests::{fails_with, ok, Daemon, Options, User};

fn verify(d: &Daemon) -> (i32, serde_json::Value) {
    let out = d.vaultctl(&User::root(), &["--json", "audit", "verify"], b"");
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), v)
}

fn populated() -> (Daemon, User) {
    let d = Daemon::start_new(Options::default());
    let alice = User::ensure("aivt-alice");
    for i in 0..6 {
        ok(&d.vaultctl(
            &alice,
            &["secrets", "set", &format!("K{i}")],
            b"audit-test-value-1",
        ));
    }
    let (code, v) = verify(&d);
    assert_eq!(code, 0, "fresh log verifies: {v}");
    assert_eq!(v["ok"], true);
    (d, alice)
}

fn lines(d: &Daemon) -> Vec<String> {
    std::fs::read_to_string(d.audit_log())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn rewrite(d: &Daemon, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(d.audit_log(), text).unwrap();
}

#[test]
fn an_edited_record_is_detected() {
    let (d, _) = populated();
    let mut l = lines(&d);
    l[2] = l[2].replace("\"K", "\"X");
    rewrite(&d, &l);
    let (code, v) = verify(&d);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["ok"], false);
}

#[test]
fn a_deleted_middle_record_is_detected() {
    let (d, _) = populated();
    let mut l = lines(&d);
    l.remove(3);
    rewrite(&d, &l);
    assert_eq!(verify(&d).0, 1);
}

#[test]
fn deleting_the_newest_records_is_detected() {
    let (d, _) = populated();
    let mut l = lines(&d);
    l.truncate(l.len() - 2);
    rewrite(&d, &l);
    let (code, v) = verify(&d);
    assert_eq!(code, 1, "{v}");
    assert!(v["problems"].to_string().contains("anchor"), "{v}");
}

#[test]
fn a_truncated_log_is_detected() {
    let (d, _) = populated();
    let text = std::fs::read(d.audit_log()).unwrap();
    std::fs::write(d.audit_log(), &text[..text.len() - 30]).unwrap();
    assert_eq!(verify(&d).0, 1);
}

#[test]
fn an_unwritable_audit_log_refuses_changes_and_leaves_the_vault_alone() {
    let (d, alice) = populated();
    let vault = d.state_dir().join(aivaultd::store::format::STORE_FILE);
    let before = std::fs::read(&vault).unwrap();
    // Make the log path unwritable: a directory stands where the file was.
    let saved = d.audit_log().with_extension("saved");
    std::fs::rename(d.audit_log(), &saved).unwrap();
    std::fs::create_dir(d.audit_log()).unwrap();

    let err = fails_with(
        &d.vaultctl(&alice, &["secrets", "set", "NEW"], b"never-stored-value"),
        6,
    );
    assert!(err.contains("audit log"), "{err}");
    fails_with(&d.vaultctl(&alice, &["secrets", "rm", "K1"], b""), 6);
    fails_with(
        &d.vaultctl(&alice, &["secrets", "rotate", "K2"], b"never-stored-value"),
        6,
    );
    assert_eq!(std::fs::read(&vault).unwrap(), before, "vault unchanged");

    std::fs::remove_dir(d.audit_log()).unwrap();
    std::fs::rename(&saved, d.audit_log()).unwrap();
    fails_with(&d.vaultctl(&alice, &["secrets", "exists", "NEW"], b""), 1);
    ok(&d.vaultctl(&alice, &["secrets", "exists", "K1"], b""));
    // The refused attempts did not fork or break the chain.
    assert_eq!(verify(&d).0, 0);
}

/// Unmounts a file system mounted for one test, even if the test fails.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_file_system_leaves_no_partial_record_and_the_log_verifies_after() {
    use std::io::Write;
    let mut d = Daemon::init(Options::default());
    // The audit directory on a file system of 16 pages, which the test fills.
    let dir = d.audit_log().parent().unwrap().to_path_buf();
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=64k,mode=0700",
            "aivault-audit-full",
        ])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "cannot mount a tmpfs on the audit directory"
    );
    let _mount = Mounted(dir.clone());
    d.start();
    let alice = User::ensure("aivt-alice");
    ok(&d.vaultctl(&alice, &["secrets", "set", "BEFORE"], b"audit-test-value-1"));

    // Take every free page, so the log can only grow into the rest of its last one.
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    while f.write_all(&[0u8; 4096]).is_ok() {}
    while f.write_all(&[0u8; 1]).is_ok() {}
    drop(f);

    let mut refused = None;
    for i in 0..200 {
        let out = d.vaultctl(&alice, &["secrets", "set", &format!("K{i}")], b"value-1");
        if !out.status.success() {
            refused = Some((i, fails_with(&out, 6)));
            break;
        }
    }
    let (at, err) = refused.expect("a full file system refuses requests");
    assert!(err.contains("audit log"), "{err}");
    // The refused append left nothing behind: the log ends in a whole record.
    let text = std::fs::read(d.audit_log()).unwrap();
    assert_eq!(
        text.last(),
        Some(&b'\n'),
        "the log ends in a partial record"
    );

    std::fs::remove_file(&filler).unwrap();
    fails_with(
        &d.vaultctl(&alice, &["secrets", "exists", &format!("K{at}")], b""),
        1,
    );
    assert_eq!(verify(&d).0, 0, "the log verifies once there is space");
    ok(&d.vaultctl(&alice, &["secrets", "set", "AFTER"], b"audit-test-value-1"));
    let (code, v) = verify(&d);
    assert_eq!(code, 0, "{v}");
}
