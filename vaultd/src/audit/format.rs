//! The bytes of one audit record: canonical body, MAC, splice, timestamp.
//!
//! See the parent module's documentation for the format this implements.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AuditKey, Outcome};

pub(super) type HmacSha256 = Hmac<Sha256>;

/// The `prev` of the first record.
pub(super) const ZERO: [u8; 32] = [0u8; 32];
/// Marks a MAC computed without a key (the daemon was sealed).
const UNKEYED_PREFIX: &str = "u:";

/// Everything in a record except its MAC, in the order it is written.
#[derive(Debug, Serialize)]
pub(super) struct Body<'a> {
    pub seq: u64,
    pub ts: &'a str,
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    pub op: &'a str,
    pub scope: Option<&'a str>,
    pub name: Option<&'a str>,
    pub outcome: Outcome,
    pub reason: Option<&'a str>,
    pub detail: &'a serde_json::Value,
    pub prev: &'a str,
}

/// A record as read back from a line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Parsed {
    pub seq: u64,
    pub ts: String,
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    pub op: String,
    pub scope: Option<String>,
    pub name: Option<String>,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub detail: serde_json::Value,
    pub prev: String,
    pub mac: String,
}

impl Parsed {
    fn body(&self) -> Body<'_> {
        Body {
            seq: self.seq,
            ts: &self.ts,
            uid: self.uid,
            gid: self.gid,
            pid: self.pid,
            op: &self.op,
            scope: self.scope.as_deref(),
            name: self.name.as_deref(),
            outcome: self.outcome,
            reason: self.reason.as_deref(),
            detail: &self.detail,
            prev: &self.prev,
        }
    }
}

/// A record's MAC: HMAC-SHA256 under the audit key, or, while sealed, plain
/// SHA-256 (which anyone can recompute, so it authenticates nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RecordMac {
    Keyed([u8; 32]),
    Unkeyed([u8; 32]),
}

impl RecordMac {
    /// Computes the MAC of a body's bytes.
    pub fn compute(key: Option<&AuditKey>, body: &[u8]) -> Self {
        match key {
            Some(k) => {
                let mut m = k.hmac();
                m.update(body);
                Self::Keyed(m.finalize().into_bytes().into())
            }
            None => Self::Unkeyed(Sha256::digest(body).into()),
        }
    }

    /// Checks this MAC against a body. Keyed MACs are compared in constant
    /// time and never verify without a key.
    pub fn check(&self, key: Option<&AuditKey>, body: &[u8]) -> bool {
        match (self, key) {
            (Self::Keyed(v), Some(k)) => {
                let mut m = k.hmac();
                m.update(body);
                m.verify_slice(v).is_ok()
            }
            (Self::Keyed(_), None) => false,
            (Self::Unkeyed(v), _) => Sha256::digest(body).as_slice() == v,
        }
    }

    /// The 32 bytes the next record's `prev` (and the anchor's `mac`) carry.
    pub fn value(&self) -> &[u8; 32] {
        match self {
            Self::Keyed(v) | Self::Unkeyed(v) => v,
        }
    }

    pub fn is_keyed(&self) -> bool {
        matches!(self, Self::Keyed(_))
    }

    /// `hex` for keyed MACs, `u:hex` for unkeyed ones.
    pub fn encode(&self) -> String {
        match self {
            Self::Keyed(v) => hex(v),
            Self::Unkeyed(v) => format!("{UNKEYED_PREFIX}{}", hex(v)),
        }
    }

    pub fn decode(s: &str) -> Option<Self> {
        match s.strip_prefix(UNKEYED_PREFIX) {
            Some(rest) => unhex32(rest).map(Self::Unkeyed),
            None => unhex32(s).map(Self::Keyed),
        }
    }
}

/// Serializes a body: compact JSON, members in declaration order.
pub(super) fn body_json(body: &Body<'_>) -> Result<String, serde_json::Error> {
    serde_json::to_string(body)
}

/// Turns a body `{…}` into the line `{…,"mac":"…"}` (without the newline).
pub(super) fn splice_mac(body: &str, mac: &RecordMac) -> String {
    let open = body.strip_suffix('}').unwrap_or(body);
    format!("{open},\"mac\":\"{}\"}}", mac.encode())
}

/// Why a line is not a well-formed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LineError {
    /// Not JSON at all: typically a torn write.
    Json,
    /// JSON, but not the members a record has.
    Shape,
    /// A record, but not byte-for-byte how it would have been written.
    Canonical,
}

/// A line that parsed and is byte-for-byte the canonical form of its content.
#[derive(Debug)]
pub(super) struct CheckedLine {
    pub rec: Parsed,
    /// The bytes the MAC covers.
    pub body: String,
    pub mac: RecordMac,
    pub prev: [u8; 32],
}

/// Parses a line (without its newline) and insists that re-serializing what
/// was parsed reproduces it exactly, so that no edit can hide in whitespace,
/// key order, escapes or duplicate keys.
pub(super) fn check_line(line: &[u8]) -> Result<CheckedLine, LineError> {
    let value: serde_json::Value = serde_json::from_slice(line).map_err(|_| LineError::Json)?;
    let rec: Parsed = serde_json::from_value(value).map_err(|_| LineError::Shape)?;
    let mac = RecordMac::decode(&rec.mac).ok_or(LineError::Shape)?;
    let prev = unhex32(&rec.prev).ok_or(LineError::Shape)?;
    let body = body_json(&rec.body()).map_err(|_| LineError::Shape)?;
    if splice_mac(&body, &mac).as_bytes() != line {
        return Err(LineError::Canonical);
    }
    Ok(CheckedLine {
        rec,
        body,
        mac,
        prev,
    })
}

/// The bytes the anchor's MAC covers: `"anchor"`, the sequence number
/// (big-endian u64) and the last record's MAC value.
pub(super) fn anchor_input(seq: u64, mac: &[u8; 32]) -> Vec<u8> {
    let mut v = Vec::with_capacity(6 + 8 + 32);
    v.extend_from_slice(b"anchor");
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(mac);
    v
}

pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Decodes exactly 64 lowercase hex digits.
pub(super) fn unhex32(s: &str) -> Option<[u8; 32]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-22T05:10:00.123Z`.
/// Times before 1970 (a badly set clock) are written as the epoch.
pub(crate) fn rfc3339_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Proleptic Gregorian (year, month, day) of a count of days since 1970-01-01.
///
/// Works in 400-year eras (146 097 days each) whose years begin on 1 March, so
/// the leap day falls at the end of the year and month lengths follow the
/// 153-days-per-5-months pattern.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of March-based year
    let mp = (5 * doy + 2) / 153; // March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // month is 1..=12 and day 1..=31 by construction.
    (year, month as u32, day as u32)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_match_known_dates() {
        let at = |s: u64, ms: u64| {
            rfc3339_utc(UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_709_164_800, 0), "2024-02-29T00:00:00.000Z");
        assert_eq!(at(1_795_324_200, 123), "2026-11-22T05:10:00.123Z");
        assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
    }

    #[test]
    fn civil_dates_round_trip_against_day_counting() {
        // Walk day by day from 1970 to 2400 and check the calendar advances
        // exactly as month lengths and leap years say it should.
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for days in 0..(430 * 366) {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn hex_round_trips_and_rejects_uppercase() {
        let v: [u8; 32] = core::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(unhex32(&hex(&v)), Some(v));
        assert_eq!(unhex32(&hex(&v).to_uppercase()), None);
        assert_eq!(unhex32("00"), None);
    }
}
