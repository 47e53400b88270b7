//! The anchor file: the last record's number and MAC, kept with the vault so
//! that deleting the newest log records shows.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::format::{anchor_input, hex, unhex32, RecordMac};
use super::{logfile::sync_parent, AuditError, AuditKey};

/// Longest anchor file read.
const MAX_ANCHOR: u64 = 4096;

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

/// `Ok(None)` if there is no anchor file.
pub(super) fn read_anchor(path: &Path) -> Result<Option<Anchor>, AnchorProblem> {
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
    let f: AnchorFile = serde_json::from_slice(&text).map_err(|_| AnchorProblem::Malformed)?;
    Ok(Some(Anchor {
        seq: f.seq,
        mac: unhex32(&f.mac).ok_or(AnchorProblem::Malformed)?,
        anchor_mac: RecordMac::decode(&f.anchor_mac).ok_or(AnchorProblem::Malformed)?,
    }))
}

/// Atomically replaces the anchor: temp file, fsync, rename, fsync directory.
pub(super) fn write_anchor(
    path: &Path,
    seq: u64,
    mac: &[u8; 32],
    key: Option<&AuditKey>,
) -> Result<(), AuditError> {
    let anchor_mac = RecordMac::compute(key, &anchor_input(seq, mac));
    let mut text = serde_json::to_string(&AnchorFile {
        seq,
        mac: hex(mac),
        anchor_mac: anchor_mac.encode(),
    })?;
    text.push('\n');
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
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(AuditError::WriteAnchor)?;
    drop(f);
    fs::rename(&tmp, path).map_err(AuditError::WriteAnchor)?;
    sync_parent(path)
}
