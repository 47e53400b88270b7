//! `vaultctl audit rotate`: the log is archived next to itself and a new
//! file goes on with a record chained to the archive's last, so `audit
//! verify` still passes and `audit verify --archives` checks the whole
//! chain across the files. Needs root.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};

use aivault_tests::{fails_with, ok, Daemon, Options, User};

fn verify(d: &Daemon, archives: bool) -> (i32, serde_json::Value) {
    let mut args = vec!["--json", "audit", "verify"];
    if archives {
        args.push("--archives");
    }
    let out = d.vaultctl(&User::root(), &args, b"");
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), v)
}

fn set_some(d: &Daemon, user: &User, from: usize, n: usize) {
    for i in from..from + n {
        ok(&d.vaultctl(
            user,
            &["secrets", "set", &format!("R{i}")],
            b"rotate-test-value-1",
        ));
    }
}

/// Rotates; returns the rotate record.
fn rotate(d: &Daemon) -> serde_json::Value {
    let out = ok(&d.vaultctl(&User::root(), &["--json", "audit", "rotate"], b""));
    serde_json::from_str(out.trim()).unwrap()
}

fn archive_path(d: &Daemon, rotate_record: &serde_json::Value) -> PathBuf {
    let name = rotate_record["detail"]["archive"].as_str().unwrap();
    d.audit_log().with_file_name(name)
}

/// A daemon whose log was rotated twice, with records before, between and
/// after; returns it and the two archives, oldest first.
fn rotated_twice() -> (Daemon, User, [PathBuf; 2]) {
    let d = Daemon::start_new(Options::default());
    let alice = User::ensure("aivt-alice");
    set_some(&d, &alice, 0, 3);
    let first = rotate(&d);
    set_some(&d, &alice, 3, 3);
    let second = rotate(&d);
    set_some(&d, &alice, 6, 2);
    let archives = [archive_path(&d, &first), archive_path(&d, &second)];
    (d, alice, archives)
}

fn assert_ok(d: &Daemon, archives: bool) {
    let (code, v) = verify(d, archives);
    assert_eq!(code, 0, "verify (archives: {archives}): {v}");
    assert_eq!(v["ok"], true, "{v}");
}

fn problems(v: &serde_json::Value) -> String {
    v["problems"].to_string()
}

#[test]
fn a_rotated_log_verifies_with_and_without_its_archives() {
    let (d, _, [a1, a2]) = rotated_twice();
    assert!(a1.is_file() && a2.is_file(), "{a1:?} {a2:?}");
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    let base = name(&d.audit_log());
    assert!(name(&a1).starts_with(&format!("{base}.1-")), "{a1:?}");
    // The new file starts with the rotate record, chained to the archive's last.
    let records = d.audit_records();
    let head = &records[0];
    assert_eq!(head["op"], "audit.rotate", "{head}");
    let last_of_a2: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&a2)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(head["prev"], last_of_a2["mac"]);
    assert_eq!(head["detail"]["last_seq"], last_of_a2["seq"]);
    assert_eq!(head["seq"], last_of_a2["seq"].as_u64().unwrap() + 1);
    assert_ok(&d, false);
    assert_ok(&d, true);
    let (_, v) = verify(&d, true);
    let (_, current) = verify(&d, false);
    assert!(
        v["records"].as_u64().unwrap() > current["records"].as_u64().unwrap(),
        "--archives counts the archives' records too: {v} vs {current}"
    );
    // `audit list` shows the current file.
    let listed = ok(&d.vaultctl(
        &User::root(),
        &["--json", "audit", "list", "--limit", "10000"],
        b"",
    ));
    let first: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(first["op"], "audit.rotate", "{listed}");
}

#[test]
fn an_altered_archive_fails_verify_with_archives() {
    let (d, _, [a1, _]) = rotated_twice();
    let text = std::fs::read_to_string(&a1).unwrap();
    let altered = text.replacen("\"R1\"", "\"X1\"", 1);
    assert_ne!(text, altered);
    std::fs::write(&a1, altered).unwrap();
    // The current file alone still verifies: it does not read the archives.
    assert_ok(&d, false);
    let (code, v) = verify(&d, true);
    assert_eq!(code, 1, "{v}");
    let archive = a1.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        problems(&v).contains(&format!("archive {archive}: line"))
            && problems(&v).contains("mac mismatch"),
        "{v}"
    );
}

#[test]
fn a_deleted_middle_archive_fails_verify_with_archives() {
    let (d, _, [_, a2]) = rotated_twice();
    std::fs::remove_file(&a2).unwrap();
    assert_ok(&d, false);
    let (code, v) = verify(&d, true);
    assert_eq!(code, 1, "{v}");
    let archive = a2.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        problems(&v).contains(&format!("archive {archive} is missing")),
        "{v}"
    );
}

#[test]
fn a_truncated_archive_fails_verify_with_archives() {
    let (d, _, [a1, _]) = rotated_twice();
    let text = std::fs::read_to_string(&a1).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.pop();
    std::fs::write(&a1, format!("{}\n", lines.join("\n"))).unwrap();
    let (code, v) = verify(&d, true);
    assert_eq!(code, 1, "{v}");
    assert!(problems(&v).contains("archive truncated"), "{v}");
}

#[test]
fn only_root_can_rotate() {
    let d = Daemon::start_new(Options::default());
    let alice = User::ensure("aivt-alice");
    set_some(&d, &alice, 0, 1);
    let err = fails_with(&d.vaultctl(&alice, &["audit", "rotate"], b""), 4);
    assert!(err.contains("only root can rotate"), "{err}");
    let records = d.audit_records();
    let last = records.last().unwrap();
    assert_eq!(last["op"], "audit.rotate");
    assert_eq!(last["outcome"], "denied");
    assert_eq!(records[0]["seq"], 1, "the log was not rotated");
}

#[test]
fn after_a_restart_the_rotated_log_verifies_and_grows() {
    let (mut d, alice, _) = rotated_twice();
    d.stop();
    d.start();
    set_some(&d, &alice, 10, 2);
    assert_ok(&d, false);
    assert_ok(&d, true);
    // And it can rotate again (the human form names the archive).
    let out = ok(&d.vaultctl(&User::root(), &["audit", "rotate"], b""));
    assert!(
        out.starts_with("archived records up to seq ") && out.contains("as audit.jsonl."),
        "{out}"
    );
    assert_ok(&d, true);
    let (_, v) = verify(&d, false);
    assert_eq!(v["records"], 1, "the new file holds its rotate record: {v}");
}

#[test]
fn an_archive_renamed_without_a_new_log_is_renamed_back_at_start() {
    let (mut d, alice, _) = rotated_twice();
    d.stop();
    // A crash between the archive's rename and the new file's creation.
    let records = d.audit_records();
    let first = records.first().unwrap()["seq"].as_u64().unwrap();
    let last = records.last().unwrap()["seq"].as_u64().unwrap();
    let base = d
        .audit_log()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let archive = d
        .audit_log()
        .with_file_name(format!("{base}.{first}-{last}"));
    std::fs::rename(d.audit_log(), &archive).unwrap();
    d.start();
    assert!(!archive.exists(), "renamed back");
    set_some(&d, &alice, 20, 1);
    assert_ok(&d, false);
    assert_ok(&d, true);
}

#[test]
fn a_rotation_cut_short_before_the_new_log_leaves_the_old_one() {
    let (mut d, alice, _) = rotated_twice();
    d.stop();
    // A crash after the archive name was linked and the new file written,
    // before the new file replaced the log.
    let records = d.audit_records();
    let first = records.first().unwrap()["seq"].as_u64().unwrap();
    let last = records.last().unwrap()["seq"].as_u64().unwrap();
    let base = d
        .audit_log()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let archive = d
        .audit_log()
        .with_file_name(format!("{base}.{first}-{last}"));
    std::fs::hard_link(d.audit_log(), &archive).unwrap();
    let rotating = d.audit_log().with_file_name(format!("{base}.rotating"));
    std::fs::write(&rotating, b"{\"half\":").unwrap();
    d.start();
    assert!(!archive.exists() && !rotating.exists());
    set_some(&d, &alice, 30, 1);
    assert_ok(&d, true);
    // The next rotation archives the same file, now longer, for real.
    let now_last = d.audit_records().last().unwrap()["seq"].as_u64().unwrap();
    assert!(now_last > last);
    let r = rotate(&d);
    assert_eq!(r["detail"]["archive"], format!("{base}.{first}-{now_last}"));
    assert_ok(&d, true);
}

#[test]
fn the_daemon_rotates_by_itself_at_rotate_bytes_and_the_chain_holds() {
    let d = Daemon::start_new(Options {
        config: "[audit]\nrotate_bytes = 4096\n".into(),
        ..Options::default()
    });
    let alice = User::ensure("aivt-alice");
    // About 450 bytes a record, two records a `set`: some 9 sets a file.
    set_some(&d, &alice, 0, 30);
    let dir = d.audit_log().parent().unwrap().to_path_buf();
    let base = d
        .audit_log()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let archives: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with(&format!("{base}.")) && n != format!("{base}.rotating")
        })
        .collect();
    assert!(archives.len() >= 2, "{archives:?}");
    for a in &archives {
        let len = std::fs::metadata(a).unwrap().len();
        assert!(len >= 4096, "{a:?} has {len} bytes");
        assert!(len < 4096 + 1024, "{a:?} has {len} bytes");
    }
    let head = &d.audit_records()[0];
    assert_eq!(head["op"], "audit.rotate", "{head}");
    assert_eq!(head["uid"], 0);
    assert_ok(&d, false);
    assert_ok(&d, true);
}

#[test]
fn a_rotate_bytes_below_the_minimum_is_refused() {
    let d = Daemon::init(Options::default());
    let conf = d.path("aivaultd.toml");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\n[audit]\nrotate_bytes = 100\n");
    std::fs::write(&conf, text).unwrap();
    let out = d.command().arg("--check-config").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("audit.rotate_bytes: 100 is less than the 4096 allowed"),
        "{err}"
    );
}
