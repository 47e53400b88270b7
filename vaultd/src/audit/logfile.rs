//! The log file itself: opening it safely, appending one line durably, and
//! finding its last record without reading all of it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::format::{self, CheckedLine};
use super::{AuditError, MAX_RECORD};

/// Opens the log for reading and appending, refusing symlinks and non-files.
pub(super) fn open_log(path: &Path) -> Result<File, AuditError> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(AuditError::OpenLog)?;
    let meta = file.metadata().map_err(AuditError::OpenLog)?;
    if !meta.file_type().is_file() {
        return Err(AuditError::NotRegularFile);
    }
    Ok(file)
}

/// A failed [`write_line`]: why, and whether the log was put back exactly as
/// it was before the call (so no part of the line is left in it).
#[derive(Debug)]
pub(super) struct WriteFailed {
    pub error: AuditError,
    pub restored: bool,
}

impl WriteFailed {
    /// Failed before anything was written.
    fn untouched(error: AuditError) -> WriteFailed {
        WriteFailed {
            error,
            restored: true,
        }
    }
}

/// Opens, writes `line` in one `write`, fsyncs, closes. If the write is short
/// or fails, or the fsync fails, the file is cut back to its previous length
/// (and that made durable) before the error is returned, so a full file
/// system leaves no partial record behind.
pub(super) fn write_line(path: &Path, line: &[u8], last_seq: u64) -> Result<(), WriteFailed> {
    let file = open_log(path).map_err(WriteFailed::untouched)?;
    let len = file
        .metadata()
        .map_err(|e| WriteFailed::untouched(AuditError::ReadLog(e)))?
        .len();
    let mut buf = Vec::with_capacity(line.len() + 1);
    if len > 0 {
        let mut last = [0u8; 1];
        file.read_exact_at(&mut last, len - 1)
            .map_err(|e| WriteFailed::untouched(AuditError::ReadLog(e)))?;
        if last[0] != b'\n' {
            tracing::warn!(target: "aivault::audit", "audit log ends in a torn line; starting a new one");
            buf.push(b'\n');
        }
    } else if last_seq > 0 {
        tracing::error!(target: "aivault::audit", last_seq, "audit log is empty or was replaced; earlier records are gone from it");
    }
    buf.extend_from_slice(line);
    if let Err(error) = append_durably(&file, &buf) {
        let restored = match restore_length(&file, len) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(target: "aivault::audit", error = %e, "cannot cut a failed append back out of the audit log");
                false
            }
        };
        return Err(WriteFailed { error, restored });
    }
    if len == 0 {
        // The file may have just been created: make its directory entry durable.
        sync_parent(path).map_err(|error| WriteFailed {
            error,
            restored: false,
        })?;
    }
    Ok(())
}

/// One `write` of all of `buf` at the end of the file, then `fsync`.
fn append_durably(file: &File, buf: &[u8]) -> Result<(), AuditError> {
    let written = loop {
        match (&*file).write(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => break r.map_err(AuditError::WriteLog)?,
        }
    };
    if written != buf.len() {
        return Err(AuditError::ShortWrite {
            written,
            len: buf.len(),
        });
    }
    file.sync_all().map_err(AuditError::SyncLog)
}

/// Cuts the file back to `len` bytes and makes that durable.
fn restore_length(file: &File, len: u64) -> io::Result<()> {
    file.set_len(len)?;
    file.sync_all()
}

pub(super) fn sync_parent(path: &Path) -> Result<(), AuditError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(AuditError::SyncDir)
}

/// The last complete line of the log that is a well-formed record, reading
/// backwards so a long log costs no more than its tail.
pub(super) fn last_record(file: &File) -> io::Result<Option<CheckedLine>> {
    const BLOCK: u64 = 16 * 1024;
    let mut pos = file.metadata()?.len();
    // `buf` holds the file's bytes from `pos` up to the end of the lines not yet examined.
    let mut buf: Vec<u8> = Vec::new();
    // The bytes after the file's last newline are empty or a torn write: never a record.
    let mut first = true;
    // Skipping an over-long line until its start is found.
    let mut skipping = false;
    loop {
        let (segment_start, at_file_start) = match buf.iter().rposition(|&b| b == b'\n') {
            Some(i) => (i + 1, false),
            None if pos == 0 => (0, true),
            None => {
                if buf.len() > MAX_RECORD {
                    buf.clear();
                    skipping = true;
                }
                let n = BLOCK.min(pos);
                pos -= n;
                let mut block = vec![0u8; usize::try_from(n).unwrap_or(0)];
                file.read_exact_at(&mut block, pos)?;
                block.extend_from_slice(&buf);
                buf = block;
                continue;
            }
        };
        let candidate = !first && !skipping;
        if candidate {
            if let Ok(c) = format::check_line(&buf[segment_start..]) {
                return Ok(Some(c));
            }
        }
        if at_file_start {
            return Ok(None);
        }
        first = false;
        skipping = false;
        buf.truncate(segment_start - 1);
    }
}
