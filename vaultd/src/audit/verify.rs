//! Reading the log back: [`read`] for listings, [`verify`] for the chain.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::anchor::{read_anchor, AnchorProblem};
use super::format::{check_line, LineError, RecordMac, ZERO};
use super::rotate::{first_record, rotated_from, RotatedFrom};
use super::{AuditError, AuditKey, MAX_RECORD};

/// Problems listed in a report before the rest are only counted.
const MAX_PROBLEMS: usize = 100;

/// What [`verify`](super::AuditLog::verify) found. `ok` is true only when
/// `problems` is empty; `notes` describe accepted but weaker evidence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Lines that are well-formed records.
    pub records: u64,
    /// Sequence number of the last well-formed record (0 if none).
    pub last_seq: u64,
    pub ok: bool,
    /// E.g. `line 7: mac mismatch (record edited)`.
    pub problems: Vec<String>,
    /// Records written while sealed (plain SHA-256 instead of a MAC).
    pub unkeyed: u64,
    /// E.g. which unkeyed records nothing authenticates yet.
    pub notes: Vec<String>,
}

/// A report being built: problems past [`MAX_PROBLEMS`] are only counted.
#[derive(Default)]
struct Findings {
    rep: VerifyReport,
    omitted: u64,
}

impl Findings {
    fn problem(&mut self, msg: impl Into<String>) {
        if self.rep.problems.len() < MAX_PROBLEMS {
            self.rep.problems.push(msg.into());
        } else {
            self.omitted += 1;
        }
    }

    fn note(&mut self, msg: String) {
        self.rep.notes.push(msg);
    }

    fn finish(mut self) -> VerifyReport {
        if self.omitted > 0 {
            let n = self.omitted;
            self.rep.problems.push(format!("… and {n} more problem(s)"));
        }
        self.rep.ok = self.rep.problems.is_empty();
        self.rep
    }
}

/// One line of the log.
enum Line<'a> {
    /// Ended by a newline (which is not included).
    Full(&'a [u8]),
    /// The end of the file, without a newline.
    Torn,
    /// Longer than any record could be; skipped.
    Oversized,
}

/// Splits the log into lines without ever holding more than one record's worth.
struct Lines<R> {
    r: BufReader<R>,
    buf: Vec<u8>,
    no: u64,
}

impl<R: Read> Lines<R> {
    fn new(r: R) -> Self {
        Self {
            r: BufReader::new(r),
            buf: Vec::new(),
            no: 0,
        }
    }

    fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        self.buf.clear();
        let cap = (MAX_RECORD as u64) * 2;
        let n = (&mut self.r).take(cap).read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        self.no += 1;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            return Ok(Some((self.no, Line::Full(&self.buf))));
        }
        if (self.buf.len() as u64) < cap {
            return Ok(Some((self.no, Line::Torn)));
        }
        // Discard the rest of the over-long line.
        loop {
            let avail = self.r.fill_buf()?;
            if avail.is_empty() {
                break;
            }
            if let Some(i) = avail.iter().position(|&b| b == b'\n') {
                self.r.consume(i + 1);
                break;
            }
            let len = avail.len();
            self.r.consume(len);
        }
        Ok(Some((self.no, Line::Oversized)))
    }
}

fn open_read(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

pub(super) fn read(
    log_path: &Path,
    filter_uid: Option<u32>,
    limit: usize,
    before: Option<u64>,
) -> Result<Vec<serde_json::Value>, AuditError> {
    let file = match open_read(log_path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(AuditError::ReadLog(e)),
    };
    let mut out = VecDeque::new();
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut lines = Lines::new(file);
    while let Some((_, line)) = lines.next_line().map_err(AuditError::ReadLog)? {
        let Line::Full(bytes) = line else { continue };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
            continue;
        };
        if let Some(uid) = filter_uid {
            if v.get("uid").and_then(serde_json::Value::as_u64) != Some(u64::from(uid)) {
                continue;
            }
        }
        if let Some(before) = before {
            if v.get("seq")
                .and_then(serde_json::Value::as_u64)
                .is_none_or(|s| s >= before)
            {
                continue;
            }
        }
        if out.len() == limit {
            out.pop_front();
        }
        out.push_back(v);
    }
    Ok(out.into())
}

/// Without the key: does the log still hold the record the anchor names,
/// as its last or before it? (Catches a log cut behind the anchor's back;
/// an edited record needs the key to be found.)
pub(super) fn check_unkeyed(log_path: &Path, anchor_path: &Path) -> VerifyReport {
    let mut f = Findings::default();
    let anchor = match read_anchor(anchor_path, None) {
        Ok(a) => a,
        Err(AnchorProblem::Malformed) => {
            f.problem("anchor file is malformed");
            None
        }
        Err(AnchorProblem::Io(e)) => {
            f.problem(format!("cannot read the anchor file: {e}"));
            None
        }
    };
    let last = match open_read(log_path) {
        Ok(file) => match super::logfile::last_record(&file) {
            Ok(last) => last,
            Err(e) => {
                f.problem(format!("cannot read the audit log: {e}"));
                None
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            f.problem("audit log is missing");
            None
        }
        Err(e) => {
            f.problem(format!("cannot read the audit log: {e}"));
            None
        }
    };
    let last_seq = last.as_ref().map_or(0, |l| l.rec.seq);
    f.rep.last_seq = last_seq;
    match (&anchor, &last) {
        (Some(a), _) if a.seq > last_seq => f.problem(format!(
            "log ends at seq {last_seq} but anchor says {} (newest records deleted)",
            a.seq
        )),
        (Some(a), Some(l)) if a.seq == last_seq && l.mac.value() != &a.mac => f.problem(format!(
            "anchor names seq {} with a different mac (log or anchor replaced)",
            a.seq
        )),
        (None, Some(_)) => {
            f.problem("anchor file missing (deletion of the newest records cannot be ruled out)")
        }
        _ => {}
    }
    f.note("the records' MACs are not checked without the key".to_string());
    f.finish()
}

/// A run of consecutive unkeyed records not yet followed by a keyed one.
struct UnkeyedRun {
    first: u64,
    last: u64,
    count: u64,
}

pub(super) fn verify(
    log_path: &Path,
    anchor_path: &Path,
    key: &AuditKey,
    unkeyed_ops: &[&str],
) -> VerifyReport {
    let mut f = Findings::default();
    let anchor = match read_anchor(anchor_path, Some(key)) {
        Ok(a) => a,
        Err(AnchorProblem::Malformed) => {
            f.problem("anchor file is malformed");
            None
        }
        Err(AnchorProblem::Io(e)) => {
            f.problem(format!("cannot read the anchor file: {e}"));
            None
        }
    };
    if let Some(a) = &anchor {
        if !a.check(key) {
            f.problem("anchor mac mismatch (anchor forged or edited)");
        }
    }
    let anchored = match open_read(log_path) {
        Ok(file) => scan(
            &mut f,
            Lines::new(file),
            key,
            unkeyed_ops,
            anchor.as_ref().map(|a| a.seq),
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            f.problem("audit log is missing");
            None
        }
        Err(e) => {
            f.problem(format!("cannot read the audit log: {e}"));
            None
        }
    };
    let last_seq = f.rep.last_seq;
    match &anchor {
        None if f.rep.records > 0 => {
            f.problem("anchor file missing (deletion of the newest records cannot be ruled out)")
        }
        None => {}
        Some(a) if a.seq > last_seq => f.problem(format!(
            "log ends at seq {last_seq} but anchor says {} (newest records deleted)",
            a.seq
        )),
        Some(a) => {
            match anchored {
                None if a.seq > 0 => f.problem(format!(
                    "anchor names seq {}, which is not in the log",
                    a.seq
                )),
                None => {}
                Some(m) if m.value() != &a.mac => f.problem(format!(
                    "anchor names seq {} with a different mac (log or anchor replaced)",
                    a.seq
                )),
                Some(m) if m.is_keyed() && !a.anchor_mac.is_keyed() => f.problem(format!(
                    "anchor for keyed seq {} has no keyed mac (anchor forged)",
                    a.seq
                )),
                Some(_) => {}
            }
            if a.seq < last_seq {
                f.note(format!(
                    "the log extends {} record(s) past the anchor at seq {} (the daemon stopped before updating it)",
                    last_seq - a.seq,
                    a.seq
                ));
            }
        }
    }
    f.finish()
}

/// Walks every line, checking form, sequence, chain and MAC. Returns the MAC
/// of the record numbered `anchored_seq`, if one was seen.
fn scan<R: Read>(
    f: &mut Findings,
    mut lines: Lines<R>,
    key: &AuditKey,
    unkeyed_ops: &[&str],
    anchored_seq: Option<u64>,
) -> Option<RecordMac> {
    // The record the next line must follow; `None` after a line that could
    // not be read, until the chain picks up again.
    let mut expect: Option<(u64, [u8; 32])> = Some((0, ZERO));
    let mut run: Option<UnkeyedRun> = None;
    let mut anchored = None;
    let mut first = true;
    loop {
        let (no, line) = match lines.next_line() {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                f.problem(format!("cannot read the audit log: {e}"));
                break;
            }
        };
        let bytes = match line {
            Line::Full([]) => {
                f.problem(format!("line {no}: empty line"));
                continue;
            }
            Line::Full(b) => b,
            Line::Torn => {
                f.problem(format!("line {no}: torn write (no newline at the end)"));
                expect = None;
                continue;
            }
            Line::Oversized => {
                f.problem(format!("line {no}: too long to be a record"));
                expect = None;
                continue;
            }
        };
        let c = match check_line(bytes) {
            Ok(c) => c,
            Err(e) => {
                let what = match e {
                    LineError::Json => "truncated or not json",
                    LineError::Shape => "not an audit record",
                    LineError::Canonical => "not in canonical form (record edited)",
                };
                f.problem(format!("line {no}: {what}"));
                expect = None;
                continue;
            }
        };
        let seq = c.rec.seq;
        f.rep.records += 1;
        if first {
            first = false;
            // A file started by a rotation continues the chain of its
            // archive: the rotate record's own MAC, checked below, proves
            // where it stands.
            if let Some(r) = rotated_from(&c) {
                f.note(format!(
                    "the log starts at seq {seq}, after the archive {} (ending at seq {}), which this check does not read",
                    r.archive, r.last_seq
                ));
                expect = Some((r.last_seq, r.last_mac));
            }
        }
        if let Some((pseq, pmac)) = expect {
            if seq <= pseq {
                f.problem(format!(
                    "line {no}: seq {seq} after seq {pseq} (records reordered or duplicated)"
                ));
            } else if seq != pseq + 1 {
                f.problem(format!(
                    "line {no}: seq {seq} follows {pseq} (records deleted)"
                ));
            } else if c.prev != pmac {
                f.problem(format!(
                    "line {no}: prev does not match the mac of seq {pseq} (chain broken)"
                ));
            }
        }
        if !c.mac.check(Some(key), c.body.as_bytes()) {
            f.problem(format!("line {no}: mac mismatch (record edited)"));
        } else if c.mac.is_keyed() {
            if let Some(r) = run.take() {
                f.note(format!(
                    "seq {}..={}: {} record(s) written while sealed, authenticated by the keyed record at seq {seq}",
                    r.first, r.last, r.count
                ));
            }
        }
        if !c.mac.is_keyed() {
            f.rep.unkeyed += 1;
            if !unkeyed_ops.contains(&c.rec.op.as_str()) {
                f.problem(format!(
                    "line {no}: op {:?} has no keyed mac, which only {unkeyed_ops:?} may lack",
                    c.rec.op
                ));
            }
            match run.as_mut() {
                Some(r) => {
                    r.last = seq;
                    r.count += 1;
                }
                None => {
                    run = Some(UnkeyedRun {
                        first: seq,
                        last: seq,
                        count: 1,
                    })
                }
            }
        }
        if Some(seq) == anchored_seq {
            anchored = Some(c.mac);
        }
        f.rep.last_seq = seq;
        expect = Some((seq, *c.mac.value()));
    }
    if let Some(r) = run {
        f.note(format!(
            "seq {}..={}: {} record(s) written while sealed and not followed by a keyed record; nothing authenticates them",
            r.first, r.last, r.count
        ));
    }
    anchored
}

/// Most archives [`verify_archives`] follows back.
const MAX_ARCHIVES: usize = 100_000;

/// [`verify`], then every archive back to the first record: each rotate
/// record must name an archive that is there, verifies on its own, and ends
/// in the record the rotate record names.
pub(super) fn verify_archives(
    log_path: &Path,
    anchor_path: &Path,
    key: &AuditKey,
    unkeyed_ops: &[&str],
) -> VerifyReport {
    let current = verify(log_path, anchor_path, key, unkeyed_ops);
    let mut f = Findings {
        rep: VerifyReport {
            problems: Vec::new(),
            notes: Vec::new(),
            ..current.clone()
        },
        omitted: 0,
    };
    // Newest first: (the archive, what the record after it says of it, that record's seq).
    let mut chain: Vec<(PathBuf, RotatedFrom, u64)> = Vec::new();
    let mut file = log_path.to_path_buf();
    loop {
        let first = match first_record(&file) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => {
                f.problem(format!("cannot read {}: {e}", shown(&file)));
                break;
            }
        };
        let Some(c) = first else { break };
        let Some(r) = rotated_from(&c) else { break };
        if chain.len() >= MAX_ARCHIVES {
            f.problem("too many archives (or a cycle of rotate records)");
            break;
        }
        let path = file.with_file_name(&r.archive);
        if std::fs::symlink_metadata(&path).is_err() {
            f.problem(format!(
                "archive {} is missing (the rotate record at seq {} names it; deleted or moved)",
                r.archive, c.rec.seq
            ));
            break;
        }
        file = path.clone();
        chain.push((path, r, c.rec.seq));
    }
    let mut problems = Vec::new();
    let mut archived = 0;
    for (path, r, rotate_seq) in chain.iter().rev() {
        let mut a = Findings::default();
        let ends = match open_read(path) {
            Ok(file) => scan(&mut a, Lines::new(file), key, unkeyed_ops, Some(r.last_seq)),
            Err(e) => {
                a.problem(format!("cannot read it: {e}"));
                None
            }
        };
        match ends {
            None => a.problem(format!(
                "does not hold seq {}, which the rotate record at seq {rotate_seq} says it ends with (archive truncated or replaced)",
                r.last_seq
            )),
            Some(m) if m.value() != &r.last_mac => a.problem(format!(
                "seq {} is not the record the rotate record at seq {rotate_seq} chains to (archive replaced)",
                r.last_seq
            )),
            Some(_) if a.rep.last_seq != r.last_seq => a.problem(format!(
                "goes on past seq {} to seq {} (records added after the rotation)",
                r.last_seq, a.rep.last_seq
            )),
            Some(_) => {}
        }
        archived += a.rep.records;
        f.rep.unkeyed += a.rep.unkeyed;
        let a = a.finish();
        problems.extend(
            a.problems
                .into_iter()
                .map(|p| format!("archive {}: {p}", r.archive)),
        );
    }
    f.rep.records += archived;
    for p in problems.into_iter().chain(current.problems) {
        f.problem(p);
    }
    f.rep.notes = current
        .notes
        .into_iter()
        .filter(|n| !n.starts_with("the log starts at seq"))
        .collect();
    f.note(format!(
        "{} archive(s) verified, {archived} record(s) in them",
        chain.len()
    ));
    f.finish()
}

fn shown(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
