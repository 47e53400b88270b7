//! Store tests: round trips, tampering, rotation, failure atomicity,
//! migration from the single-file format, and hostile files.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use redb::ReadableTable;

use super::format::{self, VaultFile};
use super::*;
use crate::keys::{KdfParams, Kek};

const ALICE: Scope = Scope::User(1000);
const BOB: Scope = Scope::User(1001);

fn kek(b: u8) -> Kek {
    Kek::from_bytes([b; 32])
}

fn val(s: &str) -> SecretValue {
    SecretValue::new(s.as_bytes().to_vec())
}

fn state() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn put(v: &Vault, scope: Scope, name: &str, value: &str) -> u64 {
    v.put(
        scope,
        name,
        &val(value),
        MetaUpdate::default(),
        PutMode::Upsert,
    )
    .unwrap()
}

fn plain(v: &Vault, scope: Scope, name: &str) -> Vec<u8> {
    v.decrypt(scope, name).unwrap().as_bytes().to_vec()
}

fn store_file(dir: &Path) -> std::path::PathBuf {
    dir.join(format::STORE_FILE)
}

/// A vault with three alice secrets, one bob secret and one system secret.
fn populated(dir: &Path) -> Vault {
    let v = Vault::init(dir, &kek(1), "file", None).unwrap();
    put(&v, ALICE, "AAA", "value-a");
    put(&v, ALICE, "BBB", "value-b");
    put(&v, ALICE, "CCC", "value-c");
    put(&v, BOB, "AAA", "bob-a");
    put(&v, Scope::System, "SYS", "system-secret");
    v
}

fn record<'a>(file: &'a mut VaultFile, scope: Scope, name: &str) -> &'a mut format::StoredRecord {
    file.records
        .iter_mut()
        .find(|r| r.scope == scope && r.name == name)
        .unwrap()
}

fn mode_of(path: &Path) -> u32 {
    let m = fs::metadata(path).unwrap();
    std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777
}

#[test]
fn round_trip_through_disk() {
    let dir = state();
    assert!(!Vault::exists(dir.path()));
    let v = populated(dir.path());
    assert!(Vault::exists(dir.path()));
    assert_eq!(v.count(), (4, 1));
    let names: Vec<_> = v.list(ALICE).into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["AAA", "BBB", "CCC"]);
    assert_eq!(v.list(Scope::System).len(), 1);
    assert!(v.list(Scope::User(1)).is_empty());
    let listed = v.list(ALICE);
    let id = v.vault_id();
    // The store is locked while open, in this process too.
    assert!(matches!(
        Vault::open(dir.path(), &kek(1)),
        Err(StoreError::InUse)
    ));
    drop(v);

    let again = Vault::open(dir.path(), &kek(1)).unwrap();
    assert_eq!(again.vault_id(), id);
    assert_eq!(plain(&again, ALICE, "BBB"), b"value-b");
    assert_eq!(plain(&again, BOB, "AAA"), b"bob-a");
    assert_eq!(plain(&again, Scope::System, "SYS"), b"system-secret");
    assert_eq!(again.list(ALICE), listed);
    let m = again.meta(ALICE, "AAA").unwrap();
    assert_eq!((m.version, m.value_len, m.scope), (1, 7, ALICE));
    assert!(m.created > 0 && m.updated >= m.created);
    drop(again);

    for f in [format::STORE_FILE, format::HEADER_FILE] {
        assert_eq!(mode_of(&dir.path().join(f)), 0o600, "{f}");
    }
    // No file holds plaintext.
    for entry in fs::read_dir(dir.path()).unwrap() {
        let bytes = fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(13).any(|w| w == b"system-secret"));
        assert!(!bytes.windows(7).any(|w| w == b"value-a"));
    }
}

#[test]
fn pages_of_a_list() {
    let dir = state();
    let v = Vault::init(dir.path(), &kek(1), "file", None).unwrap();
    let names: Vec<String> = (0..25).map(|i| format!("N{i:02}")).collect();
    v.put_many(ALICE, names.iter().map(|n| (n.clone(), val("x"))).collect())
        .unwrap();
    put(&v, BOB, "N00", "y");
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = v.list_after(ALICE, after.as_deref(), 10);
        if page.is_empty() {
            break;
        }
        after = page.last().map(|m| m.name.clone());
        seen.extend(page.into_iter().map(|m| m.name));
    }
    assert_eq!(seen, names);
    assert!(v.list_after(Scope::User(7), None, 10).is_empty());
}

#[test]
fn header_is_readable_without_the_key() {
    let dir = state();
    let kdf = KdfParams::generate_fast().unwrap();
    let v = Vault::init(dir.path(), &kek(3), "passphrase", Some(kdf.clone())).unwrap();
    put(&v, ALICE, "X", "y");
    // While the vault is open (as the running daemon holds it), from the
    // public header copy; afterwards from the store itself.
    let open = Vault::read_header(dir.path()).unwrap();
    let id = v.vault_id();
    drop(v);
    fs::remove_file(dir.path().join(format::HEADER_FILE)).unwrap();
    let closed = Vault::read_header(dir.path()).unwrap();
    assert_eq!(open, closed);
    assert_eq!(closed.provider_kind, "passphrase");
    assert_eq!(closed.kdf, Some(kdf));
    assert_eq!(closed.vault_id, id);
    assert_eq!(closed.dek_generation, 1);
    assert_eq!(closed.format_version, format::FORMAT_VERSION);
    // Opening restores the copy.
    drop(Vault::open(dir.path(), &kek(3)).unwrap());
    assert!(dir.path().join(format::HEADER_FILE).exists());
}

#[test]
fn init_refuses_an_existing_vault() {
    let dir = state();
    drop(populated(dir.path()));
    let before = format::read_all(dir.path()).unwrap();
    let e = Vault::init(dir.path(), &kek(2), "file", None).unwrap_err();
    assert!(matches!(e, StoreError::Exists { .. }), "{e}");
    assert_eq!(format::read_all(dir.path()).unwrap(), before);
    // An old-format vault counts as a vault too.
    let old = state();
    legacy::write_file(&legacy::legacy_path(old.path()), &before).unwrap();
    assert!(Vault::exists(old.path()));
    assert!(matches!(
        Vault::init(old.path(), &kek(2), "file", None),
        Err(StoreError::Exists { .. })
    ));
}

#[test]
fn wrong_key_is_reported_as_such() {
    let dir = state();
    drop(populated(dir.path()));
    let e = Vault::open(dir.path(), &kek(2)).unwrap_err();
    assert!(matches!(e, StoreError::WrongKey), "{e}");
}

#[test]
fn swapped_ciphertexts_are_tampered_and_others_still_decrypt() {
    let dir = state();
    drop(populated(dir.path()));
    let mut file = format::read_all(dir.path()).unwrap();
    let a = record(&mut file, ALICE, "AAA").sealed.clone();
    let b = std::mem::replace(&mut record(&mut file, ALICE, "BBB").sealed, a);
    record(&mut file, ALICE, "AAA").sealed = b;
    format::write_all(dir.path(), &file).unwrap();

    let v = Vault::open(dir.path(), &kek(1)).unwrap();
    for n in ["AAA", "BBB"] {
        let e = v.decrypt(ALICE, n).unwrap_err();
        assert!(matches!(&e, StoreError::Tampered { scope, name } if *scope == ALICE && name == n));
        let msg = e.to_string();
        assert!(
            !msg.contains("value-a") && !msg.contains("value-b"),
            "{msg}"
        );
    }
    assert_eq!(plain(&v, ALICE, "CCC"), b"value-c");
    assert_eq!(plain(&v, BOB, "AAA"), b"bob-a");
}

#[test]
fn flipped_ciphertext_bits_are_tampering() {
    let dir = state();
    drop(populated(dir.path()));
    let mut file = format::read_all(dir.path()).unwrap();
    record(&mut file, BOB, "AAA").sealed.ciphertext[2] ^= 0x01;
    record(&mut file, ALICE, "BBB").sealed.nonce[0] ^= 0x80;
    record(&mut file, ALICE, "CCC").sealed.ciphertext.pop();
    format::write_all(dir.path(), &file).unwrap();
    let v = Vault::open(dir.path(), &kek(1)).unwrap();
    for (s, n) in [(BOB, "AAA"), (ALICE, "BBB"), (ALICE, "CCC")] {
        assert!(matches!(v.decrypt(s, n), Err(StoreError::Tampered { .. })));
    }
    assert_eq!(plain(&v, ALICE, "AAA"), b"value-a");
}

#[test]
fn relabelled_records_do_not_decrypt() {
    let dir = state();
    drop(populated(dir.path()));
    let original = format::read_all(dir.path()).unwrap();

    // A row moved to another scope or name, or with another version, keeps
    // its ciphertext but not the associated data it was sealed with.
    let edits: [fn(&mut format::StoredRecord); 5] = [
        |r| r.scope = Scope::User(4242),
        |r| r.scope = Scope::System,
        |r| r.scope = BOB,
        |r| r.name = "ZZZ".into(),
        |r| r.version += 1,
    ];
    for edit in edits {
        let mut file = original.clone();
        let r = record(&mut file, ALICE, "CCC");
        edit(r);
        let (scope, name) = (r.scope, r.name.clone());
        format::write_all(dir.path(), &file).unwrap();
        let v = Vault::open(dir.path(), &kek(1)).unwrap();
        assert!(matches!(
            v.decrypt(scope, &name),
            Err(StoreError::Tampered { .. })
        ));
    }

    // A record copied into another vault does not decrypt there either.
    let other = state();
    let w = Vault::init(other.path(), &kek(1), "file", None).unwrap();
    put(&w, ALICE, "CCC", "other-vault");
    drop(w);
    let mut file = format::read_all(other.path()).unwrap();
    let theirs = original
        .records
        .iter()
        .find(|r| r.scope == ALICE && r.name == "CCC")
        .unwrap();
    file.records[0].sealed = theirs.sealed.clone();
    file.records[0].value_len = theirs.value_len;
    format::write_all(other.path(), &file).unwrap();
    let w = Vault::open(other.path(), &kek(1)).unwrap();
    assert!(matches!(
        w.decrypt(ALICE, "CCC"),
        Err(StoreError::Tampered { .. })
    ));
}

#[test]
fn a_row_copied_under_another_key_is_tampering() {
    // The raw rows, as the engine stores them: the value bytes of one row
    // under another row's key.
    let dir = state();
    drop(populated(dir.path()));
    let db = engine::open(&store_file(dir.path()), Default::default()).unwrap();
    engine::write(&db, |txn| {
        let mut t = txn.open_table(format::RECORDS_TABLE).unwrap();
        let from = t
            .get(format::record_key(ALICE, "AAA").as_slice())
            .unwrap()
            .unwrap()
            .value()
            .to_vec();
        t.insert(format::record_key(BOB, "AAA").as_slice(), from.as_slice())
            .unwrap();
        t.insert(format::record_key(ALICE, "NEW").as_slice(), from.as_slice())
            .unwrap();
        Ok(())
    })
    .unwrap();
    drop(db);
    let v = Vault::open(dir.path(), &kek(1)).unwrap();
    for (s, n) in [(BOB, "AAA"), (ALICE, "NEW")] {
        assert!(matches!(v.decrypt(s, n), Err(StoreError::Tampered { .. })));
    }
    assert_eq!(plain(&v, ALICE, "AAA"), b"value-a");
}

#[test]
fn put_modes_and_metadata() {
    let dir = state();
    let v = Vault::init(dir.path(), &kek(1), "file", None).unwrap();
    let meta = MetaUpdate {
        description: Some("deploy token".into()),
        tags: vec!["ci".into()],
        expires: Some(4_000_000_000),
    };
    assert_eq!(
        v.put(ALICE, "TOK", &val("one"), meta, PutMode::Create)
            .unwrap(),
        1
    );
    let e = v
        .put(
            ALICE,
            "TOK",
            &val("two"),
            MetaUpdate::default(),
            PutMode::Create,
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists { .. }));
    let e = v
        .put(
            ALICE,
            "NOPE",
            &val("x"),
            MetaUpdate::default(),
            PutMode::Rotate,
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }));
    assert!(v.meta(ALICE, "NOPE").is_none());

    let created = v.meta(ALICE, "TOK").unwrap().created;
    assert_eq!(
        v.put(
            ALICE,
            "TOK",
            &val("three"),
            MetaUpdate::default(),
            PutMode::Rotate
        )
        .unwrap(),
        2
    );
    let m = v.meta(ALICE, "TOK").unwrap();
    assert_eq!(m.description.as_deref(), Some("deploy token"));
    assert_eq!(m.tags, ["ci"]);
    assert_eq!(m.expires, Some(4_000_000_000));
    assert_eq!((m.version, m.created, m.value_len), (2, created, 5));
    assert_eq!(plain(&v, ALICE, "TOK"), b"three");

    let new_meta = MetaUpdate {
        description: Some("new".into()),
        tags: vec!["a".into(), "b".into()],
        expires: None,
    };
    assert_eq!(
        v.put(ALICE, "TOK", &val("four"), new_meta, PutMode::Upsert)
            .unwrap(),
        3
    );
    let m = v.meta(ALICE, "TOK").unwrap();
    assert_eq!(m.description.as_deref(), Some("new"));
    assert_eq!(m.tags, ["a", "b"]);
    assert_eq!(m.expires, Some(4_000_000_000));
    // The same name in another scope is a different secret.
    assert_eq!(put(&v, BOB, "TOK", "bob"), 1);
    assert_eq!(plain(&v, ALICE, "TOK"), b"four");
    // And all of it is what the store holds.
    let listed = v.list(ALICE);
    drop(v);
    let again = Vault::open(dir.path(), &kek(1)).unwrap();
    assert_eq!(again.list(ALICE), listed);
}

#[test]
fn values_and_names_are_checked() {
    let dir = state();
    let v = Vault::init(dir.path(), &kek(1), "file", None).unwrap();
    let up = |v: &Vault, name: &str, value: Vec<u8>| {
        v.put(
            ALICE,
            name,
            &SecretValue::new(value),
            MetaUpdate::default(),
            PutMode::Upsert,
        )
    };
    assert!(matches!(up(&v, "E", vec![]), Err(StoreError::EmptyValue)));
    assert!(matches!(
        up(&v, "BIG", vec![b'x'; MAX_VALUE_LEN + 1]),
        Err(StoreError::ValueTooLarge { .. })
    ));
    up(&v, "MAX", vec![b'x'; MAX_VALUE_LEN]).unwrap();
    assert_eq!(v.decrypt(ALICE, "MAX").unwrap().len(), MAX_VALUE_LEN);
    assert!(matches!(
        up(&v, "1bad", b"x".to_vec()),
        Err(StoreError::InvalidName(_))
    ));
    assert!(matches!(
        up(&v, "../x", b"x".to_vec()),
        Err(StoreError::InvalidName(_))
    ));
    up(&v, "bin", vec![0, 255, 10, 0]).unwrap();
    assert_eq!(plain(&v, ALICE, "bin"), [0, 255, 10, 0]);
    assert_eq!(v.count(), (2, 0));
}

#[test]
fn remove_and_not_found() {
    let dir = state();
    let v = populated(dir.path());
    v.remove(ALICE, "BBB").unwrap();
    assert!(matches!(
        v.remove(ALICE, "BBB"),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        v.decrypt(ALICE, "BBB"),
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        v.remove(Scope::System, "AAA"),
        Err(StoreError::NotFound { .. })
    ));
    drop(v);
    let again = Vault::open(dir.path(), &kek(1)).unwrap();
    assert!(again.meta(ALICE, "BBB").is_none());
    assert_eq!(plain(&again, ALICE, "CCC"), b"value-c");
    assert_eq!(again.count(), (3, 1));
}

#[test]
fn put_many_is_all_or_nothing() {
    let dir = state();
    let v = populated(dir.path());
    let bad = vec![
        ("NEW1".to_string(), val("n1")),
        ("9invalid".to_string(), val("n2")),
    ];
    assert!(matches!(
        v.put_many(ALICE, bad),
        Err(StoreError::InvalidName(_))
    ));
    let empty = vec![
        ("NEW1".to_string(), val("n1")),
        ("NEW2".to_string(), val("")),
    ];
    assert!(matches!(
        v.put_many(ALICE, empty),
        Err(StoreError::EmptyValue)
    ));
    assert!(v.meta(ALICE, "NEW1").is_none());
    // A failure inside the transaction (the second entry's write) leaves
    // none of the entries either.
    v.fail_writes(true);
    assert!(matches!(
        v.put_many(
            ALICE,
            vec![("NEW1".into(), val("n1")), ("NEW3".into(), val("n3"))]
        ),
        Err(StoreError::Storage(_))
    ));
    v.fail_writes(false);
    assert!(v.meta(ALICE, "NEW1").is_none());

    let good = vec![
        ("NEW1".to_string(), val("n1")),
        ("AAA".to_string(), val("replaced")),
    ];
    assert_eq!(v.put_many(ALICE, good).unwrap(), 2);
    assert_eq!(v.put_many(ALICE, Vec::new()).unwrap(), 0);
    drop(v);
    let again = Vault::open(dir.path(), &kek(1)).unwrap();
    assert_eq!(plain(&again, ALICE, "NEW1"), b"n1");
    assert_eq!(plain(&again, ALICE, "AAA"), b"replaced");
    assert_eq!(again.meta(ALICE, "AAA").unwrap().version, 2);
    assert!(again.meta(ALICE, "NEW3").is_none());
}

#[test]
fn import_decides_about_existing_names_in_its_transaction() {
    let dir = state();
    let v = populated(dir.path());
    let entries = || {
        vec![
            ("NEW".to_string(), val("new")),
            ("AAA".into(), val("imported")),
        ]
    };
    assert!(matches!(
        v.import(ALICE, entries(), OnExisting::Refuse, &MetaUpdate::default()),
        Err(StoreError::AlreadyExists { name }) if name == "AAA"
    ));
    assert!(v.meta(ALICE, "NEW").is_none());
    assert_eq!(
        v.import(ALICE, entries(), OnExisting::Skip, &MetaUpdate::default())
            .unwrap(),
        1
    );
    assert_eq!(plain(&v, ALICE, "AAA"), b"value-a");
    assert_eq!(plain(&v, ALICE, "NEW"), b"new");
    assert_eq!(
        v.import(
            ALICE,
            entries(),
            OnExisting::Replace,
            &MetaUpdate::default()
        )
        .unwrap(),
        2
    );
    assert_eq!(plain(&v, ALICE, "AAA"), b"imported");
    assert_eq!(v.meta(ALICE, "NEW").unwrap().version, 2);
    assert_eq!(v.count_in(ALICE), 4);
    assert_eq!(v.count_in(Scope::User(5)), 0);
}

#[test]
fn failed_write_leaves_state_unchanged() {
    let dir = state();
    let mut v = populated(dir.path());
    let list_before = v.list(ALICE);
    v.fail_writes(true);

    let e = v
        .put(
            ALICE,
            "AAA",
            &val("lost"),
            MetaUpdate::default(),
            PutMode::Upsert,
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::Storage(_)), "{e}");
    assert!(matches!(
        v.put(
            ALICE,
            "NEW",
            &val("x"),
            MetaUpdate::default(),
            PutMode::Create
        ),
        Err(StoreError::Storage(_))
    ));
    assert!(matches!(
        v.remove(ALICE, "BBB"),
        Err(StoreError::Storage(_))
    ));
    assert!(matches!(
        v.put_many(ALICE, vec![("M".into(), val("m"))]),
        Err(StoreError::Storage(_))
    ));
    let generation = v.dek_generation();
    assert!(v.rotate_dek().is_err());
    assert!(v.rekey(&kek(9), "file", None).is_err());

    assert_eq!(v.list(ALICE), list_before);
    assert_eq!(v.dek_generation(), generation);
    assert!(v.meta(ALICE, "NEW").is_none());

    // Once writes work again, the vault reopens its store and the next
    // write holds exactly the old state plus the new change, under the old
    // key.
    v.fail_writes(false);
    assert_eq!(plain(&v, ALICE, "AAA"), b"value-a");
    assert_eq!(plain(&v, ALICE, "BBB"), b"value-b");
    put(&v, ALICE, "DDD", "value-d");
    drop(v);
    let again = Vault::open(dir.path(), &kek(1)).unwrap();
    assert_eq!(plain(&again, ALICE, "AAA"), b"value-a");
    assert_eq!(plain(&again, ALICE, "BBB"), b"value-b");
    assert_eq!(plain(&again, ALICE, "DDD"), b"value-d");
    assert!(again.meta(ALICE, "NEW").is_none() && again.meta(ALICE, "M").is_none());
    assert_eq!(again.dek_generation(), generation);
}

#[test]
fn concurrent_writers_and_readers() {
    let dir = state();
    let v = std::sync::Arc::new(populated(dir.path()));
    let threads: Vec<_> = (0..8u32)
        .map(|t| {
            let v = v.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    put(&v, Scope::User(t), &format!("K{i}"), &format!("t{t}-{i}"));
                    assert_eq!(plain(&v, ALICE, "AAA"), b"value-a");
                    assert!(v.meta(Scope::User(t), &format!("K{i}")).is_some());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let v = std::sync::Arc::into_inner(v).unwrap();
    drop(v);
    let again = Vault::open(dir.path(), &kek(1)).unwrap();
    for t in 0..8 {
        assert_eq!(again.list(Scope::User(t)).len(), 20);
        assert_eq!(
            plain(&again, Scope::User(t), "K19"),
            format!("t{t}-19").as_bytes()
        );
    }
}

#[test]
fn reads_do_not_wait_for_a_write_in_progress() {
    let dir = state();
    let v = std::sync::Arc::new(populated(dir.path()));
    let held = v.hold_writes();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = {
        let v = v.clone();
        std::thread::spawn(move || {
            let value = v.decrypt(ALICE, "AAA").unwrap().as_bytes().to_vec();
            tx.send((value, v.list(ALICE).len(), v.meta(BOB, "AAA").is_some()))
                .unwrap();
        })
    };
    // Generous: a read that waited for the held write would never come.
    let got = rx.recv_timeout(std::time::Duration::from_secs(20));
    drop(held);
    reader.join().unwrap();
    assert_eq!(got.unwrap(), (b"value-a".to_vec(), 3, true));
}

#[test]
fn rotate_dek_keeps_every_value() {
    let dir = state();
    drop(populated(dir.path()));
    let old_file = format::read_all(dir.path()).unwrap();
    let mut v = Vault::open(dir.path(), &kek(1)).unwrap();
    v.rotate_dek().unwrap();
    v.rotate_dek().unwrap();
    assert_eq!(v.dek_generation(), old_file.dek_generation + 2);
    assert_eq!(plain(&v, ALICE, "AAA"), b"value-a");
    // Writes after a rotation use the new key.
    put(&v, ALICE, "AFTER", "after-rotation");
    let listed = v.list(ALICE);
    drop(v);
    let again = Vault::open(dir.path(), &kek(1)).unwrap();
    assert_eq!(plain(&again, ALICE, "BBB"), b"value-b");
    assert_eq!(plain(&again, Scope::System, "SYS"), b"system-secret");
    assert_eq!(plain(&again, ALICE, "AFTER"), b"after-rotation");
    assert_eq!(again.list(ALICE), listed);
    assert_eq!(Vault::read_header(dir.path()).unwrap().dek_generation, 3);
    drop(again);
    let new_file = format::read_all(dir.path()).unwrap();
    assert_ne!(new_file.wrapped_dek, old_file.wrapped_dek);
    for a in &old_file.records {
        let b = new_file
            .records
            .iter()
            .find(|b| (b.scope, &b.name) == (a.scope, &a.name))
            .unwrap();
        assert_ne!(a.sealed, b.sealed);
    }
    // Re-planting an old-generation ciphertext fails.
    let mut file = new_file;
    file.records[0].sealed = old_file.records[0].sealed.clone();
    format::write_all(dir.path(), &file).unwrap();
    let again = Vault::open(dir.path(), &kek(1)).unwrap();
    let r = &file.records[0];
    assert!(matches!(
        again.decrypt(r.scope, &r.name),
        Err(StoreError::Tampered { .. })
    ));
}

#[test]
fn rotate_dek_aborts_on_a_tampered_record() {
    let dir = state();
    drop(populated(dir.path()));
    let mut file = format::read_all(dir.path()).unwrap();
    record(&mut file, Scope::System, "SYS").sealed.ciphertext[0] ^= 0x80;
    format::write_all(dir.path(), &file).unwrap();

    let mut v = Vault::open(dir.path(), &kek(1)).unwrap();
    let e = v.rotate_dek().unwrap_err();
    assert!(matches!(&e, StoreError::Tampered { scope: Scope::System, name } if name == "SYS"));
    assert_eq!(plain(&v, ALICE, "AAA"), b"value-a");
    assert_eq!(v.dek_generation(), file.dek_generation);
    drop(v);
    assert_eq!(format::read_all(dir.path()).unwrap(), file);
}

#[test]
fn rekey_keeps_every_value_and_retires_the_old_key() {
    let dir = state();
    let mut v = populated(dir.path());
    let kdf = KdfParams::generate_fast().unwrap();
    let new = crate::keys::kek_from_passphrase(b"a passphrase", &kdf).unwrap();
    v.rekey(&new, "passphrase", Some(kdf.clone())).unwrap();
    assert_eq!(plain(&v, ALICE, "AAA"), b"value-a");
    assert_eq!(v.provider_kind(), "passphrase");
    // The public copy follows at once (the daemon is not running during a
    // rekey, but `--check-config` may read it later while it is).
    let h = Vault::read_header(dir.path()).unwrap();
    assert_eq!(
        (h.provider_kind.as_str(), &h.kdf),
        ("passphrase", &Some(kdf.clone()))
    );
    drop(v);
    assert!(matches!(
        Vault::open(dir.path(), &kek(1)),
        Err(StoreError::WrongKey)
    ));
    let h = Vault::read_header(dir.path()).unwrap();
    assert_eq!((h.provider_kind.as_str(), h.kdf), ("passphrase", Some(kdf)));
    let mut again = Vault::open(dir.path(), &new).unwrap();
    assert_eq!(plain(&again, BOB, "AAA"), b"bob-a");
    // After a rekey, a DEK rotation wraps under the new key.
    again.rotate_dek().unwrap();
    drop(again);
    let last = Vault::open(dir.path(), &new).unwrap();
    assert_eq!(plain(&last, Scope::System, "SYS"), b"system-secret");
    drop(last);
    // And back to a key file.
    let mut again = Vault::open(dir.path(), &new).unwrap();
    again.rekey(&kek(7), "file", None).unwrap();
    drop(again);
    let back = Vault::open(dir.path(), &kek(7)).unwrap();
    assert_eq!(plain(&back, ALICE, "CCC"), b"value-c");
    drop(back);
    assert_eq!(Vault::read_header(dir.path()).unwrap().kdf, None);
    // The public copy never holds a wrapped data key.
    let copy = fs::read(dir.path().join(format::HEADER_FILE)).unwrap();
    let wrapped = format::read_all(dir.path()).unwrap().wrapped_dek;
    assert!(!copy.windows(24).any(|w| w == wrapped.nonce));
}

/// An old-format vault: what the single-file writer of format 1 left.
fn legacy_vault(dir: &Path) -> VaultFile {
    let src = state();
    drop(populated(src.path()));
    let mut file = format::read_all(src.path()).unwrap();
    // The old reader accepted records in any order.
    file.records.reverse();
    legacy::write_file(&legacy::legacy_path(dir), &file).unwrap();
    file
}

#[test]
fn an_old_vault_is_migrated_on_open_and_the_old_file_removed() {
    let dir = state();
    let mut old = legacy_vault(dir.path());
    let old_bytes = fs::read(legacy::legacy_path(dir.path())).unwrap();
    assert_eq!(&old_bytes[8..10], &legacy::LEGACY_VERSION.to_be_bytes());
    assert!(Vault::exists(dir.path()));
    // Before the migration its header reads from the old file.
    let h = Vault::read_header(dir.path()).unwrap();
    assert_eq!((h.format_version, h.vault_id), (1, old.vault_id));

    let v = Vault::open(dir.path(), &kek(1)).unwrap();
    assert!(!legacy::legacy_path(dir.path()).exists());
    assert!(store_file(dir.path()).exists());
    assert_eq!(v.vault_id(), old.vault_id);
    assert_eq!(v.count(), (4, 1));
    assert_eq!(plain(&v, ALICE, "AAA"), b"value-a");
    assert_eq!(plain(&v, ALICE, "CCC"), b"value-c");
    assert_eq!(plain(&v, BOB, "AAA"), b"bob-a");
    assert_eq!(plain(&v, Scope::System, "SYS"), b"system-secret");
    // Writes work on the migrated vault.
    put(&v, ALICE, "AAA", "after-migration");
    drop(v);
    let again = Vault::open(dir.path(), &kek(1)).unwrap();
    assert_eq!(plain(&again, ALICE, "AAA"), b"after-migration");
    assert_eq!(again.meta(ALICE, "AAA").unwrap().version, 2);
    drop(again);
    // Everything else moved byte for byte.
    old.records.reverse();
    let now = format::read_all(dir.path()).unwrap();
    assert_eq!(now.wrapped_dek, old.wrapped_dek);
    for (a, b) in old.records.iter().zip(&now.records) {
        if (a.scope, a.name.as_str()) != (ALICE, "AAA") {
            assert_eq!(a, b);
        }
    }
    assert_eq!(Vault::read_header(dir.path()).unwrap().format_version, 2);
}

#[test]
fn migration_needs_no_key_and_a_wrong_key_still_fails() {
    let dir = state();
    legacy_vault(dir.path());
    assert_eq!(Vault::migrate(dir.path()).unwrap(), Some(5));
    assert_eq!(Vault::migrate(dir.path()).unwrap(), None);
    assert!(matches!(
        Vault::open(dir.path(), &kek(2)),
        Err(StoreError::WrongKey)
    ));
    let v = Vault::open(dir.path(), &kek(1)).unwrap();
    assert_eq!(plain(&v, Scope::System, "SYS"), b"system-secret");
    // A fresh state directory has nothing to migrate.
    assert_eq!(Vault::migrate(state().path()).unwrap(), None);
}

#[test]
fn an_interrupted_migration_is_redone_or_finished() {
    // Stopped before the rename: a partial temporary store and the old
    // file; the next start starts over.
    let dir = state();
    legacy_vault(dir.path());
    fs::write(dir.path().join("vault.redb.migrating"), b"partial").unwrap();
    let v = Vault::open(dir.path(), &kek(1)).unwrap();
    assert_eq!(plain(&v, ALICE, "BBB"), b"value-b");
    assert!(!dir.path().join("vault.redb.migrating").exists());
    drop(v);

    // Stopped after the rename: the verified store and the old file, the
    // same vault; the next start removes the old file.
    let old = state();
    let file = legacy_vault(old.path());
    let copy = fs::read(legacy::legacy_path(old.path())).unwrap();
    drop(Vault::open(old.path(), &kek(1)).unwrap());
    fs::write(legacy::legacy_path(old.path()), &copy).unwrap();
    let v = Vault::open(old.path(), &kek(1)).unwrap();
    assert!(!legacy::legacy_path(old.path()).exists());
    assert_eq!(v.count().0 + v.count().1, file.records.len());

    // An old file that holds something else (an older daemon ran after
    // the upgrade and wrote it): refused, and neither file is touched.
    put(&v, ALICE, "BBB", "newer-than-the-old-file");
    drop(v);
    fs::write(legacy::legacy_path(old.path()), &copy).unwrap();
    let store_before = fs::read(store_file(old.path())).unwrap();
    match Vault::open(old.path(), &kek(1)) {
        Err(StoreError::Corrupt(why)) => assert!(why.contains("different vaults"), "{why}"),
        other => panic!("both files were accepted: {other:?}"),
    }
    assert_eq!(fs::read(legacy::legacy_path(old.path())).unwrap(), copy);
    assert_eq!(fs::read(store_file(old.path())).unwrap(), store_before);
}

#[test]
fn old_files_with_duplicates_or_garbage_are_not_migrated() {
    let dir = state();
    let mut file = legacy_vault(dir.path());
    let dup = file.records[0].clone();
    file.records.push(dup);
    legacy::write_file(&legacy::legacy_path(dir.path()), &file).unwrap();
    assert!(matches!(
        Vault::open(dir.path(), &kek(1)),
        Err(StoreError::Corrupt(_))
    ));
    // Nothing was created, and the old file is still there.
    assert!(!store_file(dir.path()).exists());
    assert!(legacy::legacy_path(dir.path()).exists());

    fs::write(legacy::legacy_path(dir.path()), b"garbage").unwrap();
    assert!(matches!(
        Vault::open(dir.path(), &kek(1)),
        Err(StoreError::NotAVault)
    ));
    assert!(!store_file(dir.path()).exists());
}

#[test]
fn hostile_legacy_files_give_clean_errors() {
    let dir = state();
    legacy_vault(dir.path());
    let good = fs::read(legacy::legacy_path(dir.path())).unwrap();

    // Every truncation fails cleanly (decode never panics).
    for len in 0..good.len() {
        let e = legacy::decode(&good[..len]).unwrap_err();
        assert!(
            matches!(e, StoreError::NotAVault | StoreError::Corrupt(_)),
            "len {len}: {e}"
        );
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        legacy::decode(&trailing),
        Err(StoreError::Corrupt(_))
    ));
    let mut other_magic = good.clone();
    other_magic[0] = b'X';
    assert!(matches!(
        legacy::decode(&other_magic),
        Err(StoreError::NotAVault)
    ));
    let mut v3 = good.clone();
    v3[9] = 3;
    assert!(matches!(
        legacy::decode(&v3),
        Err(StoreError::UnsupportedVersion(3))
    ));
    // Header followed by huge length prefixes: no panic, no giant allocation.
    let mut huge = format::MAGIC.to_vec();
    huge.extend_from_slice(&legacy::LEGACY_VERSION.to_be_bytes());
    huge.extend_from_slice(&[0u8; 16]);
    huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(matches!(legacy::decode(&huge), Err(StoreError::Corrupt(_))));
    for i in 10..good.len() {
        let mut flipped = good.clone();
        flipped[i] ^= 0x5a;
        let _ = legacy::decode(&flipped);
    }
}

#[test]
fn hostile_store_files_give_clean_errors() {
    let dir = state();
    drop(populated(dir.path()));
    let path = store_file(dir.path());
    let good = fs::read(&path).unwrap();
    let clean = |e: &StoreError| {
        matches!(
            e,
            StoreError::Storage(_) | StoreError::Corrupt(_) | StoreError::NotAVault
        )
    };

    for len in [0, 1, 100, 511, 4096, good.len() / 2] {
        fs::write(&path, &good[..len]).unwrap();
        if let Err(e) = Vault::open(dir.path(), &kek(1)) {
            assert!(clean(&e), "len {len}: {e}");
        }
    }
    fs::write(&path, b"garbage that is no database at all").unwrap();
    let e = Vault::open(dir.path(), &kek(1)).unwrap_err();
    assert!(clean(&e), "{e}");
    // Bytes flipped across the file: an error or a vault, never a panic
    // out of the store.
    let mut x: u32 = 0x1234_5678;
    for _ in 0..64 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let mut bytes = good.clone();
        let at = x as usize % bytes.len();
        bytes[at] ^= 0x5a;
        fs::write(&path, &bytes).unwrap();
        if let Ok(v) = Vault::open(dir.path(), &kek(1)) {
            for s in [ALICE, BOB, Scope::System] {
                for m in v.list(s) {
                    let _ = v.decrypt(s, &m.name);
                }
            }
        }
    }
    fs::remove_file(&path).unwrap();
    assert!(matches!(
        Vault::open(dir.path(), &kek(1)),
        Err(StoreError::Read { .. })
    ));

    // A header row of another version or no header at all.
    let other = state();
    let db = engine::create_new(&store_file(other.path())).unwrap();
    drop(db);
    assert!(matches!(
        Vault::open(other.path(), &kek(1)),
        Err(StoreError::NotAVault)
    ));
}

#[test]
fn keys_and_rows_are_checked() {
    assert_eq!(
        format::parse_key(&format::record_key(ALICE, "A.b")).unwrap(),
        (ALICE, "A.b".to_string())
    );
    assert_eq!(
        format::parse_key(&format::record_key(Scope::System, "S")).unwrap(),
        (Scope::System, "S".to_string())
    );
    for bad in [&[][..], &[0x01, 0, 0], &[0x03, b'a'], &[0x02, 0xff]] {
        assert!(matches!(
            format::parse_key(bad),
            Err(StoreError::Corrupt(_))
        ));
    }
    // Rows sort as (scope, name) does.
    let mut keys = [
        (Scope::System, "A"),
        (Scope::User(2), "A"),
        (Scope::User(1), "B"),
        (Scope::User(1), "AB"),
        (Scope::User(256), "A"),
    ];
    let mut by_key = keys;
    keys.sort();
    by_key.sort_by_key(|(s, n)| format::record_key(*s, n));
    assert_eq!(keys, by_key);
}

#[test]
fn state_lock_is_exclusive_and_released_on_drop() {
    let dir = state();
    let lock = lock_state_dir(dir.path()).unwrap();
    let e = lock_state_dir(dir.path()).unwrap_err();
    assert!(matches!(e, StoreError::InUse));
    assert_eq!(e.to_string(), "vault is in use by another process");
    drop(lock);
    let _again = lock_state_dir(dir.path()).unwrap();
    assert!(matches!(
        lock_state_dir(&dir.path().join("missing")),
        Err(StoreError::Lock { .. })
    ));
}

#[test]
fn debug_output_shows_no_keys() {
    let dir = state();
    let v = populated(dir.path());
    let s = format!("{v:?}");
    assert!(s.starts_with("Vault {"), "{s}");
    assert!(!s.contains("dek") || s.contains("dek_generation"));
    assert!(!s.contains("value-a"));
}
