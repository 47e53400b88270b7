//! The anchor file: the last record's number and MAC, kept with the vault so
//! that deleting the newest log records shows.
//!
//! The file holds two slots of [`SLOT`] bytes, each one JSON object padded
//! with spaces and ending in a newline. A record is anchored by overwriting
//! the slot not written last, in place, and `fdatasync`: one flush per
//! record instead of a temporary file, its fsync, a rename and a directory
//! fsync. (Slots alternate by write, not by sequence number: an update for
//! an older record than the one anchored is skipped, and alternating by
//! parity could then overwrite the newest anchor.) A write torn by a crash
//! can only damage the slot being written; the other still anchors the
//! record anchored before, exactly as if the crash had come just before the
//! update (the log is then ahead of the anchor, which `open` accepts and
//! `verify` notes). Readers take the valid slot with the highest
//! sequence number. The first update after the daemon starts writes a fresh
//! file atomically (temporary file and rename), which also converts the
//! single-object anchor of earlier versions, still readable here.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::format::{anchor_input, hex, unhex32, RecordMac};
use super::{logfile::sync_parent, AuditError, AuditKey};

/// Longest anchor file read.
const MAX_ANCHOR: u64 = 4096;
/// Bytes per slot, newline included.
pub(super) const SLOT: usize = 256;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnchorFile {
    seq: u64,
    mac: String,
    anchor_mac: String,
}

/// The anchor: the last record's number and MAC value, itself MACed.
#[derive(Debug)]
pub(super) struct Anchor {
    pub seq: u64,
    pub mac: [u8; 32],
    pub anchor_mac: RecordMac,
}

impl Anchor {
    pub fn check(&self, key: &AuditKey) -> bool {
        self.anchor_mac
            .check(Some(key), &anchor_input(self.seq, &self.mac))
    }
}

#[derive(Debug)]
pub(super) enum AnchorProblem {
    Io(io::Error),
    Malformed,
}

/// `Ok(None)` if there is no anchor file. Of several slots, the
/// well-formed one with the highest sequence number whose MAC verifies under
/// `key` — a slot torn by a crash falls back to the other — else (none
/// verifies, or no key) the highest; `Malformed` if none is well-formed.
pub(super) fn read_anchor(
    path: &Path,
    key: Option<&AuditKey>,
) -> Result<Option<Anchor>, AnchorProblem> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AnchorProblem::Io(e)),
    };
    let mut text = Vec::new();
    file.take(MAX_ANCHOR + 1)
        .read_to_end(&mut text)
        .map_err(AnchorProblem::Io)?;
    if text.len() as u64 > MAX_ANCHOR {
        return Err(AnchorProblem::Malformed);
    }
    let mut slots: Vec<Anchor> = text
        .split(|b| *b == b'\n')
        .filter(|line| line.iter().any(|b| !b.is_ascii_whitespace()))
        .filter_map(parse_slot)
        .collect();
    slots.sort_by_key(|a| std::cmp::Reverse(a.seq));
    let verified = key.and_then(|k| slots.iter().position(|a| a.check(k)));
    match verified {
        Some(i) => Ok(Some(slots.swap_remove(i))),
        None => slots
            .into_iter()
            .next()
            .map(Some)
            .ok_or(AnchorProblem::Malformed),
    }
}

fn parse_slot(line: &[u8]) -> Option<Anchor> {
    let f: AnchorFile = serde_json::from_slice(line).ok()?;
    Some(Anchor {
        seq: f.seq,
        mac: unhex32(&f.mac)?,
        anchor_mac: RecordMac::decode(&f.anchor_mac)?,
    })
}

/// One slot's bytes: the JSON object, spaces, a newline.
fn slot(seq: u64, mac: &[u8; 32], key: Option<&AuditKey>) -> Result<Vec<u8>, AuditError> {
    let anchor_mac = RecordMac::compute(key, &anchor_input(seq, mac));
    let mut text = serde_json::to_vec(&AnchorFile {
        seq,
        mac: hex(mac),
        anchor_mac: anchor_mac.encode(),
    })?;
    if text.len() >= SLOT {
        return Err(AuditError::WriteAnchor(io::Error::other(
            "anchor larger than its slot",
        )));
    }
    text.resize(SLOT - 1, b' ');
    text.push(b'\n');
    Ok(text)
}

/// Keeps the anchor file open between records.
#[derive(Debug, Default)]
pub(super) struct AnchorWriter {
    /// The open anchor and its (device, inode).
    file: Option<(File, (u64, u64))>,
    /// The slot written last (the next update writes the other).
    last_slot: u64,
}

fn identity(meta: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

impl AnchorWriter {
    /// Makes `seq`/`mac` the durable anchor: slot `seq % 2` overwritten in
    /// place and flushed, or on first use (or after a failure) a fresh file
    /// with both slots, replaced atomically.
    pub fn write(
        &mut self,
        path: &Path,
        seq: u64,
        mac: &[u8; 32],
        key: Option<&AuditKey>,
    ) -> Result<(), AuditError> {
        let text = slot(seq, mac, key)?;
        // The file at `path` must still be the one held open (not deleted,
        // replaced or restored behind the daemon's back).
        let current = fs::symlink_metadata(path).ok().map(|m| identity(&m));
        if self.file.as_ref().map(|(_, id)| Some(*id)) != Some(current) {
            self.file = None;
        }
        let Some((file, _)) = self.file.as_ref() else {
            let mut both = text.clone();
            both.extend_from_slice(&text);
            replace(path, &both)?;
            let file = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(AuditError::WriteAnchor)?;
            let id = identity(&file.metadata().map_err(AuditError::WriteAnchor)?);
            self.file = Some((file, id));
            // Both slots hold `seq`; sequential records then fill the slots
            // by parity, as readers of older versions expect.
            self.last_slot = seq % 2;
            return Ok(());
        };
        let slot = 1 - self.last_slot;
        let written = file
            .write_all_at(&text, slot * SLOT as u64)
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            self.file = None;
            return Err(AuditError::WriteAnchor(e));
        }
        self.last_slot = slot;
        Ok(())
    }
}

/// Atomically replaces the anchor with a fresh file anchoring `seq`.
#[cfg(test)]
pub(super) fn write_anchor(
    path: &Path,
    seq: u64,
    mac: &[u8; 32],
    key: Option<&AuditKey>,
) -> Result<(), AuditError> {
    AnchorWriter::default().write(path, seq, mac, key)
}

/// Temporary file, fsync, rename, fsync directory.
fn replace(path: &Path, text: &[u8]) -> Result<(), AuditError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(AuditError::WriteAnchor(e)),
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(AuditError::WriteAnchor)?;
    f.write_all(text)
        .and_then(|()| f.sync_all())
        .map_err(AuditError::WriteAnchor)?;
    drop(f);
    fs::rename(&tmp, path).map_err(AuditError::WriteAnchor)?;
    sync_parent(path)
}
