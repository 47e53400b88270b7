//! Store tests: round trips, tampering, rotation, failure atomicity, and
//! hostile files.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

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

fn put(v: &mut Vault, scope: Scope, name: &str, value: &str) -> u64 {
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

fn vault_file(dir: &Path) -> std::path::PathBuf {
    dir.join(format::FILE_NAME)
}

/// A vault with three alice secrets, one bob secret and one system secret.
fn populated(dir: &Path) -> Vault {
    let mut v = Vault::init(dir, &kek(1), "file", None).unwrap();
    put(&mut v, ALICE, "AAA", "value-a");
    put(&mut v, ALICE, "BBB", "value-b");
    put(&mut v, ALICE, "CCC", "value-c");
    put(&mut v, BOB, "AAA", "bob-a");
    put(&mut v, Scope::System, "SYS", "system-secret");
    v
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

    let again = Vault::open(dir.path(), &kek(1)).unwrap();
    assert_eq!(again.vault_id(), v.vault_id());
    assert_eq!(plain(&again, ALICE, "BBB"), b"value-b");
    assert_eq!(plain(&again, BOB, "AAA"), b"bob-a");
    assert_eq!(plain(&again, Scope::System, "SYS"), b"system-secret");
    assert_eq!(again.list(ALICE), v.list(ALICE));
    let m = again.meta(ALICE, "AAA").unwrap();
    assert_eq!((m.version, m.value_len, m.scope), (1, 7, ALICE));
    assert!(m.created > 0 && m.updated >= m.created);

    let mode = fs::metadata(vault_file(dir.path())).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    // The file holds no plaintext.
    let bytes = fs::read(vault_file(dir.path())).unwrap();
    assert!(!bytes.windows(13).any(|w| w == b"system-secret"));
}

#[test]
fn header_is_readable_without_the_key() {
    let dir = state();
    let kdf = KdfParams::generate_fast().unwrap();
    let mut v = Vault::init(dir.path(), &kek(3), "passphrase", Some(kdf.clone())).unwrap();
    put(&mut v, ALICE, "X", "y");
    let h = Vault::read_header(dir.path()).unwrap();
    assert_eq!(h.provider_kind, "passphrase");
    assert_eq!(h.kdf, Some(kdf));
    assert_eq!(h.vault_id, v.vault_id());
    assert_eq!(h.records, 1);
    assert_eq!(h.format_version, format::FORMAT_VERSION);
}

#[test]
fn init_refuses_an_existing_vault() {
    let dir = state();
    let v = populated(dir.path());
    let before = fs::read(vault_file(dir.path())).unwrap();
    let e = Vault::init(dir.path(), &kek(2), "file", None).unwrap_err();
    assert!(matches!(e, StoreError::Exists { .. }), "{e}");
    assert_eq!(fs::read(vault_file(dir.path())).unwrap(), before);
    drop(v);
}

#[test]
fn wrong_key_is_reported_as_such() {
    let dir = state();
    populated(dir.path());
    let e = Vault::open(dir.path(), &kek(2)).unwrap_err();
    assert!(matches!(e, StoreError::WrongKey), "{e}");
}

#[test]
fn swapped_ciphertexts_are_tampered_and_others_still_decrypt() {
    let dir = state();
    populated(dir.path());
    let path = vault_file(dir.path());
    let mut file = format::read_file(&path).unwrap();
    let ia = file
        .records
        .iter()
        .position(|r| r.scope == ALICE && r.name == "AAA")
        .unwrap();
    let ib = file
        .records
        .iter()
        .position(|r| r.scope == ALICE && r.name == "BBB")
        .unwrap();
    let a = file.records[ia].sealed.clone();
    file.records[ia].sealed = file.records[ib].sealed.clone();
    file.records[ib].sealed = a;
    format::write_file(&path, &file).unwrap();

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
fn relabelled_records_do_not_decrypt() {
    let dir = state();
    populated(dir.path());
    let path = vault_file(dir.path());
    let original = format::read_file(&path).unwrap();

    let edits: [fn(&mut format::StoredRecord); 4] = [
        |r| r.scope = Scope::User(4242),
        |r| r.scope = Scope::System,
        |r| r.name = "ZZZ".into(),
        |r| r.version += 1,
    ];
    for edit in edits {
        let mut file = original.clone();
        let r = file
            .records
            .iter_mut()
            .find(|r| r.scope == ALICE && r.name == "CCC")
            .unwrap();
        edit(r);
        let (scope, name) = (r.scope, r.name.clone());
        format::write_file(&path, &file).unwrap();
        let v = Vault::open(dir.path(), &kek(1)).unwrap();
        assert!(matches!(
            v.decrypt(scope, &name),
            Err(StoreError::Tampered { .. })
        ));
    }

    // A record copied into another vault does not decrypt there either.
    let other = state();
    let mut w = Vault::init(other.path(), &kek(1), "file", None).unwrap();
    put(&mut w, ALICE, "CCC", "other-vault");
    let mut file = format::read_file(&vault_file(other.path())).unwrap();
    let theirs = original
        .records
        .iter()
        .find(|r| r.scope == ALICE && r.name == "CCC")
        .unwrap();
    file.records[0].sealed = theirs.sealed.clone();
    file.records[0].value_len = theirs.value_len;
    format::write_file(&vault_file(other.path()), &file).unwrap();
    let w = Vault::open(other.path(), &kek(1)).unwrap();
    assert!(matches!(
        w.decrypt(ALICE, "CCC"),
        Err(StoreError::Tampered { .. })
    ));
}

#[test]
fn put_modes_and_metadata() {
    let dir = state();
    let mut v = Vault::init(dir.path(), &kek(1), "file", None).unwrap();
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
    assert_eq!(put(&mut v, BOB, "TOK", "bob"), 1);
    assert_eq!(plain(&v, ALICE, "TOK"), b"four");
}

#[test]
fn values_and_names_are_checked() {
    let dir = state();
    let mut v = Vault::init(dir.path(), &kek(1), "file", None).unwrap();
    let up = |v: &mut Vault, name: &str, value: Vec<u8>| {
        v.put(
            ALICE,
            name,
            &SecretValue::new(value),
            MetaUpdate::default(),
            PutMode::Upsert,
        )
    };
    assert!(matches!(
        up(&mut v, "E", vec![]),
        Err(StoreError::EmptyValue)
    ));
    assert!(matches!(
        up(&mut v, "BIG", vec![b'x'; MAX_VALUE_LEN + 1]),
        Err(StoreError::ValueTooLarge { .. })
    ));
    up(&mut v, "MAX", vec![b'x'; MAX_VALUE_LEN]).unwrap();
    assert_eq!(v.decrypt(ALICE, "MAX").unwrap().len(), MAX_VALUE_LEN);
    assert!(matches!(
        up(&mut v, "1bad", b"x".to_vec()),
        Err(StoreError::InvalidName(_))
    ));
    assert!(matches!(
        up(&mut v, "../x", b"x".to_vec()),
        Err(StoreError::InvalidName(_))
    ));
    up(&mut v, "bin", vec![0, 255, 10, 0]).unwrap();
    assert_eq!(plain(&v, ALICE, "bin"), [0, 255, 10, 0]);
    assert_eq!(v.count(), (2, 0));
}

#[test]
fn remove_and_not_found() {
    let dir = state();
    let mut v = populated(dir.path());
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
    let again = Vault::open(dir.path(), &kek(1)).unwrap();
    assert!(again.meta(ALICE, "BBB").is_none());
    assert_eq!(plain(&again, ALICE, "CCC"), b"value-c");
    assert_eq!(again.count(), (3, 1));
}

#[test]
fn put_many_is_all_or_nothing() {
    let dir = state();
    let mut v = populated(dir.path());
    let before = fs::read(vault_file(dir.path())).unwrap();
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
    assert_eq!(fs::read(vault_file(dir.path())).unwrap(), before);

    let good = vec![
        ("NEW1".to_string(), val("n1")),
        ("AAA".to_string(), val("replaced")),
    ];
    assert_eq!(v.put_many(ALICE, good).unwrap(), 2);
    assert_eq!(v.put_many(ALICE, Vec::new()).unwrap(), 0);
    let again = Vault::open(dir.path(), &kek(1)).unwrap();
    assert_eq!(plain(&again, ALICE, "NEW1"), b"n1");
    assert_eq!(plain(&again, ALICE, "AAA"), b"replaced");
    assert_eq!(again.meta(ALICE, "AAA").unwrap().version, 2);
}

#[test]
fn failed_write_leaves_state_unchanged() {
    let dir = state();
    let sd = dir.path().join("state");
    fs::create_dir(&sd).unwrap();
    let mut v = populated(&sd);
    let list_before = v.list(ALICE);
    fs::remove_dir_all(&sd).unwrap();

    let e = v
        .put(
            ALICE,
            "AAA",
            &val("lost"),
            MetaUpdate::default(),
            PutMode::Upsert,
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::Write(_)), "{e}");
    assert!(matches!(
        v.put(
            ALICE,
            "NEW",
            &val("x"),
            MetaUpdate::default(),
            PutMode::Create
        ),
        Err(StoreError::Write(_))
    ));
    assert!(matches!(v.remove(ALICE, "BBB"), Err(StoreError::Write(_))));
    assert!(matches!(
        v.put_many(ALICE, vec![("M".into(), val("m"))]),
        Err(StoreError::Write(_))
    ));
    let generation = v.dek_generation();
    assert!(matches!(v.rotate_dek(), Err(StoreError::Write(_))));
    assert!(matches!(
        v.rekey(&kek(9), "file", None),
        Err(StoreError::Write(_))
    ));

    assert_eq!(v.list(ALICE), list_before);
    assert_eq!(v.dek_generation(), generation);
    assert_eq!(plain(&v, ALICE, "AAA"), b"value-a");
    assert_eq!(plain(&v, ALICE, "BBB"), b"value-b");
    assert!(v.meta(ALICE, "NEW").is_none());

    // Once the directory is back, the next write holds exactly the old state
    // plus the new change, under the old key.
    fs::create_dir(&sd).unwrap();
    put(&mut v, ALICE, "DDD", "value-d");
    let again = Vault::open(&sd, &kek(1)).unwrap();
    assert_eq!(plain(&again, ALICE, "AAA"), b"value-a");
    assert_eq!(plain(&again, ALICE, "DDD"), b"value-d");
    assert!(again.meta(ALICE, "NEW").is_none() && again.meta(ALICE, "M").is_none());
}

#[test]
fn rotate_dek_keeps_every_value() {
    let dir = state();
    let mut v = populated(dir.path());
    let old_file = format::read_file(&vault_file(dir.path())).unwrap();
    v.rotate_dek().unwrap();
    v.rotate_dek().unwrap();
    assert_eq!(v.dek_generation(), old_file.dek_generation + 2);
    assert_eq!(plain(&v, ALICE, "AAA"), b"value-a");
    let again = Vault::open(dir.path(), &kek(1)).unwrap();
    assert_eq!(plain(&again, ALICE, "BBB"), b"value-b");
    assert_eq!(plain(&again, Scope::System, "SYS"), b"system-secret");
    assert_eq!(again.list(ALICE), v.list(ALICE));
    let new_file = format::read_file(&vault_file(dir.path())).unwrap();
    for (a, b) in old_file.records.iter().zip(&new_file.records) {
        assert_ne!(a.sealed, b.sealed);
    }
    // Re-planting an old-generation ciphertext fails.
    let mut file = new_file;
    file.records[0].sealed = old_file.records[0].sealed.clone();
    format::write_file(&vault_file(dir.path()), &file).unwrap();
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
    populated(dir.path());
    let path = vault_file(dir.path());
    let mut file = format::read_file(&path).unwrap();
    let i = file.records.iter().position(|r| r.name == "SYS").unwrap();
    file.records[i].sealed.ciphertext[0] ^= 0x80;
    format::write_file(&path, &file).unwrap();
    let before = fs::read(&path).unwrap();

    let mut v = Vault::open(dir.path(), &kek(1)).unwrap();
    let e = v.rotate_dek().unwrap_err();
    assert!(matches!(&e, StoreError::Tampered { scope: Scope::System, name } if name == "SYS"));
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(plain(&v, ALICE, "AAA"), b"value-a");
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
    let last = Vault::open(dir.path(), &new).unwrap();
    assert_eq!(plain(&last, Scope::System, "SYS"), b"system-secret");
    // And back to a key file.
    again.rekey(&kek(7), "file", None).unwrap();
    let back = Vault::open(dir.path(), &kek(7)).unwrap();
    assert_eq!(plain(&back, ALICE, "CCC"), b"value-c");
    assert_eq!(Vault::read_header(dir.path()).unwrap().kdf, None);
}

#[test]
fn hostile_files_give_clean_errors() {
    let dir = state();
    populated(dir.path());
    let path = vault_file(dir.path());
    let good = fs::read(&path).unwrap();

    // Every truncation fails cleanly (decode never panics).
    for len in 0..good.len() {
        let e = format::decode(&good[..len]).unwrap_err();
        assert!(
            matches!(e, StoreError::NotAVault | StoreError::Corrupt(_)),
            "len {len}: {e}"
        );
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        format::decode(&trailing),
        Err(StoreError::Corrupt(_))
    ));

    let mut other_magic = good.clone();
    other_magic[0] = b'X';
    assert!(matches!(
        format::decode(&other_magic),
        Err(StoreError::NotAVault)
    ));
    let mut v2 = good.clone();
    v2[9] = 2;
    assert!(matches!(
        format::decode(&v2),
        Err(StoreError::UnsupportedVersion(2))
    ));

    // Header followed by huge length prefixes: no panic, no giant allocation.
    let mut huge = format::MAGIC.to_vec();
    huge.extend_from_slice(&format::FORMAT_VERSION.to_be_bytes());
    huge.extend_from_slice(&[0u8; 16]);
    huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(matches!(format::decode(&huge), Err(StoreError::Corrupt(_))));

    // Pseudo-random garbage after a valid header, and every single-byte flip.
    let mut x: u32 = 0x1234_5678;
    for round in 0..200 {
        let mut bytes = huge[..10].to_vec();
        for _ in 0..(round * 7) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            bytes.push(x as u8);
        }
        let _ = format::decode(&bytes);
    }
    for i in 10..good.len() {
        let mut flipped = good.clone();
        flipped[i] ^= 0x5a;
        if let Ok(file) = format::decode(&flipped) {
            fs::write(&path, format::encode(&file).unwrap()).unwrap();
            if let Ok(v) = Vault::open(dir.path(), &kek(1)) {
                for s in [ALICE, BOB, Scope::System] {
                    for m in v.list(s) {
                        let _ = v.decrypt(s, &m.name);
                    }
                }
            }
        }
    }

    fs::write(&path, &good[..good.len() / 2]).unwrap();
    assert!(matches!(
        Vault::open(dir.path(), &kek(1)),
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        Vault::read_header(dir.path()),
        Err(StoreError::Corrupt(_))
    ));
    fs::write(&path, b"garbage").unwrap();
    assert!(matches!(
        Vault::open(dir.path(), &kek(1)),
        Err(StoreError::NotAVault)
    ));
    fs::remove_file(&path).unwrap();
    assert!(matches!(
        Vault::open(dir.path(), &kek(1)),
        Err(StoreError::Read { .. })
    ));
}

#[test]
fn duplicate_records_are_refused() {
    let dir = state();
    populated(dir.path());
    let path = vault_file(dir.path());
    let mut file: VaultFile = format::read_file(&path).unwrap();
    let dup = file.records[0].clone();
    file.records.push(dup);
    format::write_file(&path, &file).unwrap();
    assert!(matches!(
        Vault::open(dir.path(), &kek(1)),
        Err(StoreError::Corrupt(_))
    ));
}

#[test]
fn unsorted_files_still_open() {
    let dir = state();
    populated(dir.path());
    let path = vault_file(dir.path());
    let mut file = format::read_file(&path).unwrap();
    file.records.reverse();
    format::write_file(&path, &file).unwrap();
    let v = Vault::open(dir.path(), &kek(1)).unwrap();
    let names: Vec<_> = v.list(ALICE).into_iter().map(|m| m.name).collect();
    assert_eq!(names, ["AAA", "BBB", "CCC"]);
    assert_eq!(plain(&v, ALICE, "CCC"), b"value-c");
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
