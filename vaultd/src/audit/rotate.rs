//! Rotation: the log is archived next to itself and a new file is started
//! whose first record, of `audit.rotate`, chains to the archive's last.
//!
//! The rotate record is numbered and chained like any next record (its
//! `prev` is the archive's last MAC) and its `detail` names the archive:
//! `{"archive":"audit.jsonl.1-57","last_seq":57,"last_mac":"<64 hex>"}`.
//! An archive is named `<log file name>.<first seq>-<last seq>`.
//!
//! The switch, under the chain's lock:
//!
//! 1. the rotate record is written to `<log>.rotating` and fsynced;
//! 2. the archive name is made a second (hard) link to the log, and the
//!    directory fsynced;
//! 3. `<log>.rotating` is renamed over the log, and the directory fsynced.
//!
//! The log's name always names a complete file: the old log until step 3
//! is durable, the new one after. A crash before that leaves the old log
//! whole, possibly with a stray `.rotating` file and an archive name that
//! is only a second link to the log; [`recover`] removes both when the
//! daemon starts. Should the log be missing altogether while an archive
//! ends in the very record the anchor names (an archive renamed by hand,
//! or by another tool, with no new file yet), `recover` renames it back:
//! the state before the rotation.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde_json::json;

use super::anchor::read_anchor;
use super::format::{check_line, hex, unhex32, CheckedLine};
use super::logfile::{last_record, open_log, sync_parent};
use super::{AuditError, AuditKey, MAX_RECORD};

/// The operation of a rotate record.
pub(super) const OP: &str = "audit.rotate";

/// What a rotate record says of the archive before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RotatedFrom {
    pub archive: String,
    pub last_seq: u64,
    pub last_mac: [u8; 32],
}

/// The archive a record names, if it is a well-formed rotate record chained
/// to what it names (`last_seq` just before it, `last_mac` its `prev`).
pub(super) fn rotated_from(c: &CheckedLine) -> Option<RotatedFrom> {
    if c.rec.op != OP {
        return None;
    }
    let d = &c.rec.detail;
    let archive = d.get("archive")?.as_str()?.to_string();
    let last_seq = d.get("last_seq")?.as_u64()?;
    let last_mac = unhex32(d.get("last_mac")?.as_str()?)?;
    let plain = !archive.is_empty() && !archive.contains('/') && archive != "." && archive != "..";
    (plain && Some(last_seq) == c.rec.seq.checked_sub(1) && last_mac == c.prev).then_some(
        RotatedFrom {
            archive,
            last_seq,
            last_mac,
        },
    )
}

/// The first line of a file, if it is a well-formed record.
pub(super) fn first_record(path: &Path) -> io::Result<Option<CheckedLine>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut line = Vec::new();
    BufReader::new(file)
        .take(MAX_RECORD as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if line.pop() != Some(b'\n') {
        return Ok(None);
    }
    Ok(check_line(&line).ok())
}

fn file_name(log: &Path) -> String {
    log.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn sibling(log: &Path, name: &str) -> PathBuf {
    log.with_file_name(name)
}

fn rotating(log: &Path) -> PathBuf {
    sibling(log, &format!("{}.rotating", file_name(log)))
}

/// Checks the log can be archived as it stands (it ends with the chain's
/// last record) and names the archive; returns it and the rotate record's
/// `detail`.
pub(super) fn prepare(
    log: &Path,
    last_seq: u64,
    last_mac: &[u8; 32],
) -> Result<(PathBuf, serde_json::Value), AuditError> {
    let file = open_log(log)?;
    let last = last_record(&file).map_err(AuditError::ReadLog)?;
    drop(file);
    match &last {
        Some(l) if l.rec.seq == last_seq && l.mac.value() == last_mac => {}
        Some(_) => {
            return Err(AuditError::Rotate(
                "the log does not end with the record the daemon wrote last; run `vaultctl audit verify`"
                    .into(),
            ))
        }
        None => return Err(AuditError::Rotate("the log holds no records".into())),
    }
    let first = first_record(log)
        .map_err(AuditError::ReadLog)?
        .map_or(0, |c| c.rec.seq);
    if first == 0 || first > last_seq {
        return Err(AuditError::Rotate(
            "the log's first line is not a record; run `vaultctl audit verify`".into(),
        ));
    }
    let name = format!("{}.{first}-{last_seq}", file_name(log));
    let archive = sibling(log, &name);
    if fs::symlink_metadata(&archive).is_ok() {
        return Err(AuditError::Rotate(format!("{name} already exists")));
    }
    let detail = json!({ "archive": name, "last_seq": last_seq, "last_mac": hex(last_mac) });
    Ok((archive, detail))
}

/// Steps 1-3 of the module's switch. On an error before the rename the
/// old log stays in force (and its second name is removed again). After
/// the rename only the last directory flush can fail: the new log is then
/// in place (`Ok(Some(error))`), though a crash could still undo it.
pub(super) fn switch(
    log: &Path,
    archive: &Path,
    line: &[u8],
) -> Result<Option<AuditError>, AuditError> {
    let tmp = rotating(log);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(AuditError::WriteLog(e)),
        _ => {}
    }
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| f.write_all(line).and_then(|()| f.sync_all()));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(AuditError::WriteLog(e));
    }
    if let Err(e) = fs::hard_link(log, archive) {
        let _ = fs::remove_file(&tmp);
        return Err(AuditError::Rotate(format!(
            "cannot create the archive: {e}"
        )));
    }
    let renamed = sync_parent(log).and_then(|()| {
        fs::rename(&tmp, log)
            .map_err(|e| AuditError::Rotate(format!("cannot start the new log: {e}")))
    });
    if let Err(e) = renamed {
        // The log was not replaced: take its second name back.
        let _ = fs::remove_file(archive);
        let _ = fs::remove_file(&tmp);
        let _ = sync_parent(log);
        return Err(e);
    }
    Ok(sync_parent(log).err())
}

/// The archives next to `log` (`<name>.<first>-<last>`), with their last
/// sequence numbers.
fn archives(log: &Path) -> io::Result<Vec<(PathBuf, u64)>> {
    let prefix = format!("{}.", file_name(log));
    let dir = match log.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(range) = name.strip_prefix(&prefix) else {
            continue;
        };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
        if let (true, true, Ok(last)) = (digits(a), digits(b), b.parse::<u64>()) {
            out.push((entry.path(), last));
        }
    }
    Ok(out)
}

/// Before the log is opened: finishes or undoes a rotation a crash
/// interrupted (see the module's text).
pub(super) fn recover(
    log: &Path,
    anchor_path: &Path,
    key: Option<&AuditKey>,
) -> Result<(), AuditError> {
    let tmp = rotating(log);
    if fs::symlink_metadata(&tmp).is_ok() {
        tracing::warn!(target: "aivault::audit", "removing a rotation's new log that a crash left unfinished");
        fs::remove_file(&tmp).map_err(AuditError::WriteLog)?;
        sync_parent(log)?;
    }
    let log_meta = match fs::symlink_metadata(log) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(AuditError::OpenLog(e)),
    };
    let found = match archives(log) {
        Ok(a) => a,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(AuditError::ReadLog(e)),
    };
    match log_meta {
        Some(lm) => {
            for (path, _) in found {
                let same = fs::symlink_metadata(&path)
                    .is_ok_and(|m| m.dev() == lm.dev() && m.ino() == lm.ino());
                if same {
                    tracing::warn!(target: "aivault::audit", archive = %path.display(), "a crash interrupted a rotation; the log stays as it was");
                    fs::remove_file(&path).map_err(AuditError::WriteLog)?;
                    sync_parent(log)?;
                }
            }
        }
        None => {
            let Ok(Some(anchor)) = read_anchor(anchor_path, key) else {
                return Ok(());
            };
            for (path, last) in found {
                if last != anchor.seq {
                    continue;
                }
                let file = open_log(&path)?;
                let ends = last_record(&file)
                    .map_err(AuditError::ReadLog)?
                    .is_some_and(|l| l.rec.seq == anchor.seq && l.mac.value() == &anchor.mac);
                drop(file);
                if ends {
                    tracing::warn!(target: "aivault::audit", archive = %path.display(), "the audit log is missing but an archive ends at its anchor; renaming it back");
                    fs::rename(&path, log).map_err(AuditError::WriteLog)?;
                    sync_parent(log)?;
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}
