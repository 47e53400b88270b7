//! Times as `vaultctl` reads and writes them: expiry dates, the audit
//! log's RFC 3339 stamps, and the civil-calendar arithmetic behind both
//! (UTC only; no time zone database).

use crate::error::CtlError;

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `30d`, `12h`, `2w`, `90m` from now, or `YYYY-MM-DD` (midnight UTC).
pub fn parse_expiry(s: &str) -> Result<u64, CtlError> {
    let bad = || {
        CtlError::Usage(format!(
            "invalid --expires {s:?}: use e.g. 30d, 12h, 2w or 2027-01-31"
        ))
    };
    if let Some((y, rest)) = s.split_once('-') {
        let (m, d) = rest.split_once('-').ok_or_else(bad)?;
        let (y, m, d): (i64, u32, u32) = (
            y.parse().map_err(|_| bad())?,
            m.parse().map_err(|_| bad())?,
            d.parse().map_err(|_| bad())?,
        );
        if !(1970..=9999).contains(&y)
            || !(1..=12).contains(&m)
            || d == 0
            || d > days_in_month(y, m)
        {
            return Err(bad());
        }
        return Ok((days_from_civil(y, m, d) * 86_400) as u64);
    }
    let split = s.len().checked_sub(1).ok_or_else(bad)?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(bad());
    }
    n.checked_mul(secs)
        .and_then(|d| d.checked_add(now()))
        .ok_or_else(bad)
}

/// `--expiring`'s window (`7d`, `12h`, `2w`, `90m`) as the unix time it
/// ends at.
pub fn parse_window(s: &str) -> Result<u64, CtlError> {
    let bad = || {
        CtlError::Usage(format!(
            "invalid --expiring {s:?}: use a duration such as 7d, 12h or 2w"
        ))
    };
    if s.contains('-') {
        return Err(bad());
    }
    parse_expiry(s).map_err(|_| bad())
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` of a unix time (UTC).
pub fn date(secs: u64) -> String {
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` as milliseconds since the epoch.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || !s.is_ascii() {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let sep = |i: usize, c: &[u8]| c.contains(&b[i]);
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y.into(), mo) {
        return None;
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0u32;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = s.get(start..i).filter(|f| !f.is_empty())?;
        ms = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    }
    let offset_secs: i64 = match s.get(i..)? {
        "Z" | "z" => 0,
        off if off.len() == 6 && (off.starts_with('+') || off.starts_with('-')) => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            if b[i + 3] != b':' || oh > 23 || om > 59 {
                return None;
            }
            let v = i64::from(oh * 3_600 + om * 60);
            if off.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y.into(), mo, d);
    let secs = days * 86_400 + i64::from(h * 3_600 + mi * 60 + sec) - offset_secs;
    Some(secs * 1_000 + i64::from(ms))
}

/// `30s`, `5m`, `1h`, `500ms` or plain seconds, as milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, CtlError> {
    let bad = || CtlError::Usage(format!("invalid duration {s:?}: use e.g. 30s, 5m, 500ms"));
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (s, 1_000)
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    match n.checked_mul(mult) {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(date(0), "1970-01-01");
        let t = parse_expiry("2027-02-28").unwrap();
        assert_eq!(date(t), "2027-02-28");
        assert!(parse_expiry("2027-02-29").is_err());
        assert!(parse_expiry("30x").is_err());
        assert!(parse_expiry("").is_err());
        assert!(parse_expiry("0d").is_err());
        assert!(parse_expiry("30d").unwrap() > now());
        assert!(parse_window("7d").unwrap() > now());
        assert!(parse_window("2027-01-31").is_err());
        assert!(parse_window("7x").is_err());
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1_500));
        assert_eq!(
            parse_rfc3339_ms("2026-11-22T05:10:00.123Z"),
            Some(1_795_324_200_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-22T06:10:00+01:00"),
            Some(1_795_324_200_000)
        );
        for bad in [
            "2026-11-22",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-22T05:10:00",
            "2026-11-22T05:10:00+0100",
            "2026-11-22T25:10:00Z",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }
}
