//! Audit log tests against real files: tampering of every kind, reopening,
//! failing closed, sealed records, listing.
#![allow(clippy::unwrap_used)]

use std::fs::{self, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use serde_json::json;
use tempfile::TempDir;

use super::anchor::write_anchor;
use super::format::{self, unhex32, RecordMac};
use super::*;

const UNKEYED: &[&str] = &["status", "unlock"];

struct Fixture {
    _dir: TempDir,
    log: PathBuf,
    anchor: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    fs::create_dir(dir.path().join("state")).unwrap();
    let anchor = dir.path().join("state").join("audit.anchor");
    Fixture {
        _dir: dir,
        log,
        anchor,
    }
}

fn key() -> AuditKey {
    AuditKey::derive(&[7u8; 32])
}

fn ev<'a>(uid: u32, op: &'a str, name: Option<&'a str>) -> Event<'a> {
    Event {
        actor: Actor {
            uid,
            gid: uid,
            pid: 4242,
        },
        op,
        scope: Some("user"),
        name,
        outcome: Outcome::Ok,
        reason: None,
        detail: json!({ "version": 3, "code": "x" }),
    }
}

impl Fixture {
    fn open(&self, key: Option<AuditKey>) -> AuditLog {
        AuditLog::open(&self.log, &self.anchor, key).unwrap()
    }

    /// A keyed log with records seq 1..=n, names N1..Nn.
    fn with_records(&self, n: u64) -> AuditLog {
        let log = self.open(Some(key()));
        for i in 1..=n {
            let name = format!("N{i}");
            assert_eq!(log.append(&ev(1000, "secret.set", Some(&name))).unwrap(), i);
        }
        log
    }

    fn verify(&self) -> VerifyReport {
        AuditLog::verify(&self.log, &self.anchor, &key(), UNKEYED)
    }

    fn lines(&self) -> Vec<String> {
        let text = fs::read_to_string(&self.log).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    fn set_lines(&self, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        fs::write(&self.log, text).unwrap();
    }
}

fn assert_problem(rep: &VerifyReport, needle: &str) {
    assert!(
        !rep.ok,
        "expected a problem like {needle:?}, report: {rep:?}"
    );
    assert!(
        rep.problems.iter().any(|p| p.contains(needle)),
        "no problem contains {needle:?}: {:?}",
        rep.problems
    );
}

#[test]
fn appended_records_verify_and_have_the_documented_shape() {
    let fx = fixture();
    fx.with_records(10);
    let rep = fx.verify();
    assert!(rep.ok, "{rep:?}");
    assert_eq!((rep.records, rep.last_seq, rep.unkeyed), (10, 10, 0));

    let lines = fx.lines();
    assert!(lines[0].starts_with(r#"{"seq":1,"ts":""#), "{}", lines[0]);
    assert!(lines[0].contains(&format!(r#""prev":"{}""#, "0".repeat(64))));
    let keys = [
        "seq", "ts", "uid", "gid", "pid", "op", "scope", "name", "outcome", "reason", "detail",
        "prev", "mac",
    ];
    let positions: Vec<usize> = keys
        .iter()
        .map(|k| lines[3].find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{}", lines[3]);
    assert!(lines[3].contains(r#""outcome":"ok","reason":null,"detail":{"code":"x","version":3}"#));
    // Each record's prev is the previous record's mac.
    let v: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v[4]["prev"], v[3]["mac"]);
    let ts = v[0]["ts"].as_str().unwrap();
    assert_eq!(ts.len(), "2026-11-22T05:10:00.123Z".len());
    assert!(ts.ends_with('Z'));

    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&fx.log), 0o600);
    assert_eq!(mode(&fx.anchor), 0o600);
}

#[test]
fn an_edited_field_is_a_mac_mismatch() {
    let fx = fixture();
    fx.with_records(10);
    let mut lines = fx.lines();
    lines[4] = lines[4].replace(r#""name":"N5""#, r#""name":"X5""#);
    fx.set_lines(&lines);
    assert_problem(&fx.verify(), "line 5: mac mismatch (record edited)");
}

#[test]
fn a_non_canonical_edit_is_caught() {
    let fx = fixture();
    fx.with_records(5);
    let mut lines = fx.lines();
    lines[2] = lines[2].replacen(r#""uid":1000"#, r#""uid": 1000"#, 1);
    fx.set_lines(&lines);
    assert_problem(&fx.verify(), "line 3: not in canonical form");
}

#[test]
fn a_record_with_the_wrong_key_is_caught() {
    let fx = fixture();
    fx.with_records(3);
    let rep = AuditLog::verify(&fx.log, &fx.anchor, &AuditKey::derive(&[8u8; 32]), UNKEYED);
    assert_problem(&rep, "line 1: mac mismatch");
    assert_problem(&rep, "anchor mac mismatch");
}

#[test]
fn a_deleted_middle_line_is_reported() {
    let fx = fixture();
    fx.with_records(10);
    let mut lines = fx.lines();
    lines.remove(4);
    fx.set_lines(&lines);
    assert_problem(&fx.verify(), "seq 6 follows 4 (records deleted)");
}

#[test]
fn deleting_the_newest_records_is_caught_by_the_anchor() {
    let fx = fixture();
    fx.with_records(10);
    let lines = fx.lines();
    fx.set_lines(&lines[..8]);
    let rep = fx.verify();
    assert_problem(
        &rep,
        "log ends at seq 8 but anchor says 10 (newest records deleted)",
    );
    assert_eq!(rep.problems.len(), 1, "{rep:?}");
}

#[test]
fn a_missing_anchor_is_reported() {
    let fx = fixture();
    fx.with_records(2);
    fs::remove_file(&fx.anchor).unwrap();
    assert_problem(&fx.verify(), "anchor file missing");
}

#[test]
fn a_truncated_last_line_is_a_torn_write_and_the_next_append_starts_afresh() {
    let fx = fixture();
    drop(fx.with_records(10));
    let len = fs::metadata(&fx.log).unwrap().len();
    let f = OpenOptions::new().write(true).open(&fx.log).unwrap();
    f.set_len(len - 40).unwrap();
    drop(f);
    assert_problem(&fx.verify(), "line 10: torn write");

    let log = fx.open(Some(key()));
    assert_eq!(log.append(&ev(1000, "secret.get", Some("A"))).unwrap(), 11);
    let rep = fx.verify();
    assert_eq!(
        rep.problems,
        vec!["line 10: truncated or not json".to_string()]
    );
    assert_eq!(rep.last_seq, 11);
    assert_eq!(fx.lines().len(), 11);
}

#[test]
fn reordered_lines_are_reported() {
    let fx = fixture();
    fx.with_records(10);
    let mut lines = fx.lines();
    lines.swap(3, 4);
    fx.set_lines(&lines);
    let rep = fx.verify();
    assert_problem(&rep, "seq 5 follows 3");
    assert_problem(
        &rep,
        "line 5: seq 4 after seq 5 (records reordered or duplicated)",
    );
}

#[test]
fn reopening_continues_the_chain() {
    let fx = fixture();
    drop(fx.with_records(3));
    let log = fx.open(Some(key()));
    assert_eq!(log.append(&ev(1000, "secret.get", Some("A"))).unwrap(), 4);
    drop(log);
    // Without the anchor, the log's last record is where the chain continues.
    fs::remove_file(&fx.anchor).unwrap();
    let log = fx.open(Some(key()));
    assert_eq!(log.append(&ev(1000, "secret.get", Some("B"))).unwrap(), 5);
    let rep = fx.verify();
    assert!(rep.ok, "{rep:?}");
    assert_eq!(rep.last_seq, 5);
}

#[test]
fn opening_a_truncated_log_continues_from_the_anchor() {
    let fx = fixture();
    drop(fx.with_records(10));
    let lines = fx.lines();
    fx.set_lines(&lines[..8]);
    let log = fx.open(Some(key()));
    assert_eq!(log.append(&ev(1000, "secret.get", None)).unwrap(), 11);
    let rep = fx.verify();
    assert_problem(&rep, "line 9: seq 11 follows 8 (records deleted)");
    assert_eq!(rep.problems.len(), 1, "{rep:?}");
}

#[test]
fn append_fails_closed_and_keeps_the_chain() {
    let fx = fixture();
    let log = fx.with_records(3);
    let aside = fx.log.with_extension("aside");
    fs::rename(&fx.log, &aside).unwrap();
    fs::create_dir(&fx.log).unwrap();
    assert!(log.append(&ev(1000, "secret.set", Some("X"))).is_err());
    assert!(log.append(&ev(1000, "secret.set", Some("Y"))).is_err());
    fs::remove_dir(&fx.log).unwrap();
    fs::rename(&aside, &fx.log).unwrap();
    assert_eq!(log.append(&ev(1000, "secret.set", Some("Z"))).unwrap(), 4);
    let rep = fx.verify();
    assert!(rep.ok, "{rep:?}");
    assert_eq!(rep.records, 4);
}

#[test]
fn a_symlinked_log_is_refused() {
    let fx = fixture();
    let log = fx.with_records(1);
    let real = fx.log.with_extension("real");
    fs::rename(&fx.log, &real).unwrap();
    std::os::unix::fs::symlink(&real, &fx.log).unwrap();
    assert!(matches!(
        log.append(&ev(0, "status", None)),
        Err(AuditError::OpenLog(_))
    ));
}

#[test]
fn a_record_whose_anchor_update_failed_is_adopted_not_forked() {
    let fx = fixture();
    let log = fx.with_records(2);
    // A directory where the anchor should go makes the rename fail after the
    // record reached the log.
    fs::remove_file(&fx.anchor).unwrap();
    fs::create_dir(&fx.anchor).unwrap();
    fs::write(fx.anchor.join("keep"), b"").unwrap();
    assert!(matches!(
        log.append(&ev(1000, "secret.set", Some("X"))),
        Err(AuditError::WriteAnchor(_))
    ));
    assert_eq!(fx.lines().len(), 3);
    fs::remove_dir_all(&fx.anchor).unwrap();
    assert_eq!(log.append(&ev(1000, "secret.set", Some("Y"))).unwrap(), 4);
    let rep = fx.verify();
    assert!(rep.ok, "{rep:?}");
    assert_eq!(rep.records, 4);
}

#[test]
fn sealed_records_are_accepted_for_allowed_ops_and_authenticated_by_the_next_keyed_one() {
    let fx = fixture();
    let log = fx.open(None);
    log.append(&ev(0, "status", None)).unwrap();
    log.append(&ev(0, "unlock", None)).unwrap();
    assert!(fx.lines()[0].contains(r#""mac":"u:"#));

    // Before any keyed record, nothing authenticates them.
    let rep = fx.verify();
    assert!(rep.ok, "{rep:?}");
    assert_eq!(rep.unkeyed, 2);
    assert!(
        rep.notes[0].contains("nothing authenticates them"),
        "{rep:?}"
    );

    log.set_key(key());
    log.append(&ev(0, "unlock", None)).unwrap();
    log.append(&ev(1000, "secret.set", Some("A"))).unwrap();
    drop(log);
    let rep = fx.verify();
    assert!(rep.ok, "{rep:?}");
    assert_eq!((rep.records, rep.unkeyed), (4, 2));
    assert!(
        rep.notes[0].contains("authenticated by the keyed record at seq 3"),
        "{rep:?}"
    );

    // A restart while sealed continues the same chain.
    let log = fx.open(None);
    assert_eq!(log.append(&ev(0, "status", None)).unwrap(), 5);
    let rep = fx.verify();
    assert!(rep.ok, "{rep:?}");
    assert_eq!(rep.unkeyed, 3);
}

#[test]
fn an_unkeyed_record_of_another_op_is_a_problem() {
    let fx = fixture();
    let log = fx.open(None);
    log.append(&ev(1000, "secret.set", Some("A"))).unwrap();
    log.set_key(key());
    log.append(&ev(1000, "secret.set", Some("B"))).unwrap();
    assert_problem(&fx.verify(), r#"line 1: op "secret.set" has no keyed mac"#);
}

#[test]
fn a_keyed_record_cannot_be_rewritten_as_unkeyed() {
    let fx = fixture();
    fx.with_records(3);
    // Replace record 2 with an edited, unkeyed version of itself.
    let mut lines = fx.lines();
    let edited = lines[1].replace(r#""op":"secret.set""#, r#""op":"status""#);
    let body = format!("{}}}", &edited[..edited.find(r#","mac":"#).unwrap()]);
    lines[1] = format::splice_mac(&body, &RecordMac::compute(None, body.as_bytes()));
    fx.set_lines(&lines);
    assert_problem(&fx.verify(), "line 3: prev does not match the mac of seq 2");
}

#[test]
fn a_forged_unkeyed_anchor_for_a_keyed_record_is_refused() {
    let fx = fixture();
    fx.with_records(3);
    let lines = fx.lines();
    fx.set_lines(&lines[..2]);
    let v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    let mac = unhex32(v["mac"].as_str().unwrap()).unwrap();
    write_anchor(&fx.anchor, 2, &mac, None).unwrap();
    assert_problem(&fx.verify(), "anchor for keyed seq 2 has no keyed mac");
}

#[test]
fn read_filters_by_uid_and_keeps_the_newest() {
    let fx = fixture();
    let log = fx.open(Some(key()));
    for i in 0..10u32 {
        let name = format!("S{i}");
        log.append(&ev(1000 + i % 2, "secret.get", Some(&name)))
            .unwrap();
    }
    let all = AuditLog::read(&fx.log, None, 100).unwrap();
    assert_eq!(all.len(), 10);
    let mine = AuditLog::read(&fx.log, Some(1001), 3).unwrap();
    let names: Vec<&str> = mine.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["S5", "S7", "S9"]);
    assert!(AuditLog::read(&fx.log, Some(1000), 0).unwrap().is_empty());
    assert!(AuditLog::read(&fx.log, Some(4), 10).unwrap().is_empty());
}

#[test]
fn keys_are_derived_deterministically_and_never_printed() {
    let a = AuditKey::derive(&[1u8; 32]);
    let b = AuditKey::derive(&[1u8; 32]);
    let c = AuditKey::derive(&[2u8; 32]);
    assert_eq!(a.0[..], b.0[..]);
    assert_ne!(a.0[..], c.0[..]);
    assert_ne!(a.0[..], [1u8; 32]);
    assert_eq!(format!("{a:?}"), "AuditKey(..)");
}

#[test]
fn the_log_is_shareable_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<AuditLog>();

    let fx = fixture();
    let log = fx.open(Some(key()));
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let log = &log;
            s.spawn(move || {
                for _ in 0..5 {
                    log.append(&ev(t, "secret.get", None)).unwrap();
                }
            });
        }
    });
    let rep = fx.verify();
    assert!(rep.ok, "{rep:?}");
    assert_eq!(rep.records, 20);
}

#[test]
fn the_anchor_alternates_between_two_slots_and_reads_the_newest() {
    use super::anchor::SLOT;
    let fx = fixture();
    drop(fx.with_records(5));
    let bytes = fs::read(&fx.anchor).unwrap();
    assert_eq!(bytes.len(), 2 * SLOT, "two fixed-size slots");
    let slot = |i: usize| {
        let s = String::from_utf8(bytes[i * SLOT..(i + 1) * SLOT].to_vec()).unwrap();
        serde_json::from_str::<serde_json::Value>(s.trim()).unwrap()["seq"].clone()
    };
    assert_eq!((slot(0), slot(1)), (4.into(), 5.into()));
    assert!(fx.verify().ok, "{:?}", fx.verify());
    // Continuing after a restart starts from seq 5.
    let log = fx.open(Some(key()));
    assert_eq!(log.append(&ev(1000, "secret.set", Some("N6"))).unwrap(), 6);
}

#[test]
fn a_torn_anchor_slot_falls_back_to_the_record_before() {
    use super::anchor::SLOT;
    let fx = fixture();
    drop(fx.with_records(3));
    // A crash while slot 1 (seq 3) was being overwritten.
    let mut bytes = fs::read(&fx.anchor).unwrap();
    bytes[SLOT + 10..SLOT + 40].fill(0);
    fs::write(&fx.anchor, &bytes).unwrap();
    let rep = fx.verify();
    assert!(rep.ok, "a torn slot is what a crash leaves: {rep:?}");
    assert!(
        rep.notes
            .iter()
            .any(|n| n.contains("past the anchor at seq 2")),
        "{rep:?}"
    );
    let log = fx.open(Some(key()));
    assert_eq!(log.append(&ev(1000, "secret.set", Some("N4"))).unwrap(), 4);
    assert!(fx.verify().ok);
}

#[test]
fn a_torn_slot_that_still_parses_falls_back_to_the_other_slot() {
    use super::anchor::SLOT;
    let fx = fixture();
    drop(fx.with_records(3));
    // A crash left slot 1 well-formed but mixing new and old bytes: its
    // sequence number says 3, its MACs belong to another record.
    let mut bytes = fs::read(&fx.anchor).unwrap();
    let slot0 = String::from_utf8(bytes[..SLOT].to_vec()).unwrap();
    let torn = slot0.replacen("\"seq\":2", "\"seq\":3", 1);
    assert_ne!(torn, slot0);
    bytes[SLOT..2 * SLOT].copy_from_slice(torn.as_bytes());
    fs::write(&fx.anchor, &bytes).unwrap();
    let rep = fx.verify();
    assert!(
        rep.ok,
        "the intact slot is used, not a forgery alarm: {rep:?}"
    );
    let log = fx.open(Some(key()));
    assert_eq!(log.append(&ev(1000, "secret.set", Some("N4"))).unwrap(), 4);
    assert!(fx.verify().ok);
}

#[test]
fn a_single_object_anchor_of_earlier_versions_is_read_and_converted() {
    use super::anchor::SLOT;
    let fx = fixture();
    drop(fx.with_records(2));
    let bytes = fs::read(&fx.anchor).unwrap();
    let newest = String::from_utf8(bytes[..SLOT].to_vec()).unwrap();
    fs::write(&fx.anchor, format!("{}\n", newest.trim())).unwrap();
    assert!(fx.verify().ok, "{:?}", fx.verify());
    let log = fx.open(Some(key()));
    assert_eq!(log.append(&ev(1000, "secret.set", Some("N3"))).unwrap(), 3);
    assert_eq!(fs::read(&fx.anchor).unwrap().len(), 2 * SLOT);
    assert!(fx.verify().ok);
}

#[test]
fn append_then_says_durable_only_once_the_record_is_in_the_log() {
    let fx = fixture();
    let log = fx.open(Some(key()));
    let mut told = false;
    let seq = log
        .append_then(&ev(1000, "run", Some("r")), || {
            told = true;
            let text = fs::read_to_string(&fx.log).unwrap();
            assert!(
                text.contains("\"seq\":1,"),
                "told before the record was written"
            );
        })
        .unwrap();
    assert!(told && seq == 1);
    assert!(fx.verify().ok, "{:?}", fx.verify());

    // A log that cannot be written: never told, and the append fails.
    let saved = fx.log.with_extension("saved");
    fs::rename(&fx.log, &saved).unwrap();
    fs::create_dir(&fx.log).unwrap();
    let mut told = false;
    assert!(log
        .append_then(&ev(1000, "run", Some("r")), || told = true)
        .is_err());
    assert!(!told, "told durable for a record that was not written");
    fs::remove_dir(&fx.log).unwrap();
    fs::rename(&saved, &fx.log).unwrap();
    assert_eq!(log.append(&ev(1000, "run", Some("r"))).unwrap(), 2);
    assert!(fx.verify().ok, "{:?}", fx.verify());
}

/// Appends from many threads at once (the anchor of one record being
/// flushed while the next record is written) still make one unbroken
/// chain, and the anchor ends on the newest record.
#[test]
fn concurrent_appends_chain_and_anchor_the_newest_record() {
    let fx = fixture();
    let log = std::sync::Arc::new(fx.open(Some(key())));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..20)
                    .map(|_| log.append(&ev(t, "run.exit", Some("x"))).unwrap())
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=160).collect::<Vec<u64>>(), "each seq once");
    let rep = fx.verify();
    assert!(rep.ok, "{rep:?}");
    assert_eq!(rep.records, 160);
    assert!(
        rep.notes.iter().all(|n| !n.contains("past the anchor")),
        "the anchor names the newest record: {rep:?}"
    );
    let anchor = super::anchor::read_anchor(&fx.anchor, Some(&key()))
        .unwrap()
        .unwrap();
    assert_eq!(anchor.seq, 160);
}

/// Updates for skipped records (an older one is never written after a
/// newer) still alternate slots, so the other slot always holds the anchor
/// written just before, never an older one.
#[test]
fn anchor_slots_alternate_by_write_when_records_are_skipped() {
    use super::anchor::{AnchorWriter, SLOT};
    let fx = fixture();
    let mut writer = AnchorWriter::default();
    let mac = [7u8; 32];
    for seq in [5, 6, 8] {
        writer.write(&fx.anchor, seq, &mac, Some(&key())).unwrap();
    }
    let bytes = fs::read(&fx.anchor).unwrap();
    let slot = |i: usize| {
        let s = String::from_utf8(bytes[i * SLOT..(i + 1) * SLOT].to_vec()).unwrap();
        serde_json::from_str::<serde_json::Value>(s.trim()).unwrap()["seq"]
            .as_u64()
            .unwrap()
    };
    let mut seqs = [slot(0), slot(1)];
    seqs.sort_unstable();
    assert_eq!(seqs, [6, 8], "the newest anchor and the one before it");
}

fn root() -> Actor {
    Actor {
        uid: 0,
        gid: 0,
        pid: 1,
    }
}

impl Fixture {
    fn verify_archives(&self) -> VerifyReport {
        AuditLog::verify_archives(&self.log, &self.anchor, &key(), UNKEYED)
    }
}

#[test]
fn a_rotated_log_verifies_from_its_rotate_record() {
    let f = fixture();
    let log = f.with_records(3);
    let (record, archive) = log.rotate(root()).unwrap();
    assert_eq!(archive, "audit.jsonl.1-3");
    let r: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(r["seq"], 4);
    assert_eq!(r["op"], "audit.rotate");
    assert_eq!(log.append(&ev(1000, "secret.set", Some("N5"))).unwrap(), 5);
    assert_eq!(f.lines().len(), 2);
    assert!(f.verify().ok, "{:?}", f.verify());
    let all = f.verify_archives();
    assert!(all.ok, "{all:?}");
    assert_eq!(all.records, 5);
}

#[test]
fn deleting_the_rotate_record_is_caught() {
    let f = fixture();
    let log = f.with_records(3);
    log.rotate(root()).unwrap();
    log.append(&ev(1000, "secret.set", Some("N5"))).unwrap();
    let lines = f.lines();
    f.set_lines(&lines[1..]);
    assert_problem(&f.verify(), "seq 5 follows 0 (records deleted)");
}

#[test]
fn a_rotation_is_refused_when_the_log_does_not_end_where_the_chain_does() {
    let f = fixture();
    let log = f.with_records(3);
    let lines = f.lines();
    f.set_lines(&lines[..2]);
    let e = log.rotate(root()).unwrap_err();
    assert!(matches!(e, AuditError::Rotate(_)), "{e}");
    assert_eq!(f.lines(), lines[..2].to_vec(), "the log is unchanged");
    assert!(!f.log.with_file_name("audit.jsonl.1-3").exists());
    assert!(!f.log.with_file_name("audit.jsonl.rotating").exists());
}

#[test]
fn an_archive_that_grew_after_its_rotation_is_caught() {
    let f = fixture();
    let log = f.with_records(3);
    log.rotate(root()).unwrap();
    let archive = f.log.with_file_name("audit.jsonl.1-3");
    // A validly chained record appended to the archive afterwards.
    let other_anchor = f.anchor.with_file_name("other.anchor");
    let grown = AuditLog::open(&archive, &other_anchor, Some(key())).unwrap();
    grown.append(&ev(1000, "secret.set", Some("LATE"))).unwrap();
    assert!(f.verify().ok);
    assert_problem(
        &f.verify_archives(),
        "archive audit.jsonl.1-3: goes on past seq 3 to seq 4",
    );
}
