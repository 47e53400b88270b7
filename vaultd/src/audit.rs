//! The audit log: one JSON line per security-relevant decision, chained by
//! MACs, written and fsynced before the daemon acts ([`AuditLog::append`]).
//!
//! # Record format
//!
//! Each line is a compact JSON object with exactly these members, in this order:
//!
//! ```text
//! {"seq":N,"ts":"2026-11-22T05:10:00.123Z","uid":U,"gid":G,"pid":P,"op":"secret.set",
//!  "scope":"user"|null,"name":"GITHUB_TOKEN"|null,"outcome":"ok"|"denied"|"failed",
//!  "reason":"…"|null,"detail":{…}|null,"prev":"<64 hex>","mac":"<64 hex>"}
//! ```
//!
//! * `seq` starts at 1 and grows by one per record.
//! * `ts` is RFC 3339 UTC with milliseconds.
//! * `detail` is whatever JSON the caller passed (an object or null), written as
//!   `serde_json` writes it (object keys sorted).
//! * `prev` is the 32-byte MAC value of the previous record in lowercase hex
//!   (64 zeros for the first record).
//! * **The body** `B` is the line with its `,"mac":"…"` member removed, i.e. the
//!   compact serialization of `seq` … `prev` followed by `}`.
//!   `mac` = lowercase hex of HMAC-SHA256(audit key, B). The audit key is
//!   HKDF-SHA256(KEK, salt none, info `"aivault audit-mac v1"`) ([`AuditKey`]).
//!
//! Secret values have no place in this format: [`Event`] carries names only.
//!
//! A line verifies only if parsing it and serializing what was parsed gives
//! back the very same bytes, so edits that keep the JSON valid (whitespace,
//! escapes, key order, duplicate keys) are caught even before the MAC is checked.
//!
//! # Records written while sealed
//!
//! Before a passphrase vault is unlocked the daemon has no key, yet must still
//! record what it decides (e.g. failed unlocks). Those records carry
//! `"mac":"u:<hex SHA-256 of B>"` and the next record's `prev` is that hex value,
//! so the chain continues. **An unkeyed MAC authenticates nothing by itself**:
//! anyone who can write the log can forge one. [`AuditLog::verify`] accepts
//! unkeyed records only for the operations its caller allows, and the first
//! keyed record after them authenticates them (its MAC covers `prev`, which pins
//! every earlier record). Unkeyed records at the very end of the log are not
//! authenticated by anything, and the verify report says so in its notes.
//!
//! # Anchor
//!
//! After each record the anchor file (kept with the vault, away from the log)
//! durably records `{"seq":N,"mac":"<hex>","anchor_mac":"<hex>"}` (in one of
//! two slots overwritten in turn; see `anchor.rs`):
//! the last record's sequence number and MAC value, with
//! `anchor_mac` = HMAC-SHA256(audit key, `"anchor"` ‖ N as big-endian u64 ‖ MAC
//! value) — or `u:<hex SHA-256 of the same>` while sealed. It lets `verify`
//! notice that the newest records were deleted. It cannot notice an old anchor
//! copied back together with a truncated log: that needs an append-only copy
//! elsewhere (the journal receives every record as a structured event, see
//! [`crate::journal`]).
//!
//! # Rotation
//!
//! [`AuditLog::rotate`] archives the log next to itself
//! (`<log>.<first seq>-<last seq>`) and starts a new file whose first record,
//! of `audit.rotate`, is chained to the archive's last exactly as any next
//! record would be and names the archive, its last seq and MAC. `verify`
//! starts the current file's chain from that record; `verify_archives` also
//! follows the rotate records through every archive. The switch and what a
//! crash in it leaves are described in `rotate.rs`.
//!
//! # Failure and crash behaviour
//!
//! * `append` fails closed: any error reaching the log or the anchor is returned
//!   and the caller must refuse the operation. The in-memory chain advances
//!   once the record is durable in the log, so a retry does not fork the
//!   chain. A failed write or `fsync` (a full file system, say) is cut back
//!   out of the log (`ftruncate` to the length before it, then `fsync`)
//!   before the error is returned, so the log ends in its last complete
//!   record and verifies once there is space again. Only if that cut fails
//!   too can the failed append's bytes stay in the log: then the next append
//!   adopts the record if it is whole rather than reusing its number (such a
//!   record describes a decision that was then refused for want of an audit
//!   trail), and `verify` reports a partial one as a torn line. If only the anchor update failed,
//!   the record is in the chain and the anchor lags until the next update.
//! * The anchor is updated outside the chain's lock, under its own: the next
//!   record is written and flushed while the anchor of the previous one is
//!   (two files, two flushes in flight), and the anchor only ever moves
//!   forward — an update for a record older than the one already anchored
//!   is skipped. So the anchor never names a record the log does not hold.
//! * `append_then` is for the one decision whose latency matters, a run: it
//!   tells its caller as soon as the record is durable in the log, and the
//!   run goes ahead while the anchor is updated. If that update then fails,
//!   the record stands for a run that did happen, and the anchor lags.
//! * A crash in the middle of the single `write` can leave a last line without
//!   a newline. The next append starts a fresh line; `verify` reports the torn
//!   line (as "torn write" while it is last, as "truncated or not json" after).
//! * [`AuditLog::open`] never refuses to start because the log and the anchor
//!   disagree: it continues the chain from whichever is further along (the log
//!   may legitimately be ahead after a crash) and logs an error;
//!   `verify` reports the damage. Before that it finishes or undoes a
//!   rotation a crash interrupted (`rotate::recover`).

mod anchor;
mod format;
pub(crate) use format::rfc3339_utc;
pub mod gate;
mod logfile;
mod rotate;
mod verify;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use anchor::{read_anchor, AnchorProblem, AnchorWriter};
use format::{hex, Body, HmacSha256, RecordMac, ZERO};
use logfile::{last_record, open_log, sync_parent, write_line};
pub use verify::VerifyReport;

/// HKDF `info` for the audit MAC key; changing it changes every MAC.
const KEY_INFO: &[u8] = b"aivault audit-mac v1";
/// Longest record `append` writes; anything longer is refused.
pub const MAX_RECORD: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open the audit log: {0}")]
    OpenLog(io::Error),
    #[error("the audit log is not a regular file")]
    NotRegularFile,
    #[error("cannot read the audit log: {0}")]
    ReadLog(io::Error),
    #[error("cannot write the audit log: {0}")]
    WriteLog(io::Error),
    #[error("short write to the audit log ({written} of {len} bytes)")]
    ShortWrite { written: usize, len: usize },
    #[error("cannot sync the audit log: {0}")]
    SyncLog(io::Error),
    #[error("cannot read the audit anchor: {0}")]
    ReadAnchor(io::Error),
    #[error("cannot write the audit anchor: {0}")]
    WriteAnchor(io::Error),
    #[error("cannot sync the audit directory: {0}")]
    SyncDir(io::Error),
    #[error("cannot serialize the audit record: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("audit record too large ({0} bytes)")]
    RecordTooLarge(usize),
    #[error("audit sequence numbers exhausted")]
    SeqExhausted,
    #[error("cannot rotate the audit log: {0}")]
    Rotate(String),
}

/// The key that MACs audit records. Wiped on drop; `Debug` shows nothing.
#[derive(Clone)]
pub struct AuditKey(Zeroizing<[u8; 32]>);

impl AuditKey {
    /// Derives the audit key from the key-encryption key (HKDF-SHA256).
    pub fn derive(kek_bytes: &[u8; 32]) -> AuditKey {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, kek_bytes);
        let mut okm = Zeroizing::new([0u8; 32]);
        if hk.expand(KEY_INFO, &mut okm[..]).is_err() {
            // HKDF-SHA256 can produce up to 255 * 32 bytes; 32 always fits.
            unreachable!("hkdf-sha256 expands 32 bytes");
        }
        AuditKey(okm)
    }

    fn hmac(&self) -> HmacSha256 {
        match <HmacSha256 as hmac::Mac>::new_from_slice(&self.0[..]) {
            Ok(m) => m,
            // HMAC takes keys of any length.
            Err(_) => unreachable!("hmac accepts a 32-byte key"),
        }
    }
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

/// What came of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Denied,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

/// Who asked, as the kernel identified them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
}

/// One decision to record. Names only, never values.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub actor: Actor,
    pub op: &'a str,
    pub scope: Option<&'a str>,
    pub name: Option<&'a str>,
    pub outcome: Outcome,
    pub reason: Option<&'a str>,
    /// `Null` or a JSON object.
    pub detail: serde_json::Value,
}

/// Where the chain stands: the last record durably written to the log.
struct Chain {
    seq: u64,
    mac: [u8; 32],
    key: Option<AuditKey>,
    /// An append failed after it may have written to the log; the next append
    /// first looks for that record so as not to reuse its sequence number.
    dirty: bool,
}

/// The anchor file and the newest record it durably names.
struct Anchored {
    writer: AnchorWriter,
    seq: u64,
}

/// The daemon's audit log. One per process; appends are serialized internally.
pub struct AuditLog {
    log_path: PathBuf,
    anchor_path: PathBuf,
    chain: Mutex<Chain>,
    anchor: Mutex<Anchored>,
    /// Rotate once the log has grown to this many bytes.
    rotate_bytes: std::sync::OnceLock<u64>,
}

impl fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditLog")
            .field("log_path", &self.log_path)
            .field("anchor_path", &self.anchor_path)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens the log (creating it with mode 0600 if missing; its directory must
    /// exist) and continues the chain from the anchor or the log's last record,
    /// whichever is further along. Disagreement is logged, not fatal.
    pub fn open(
        log_path: &Path,
        anchor_path: &Path,
        key: Option<AuditKey>,
    ) -> Result<AuditLog, AuditError> {
        rotate::recover(log_path, anchor_path, key.as_ref())?;
        let file = open_log(log_path)?;
        sync_parent(log_path)?;
        let last = last_record(&file).map_err(AuditError::ReadLog)?;
        drop(file);
        let anchor = match read_anchor(anchor_path, key.as_ref()) {
            Ok(a) => a,
            Err(AnchorProblem::Io(e)) => return Err(AuditError::ReadAnchor(e)),
            Err(AnchorProblem::Malformed) => {
                tracing::error!(target: "aivault::audit", "audit anchor is malformed; continuing from the log");
                None
            }
        };
        let anchor = anchor.filter(|a| match &key {
            Some(k) if !a.check(k) => {
                tracing::error!(target: "aivault::audit", "audit anchor mac is wrong (forged or edited); continuing from the log");
                false
            }
            _ => true,
        });
        let (seq, mac) = match (&anchor, &last) {
            (None, None) => (0, ZERO),
            (None, Some(l)) => {
                tracing::warn!(target: "aivault::audit", seq = l.rec.seq, "no audit anchor; continuing from the log's last record");
                (l.rec.seq, *l.mac.value())
            }
            (Some(a), None) => {
                if a.seq > 0 {
                    tracing::error!(target: "aivault::audit", anchor_seq = a.seq, "audit log holds no records but the anchor does; continuing from the anchor");
                }
                (a.seq, a.mac)
            }
            (Some(a), Some(l)) if l.rec.seq > a.seq => {
                tracing::warn!(target: "aivault::audit", seq = l.rec.seq, anchor_seq = a.seq, "audit log is ahead of its anchor; continuing from the log");
                (l.rec.seq, *l.mac.value())
            }
            (Some(a), Some(l)) => {
                if l.rec.seq != a.seq || l.mac.value() != &a.mac {
                    tracing::error!(target: "aivault::audit", seq = l.rec.seq, anchor_seq = a.seq, "audit log disagrees with its anchor (truncated or edited); continuing from the anchor");
                }
                (a.seq, a.mac)
            }
        };
        Ok(AuditLog {
            log_path: log_path.to_path_buf(),
            anchor_path: anchor_path.to_path_buf(),
            chain: Mutex::new(Chain {
                seq,
                mac,
                key,
                dirty: false,
            }),
            // Whatever the file says, the next update rewrites it.
            anchor: Mutex::new(Anchored {
                writer: AnchorWriter::default(),
                seq: 0,
            }),
            rotate_bytes: std::sync::OnceLock::new(),
        })
    }

    /// Rotates the log by itself once it has grown to `bytes` (`[audit]
    /// rotate_bytes`); set once, before serving.
    pub fn set_rotate_bytes(&self, bytes: Option<u64>) {
        if let Some(b) = bytes {
            let _ = self.rotate_bytes.set(b);
        }
    }

    /// Supplies the key once the vault is unlocked; later records are keyed.
    pub fn set_key(&self, key: AuditKey) {
        self.lock().key = Some(key);
    }

    /// Appends one record and makes it durable (log and anchor), returning its
    /// sequence number. `Err` means the decision must not take effect.
    pub fn append(&self, ev: &Event<'_>) -> Result<u64, AuditError> {
        self.append_then(ev, || {})
    }

    /// [`AuditLog::append`], calling `durable` as soon as the record itself
    /// is durable in the log — before the anchor is brought up to date, which
    /// still happens within this call (but outside the chain's lock: the
    /// next record need not wait for it). A caller may let its decision take
    /// effect from `durable` on; an `Err` after `durable` was called means
    /// only the anchor lags.
    pub fn append_then(&self, ev: &Event<'_>, durable: impl FnOnce()) -> Result<u64, AuditError> {
        let mut chain = self.lock();
        if chain.dirty {
            self.adopt_orphan(&mut chain)?;
        }
        let (seq, mac, line) = next_line(&chain, ev)?;
        // From here on the log may hold bytes the chain does not account for.
        chain.dirty = true;
        if let Err(failed) = write_line(&self.log_path, line.as_bytes(), chain.seq) {
            // Cut back out of the log: the chain still accounts for every byte.
            chain.dirty = !failed.restored;
            return Err(failed.error);
        }
        chain.seq = seq;
        chain.mac = *mac.value();
        chain.dirty = false;
        let key = chain.key.clone();
        drop(chain);
        durable();
        journal(ev, seq);
        self.anchor_at(seq, mac.value(), key.as_ref())?;
        if let Some(&limit) = self.rotate_bytes.get() {
            self.rotate_if_large(limit);
        }
        Ok(seq)
    }

    /// The size threshold's rotation, by the daemon itself. The record just
    /// written stands whatever happens here: a failure is logged, and the
    /// next record tries again.
    fn rotate_if_large(&self, limit: u64) {
        let actor = Actor {
            uid: 0,
            gid: 0,
            pid: i32::try_from(std::process::id()).unwrap_or(0),
        };
        if let Err(e) = self.rotate_when(actor, Some(limit)) {
            tracing::error!(target: "aivault::audit", error = %e, "the audit log reached its rotate_bytes but could not be rotated");
        }
    }

    /// Archives the log and starts a new file whose first record, of
    /// `audit.rotate` by `actor`, chains to the archive's last (see
    /// `rotate.rs`). Returns that record's line and the archive's name.
    pub fn rotate(&self, actor: Actor) -> Result<(String, String), AuditError> {
        self.rotate_when(actor, None)?
            .ok_or_else(|| AuditError::Rotate("the log is too small".into()))
    }

    /// [`AuditLog::rotate`], only if the log holds at least `min_len`
    /// bytes (checked under the chain's lock): `Ok(None)` if not.
    fn rotate_when(
        &self,
        actor: Actor,
        min_len: Option<u64>,
    ) -> Result<Option<(String, String)>, AuditError> {
        let mut chain = self.lock();
        if chain.dirty {
            self.adopt_orphan(&mut chain)?;
        }
        if let Some(min) = min_len {
            let len = std::fs::symlink_metadata(&self.log_path)
                .map_err(AuditError::ReadLog)?
                .len();
            if len < min {
                return Ok(None);
            }
        }
        let (archive, ev_detail) = rotate::prepare(&self.log_path, chain.seq, &chain.mac)?;
        let name = archive
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ev = Event {
            actor,
            op: rotate::OP,
            scope: None,
            name: Some(&name),
            outcome: Outcome::Ok,
            reason: None,
            detail: ev_detail,
        };
        let (seq, mac, line) = next_line(&chain, &ev)?;
        let unflushed = rotate::switch(&self.log_path, &archive, line.as_bytes())?;
        chain.seq = seq;
        chain.mac = *mac.value();
        let key = chain.key.clone();
        drop(chain);
        journal(&ev, seq);
        if let Some(e) = unflushed {
            return Err(e);
        }
        self.anchor_at(seq, mac.value(), key.as_ref())?;
        Ok(Some((line.trim_end().to_string(), name)))
    }

    /// Makes the anchor name record `seq` unless a newer one is anchored.
    fn anchor_at(
        &self,
        seq: u64,
        mac: &[u8; 32],
        key: Option<&AuditKey>,
    ) -> Result<(), AuditError> {
        let mut anchored = self.anchor.lock().unwrap_or_else(|p| p.into_inner());
        if anchored.seq >= seq {
            return Ok(());
        }
        anchored.writer.write(&self.anchor_path, seq, mac, key)?;
        anchored.seq = seq;
        Ok(())
    }

    /// Reads records (newest last), optionally only those of one uid, at most
    /// `limit` of the newest. Lines that are not JSON are skipped.
    pub fn read(
        log_path: &Path,
        filter_uid: Option<u32>,
        limit: usize,
    ) -> Result<Vec<serde_json::Value>, AuditError> {
        verify::read(log_path, filter_uid, limit, None)
    }

    /// [`AuditLog::read`] of the records numbered below `before` only.
    pub fn read_before(
        log_path: &Path,
        filter_uid: Option<u32>,
        limit: usize,
        before: u64,
    ) -> Result<Vec<serde_json::Value>, AuditError> {
        verify::read(log_path, filter_uid, limit, Some(before))
    }

    /// Checks the whole chain and the anchor; never fails, reports instead.
    pub fn verify(
        log_path: &Path,
        anchor_path: &Path,
        key: &AuditKey,
        unkeyed_ops: &[&str],
    ) -> VerifyReport {
        verify::verify(log_path, anchor_path, key, unkeyed_ops)
    }

    /// [`AuditLog::verify`], and every archive back to the first record
    /// (see `rotate.rs`): a missing, altered or truncated archive shows.
    pub fn verify_archives(
        log_path: &Path,
        anchor_path: &Path,
        key: &AuditKey,
        unkeyed_ops: &[&str],
    ) -> VerifyReport {
        verify::verify_archives(log_path, anchor_path, key, unkeyed_ops)
    }

    /// What `aivaultd --check-config` checks of the log, reading only: with
    /// the key, the whole chain and the anchor ([`AuditLog::verify`]);
    /// without it (a sealed passphrase vault), that the log still ends at
    /// or past the record the anchor names, and with that record. No log
    /// and no anchor (a vault never served) is consistent.
    pub fn check(
        log_path: &Path,
        anchor_path: &Path,
        key: Option<&AuditKey>,
        unkeyed_ops: &[&str],
    ) -> VerifyReport {
        let exists = |p: &Path| std::fs::symlink_metadata(p).is_ok();
        if !exists(log_path) && !exists(anchor_path) {
            return VerifyReport {
                ok: true,
                ..VerifyReport::default()
            };
        }
        match key {
            Some(key) => verify::verify(log_path, anchor_path, key, unkeyed_ops),
            None => verify::check_unkeyed(log_path, anchor_path),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Chain> {
        // The chain only changes after a fully successful append, so a panic
        // elsewhere cannot leave it half-updated.
        self.chain.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After a failed append: if the log's last record is the one that append
    /// wrote (next number, chained to ours, MAC valid), take it as written.
    fn adopt_orphan(&self, chain: &mut Chain) -> Result<(), AuditError> {
        let file = open_log(&self.log_path)?;
        if let Some(l) = last_record(&file).map_err(AuditError::ReadLog)? {
            let ours = Some(l.rec.seq) == chain.seq.checked_add(1) && l.prev == chain.mac;
            let authentic = l.mac.check(chain.key.as_ref(), l.body.as_bytes());
            if ours && authentic {
                tracing::warn!(target: "aivault::audit", seq = l.rec.seq, "a failed append left its record in the log; continuing after it");
                chain.seq = l.rec.seq;
                chain.mac = *l.mac.value();
            }
        }
        chain.dirty = false;
        Ok(())
    }
}

/// The record that would follow the chain: its number, MAC and line
/// (newline included).
fn next_line(chain: &Chain, ev: &Event<'_>) -> Result<(u64, RecordMac, String), AuditError> {
    let seq = chain.seq.checked_add(1).ok_or(AuditError::SeqExhausted)?;
    let ts = format::rfc3339_utc(SystemTime::now());
    let prev = hex(&chain.mac);
    let body = format::body_json(&Body {
        seq,
        ts: &ts,
        uid: ev.actor.uid,
        gid: ev.actor.gid,
        pid: ev.actor.pid,
        op: ev.op,
        scope: ev.scope,
        name: ev.name,
        outcome: ev.outcome,
        reason: ev.reason,
        detail: &ev.detail,
        prev: &prev,
    })?;
    let mac = RecordMac::compute(chain.key.as_ref(), body.as_bytes());
    let mut line = format::splice_mac(&body, &mac);
    line.push('\n');
    if line.len() > MAX_RECORD {
        return Err(AuditError::RecordTooLarge(line.len()));
    }
    Ok((seq, mac, line))
}

/// Tells the journal of a record now durable in the log.
fn journal(ev: &Event<'_>, seq: u64) {
    tracing::info!(
        target: "aivault::audit",
        message_id = crate::journal::audit_message_id(ev.op),
        seq,
        uid = ev.actor.uid,
        gid = ev.actor.gid,
        pid = ev.actor.pid,
        op = ev.op,
        scope = ev.scope,
        name = ev.name,
        outcome = ev.outcome.as_str(),
        reason = ev.reason,
        "{}",
        crate::journal::audit_message(&crate::journal::Line {
            op: ev.op,
            scope: ev.scope,
            name: ev.name,
            uid: ev.actor.uid,
            outcome: ev.outcome.as_str(),
            reason: ev.reason,
        })
    );
}

#[cfg(test)]
mod tests;
