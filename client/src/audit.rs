//! `vaultctl audit list`: the daemon's audit records (JSON lines, see
//! docs/protocol.md) filtered here by time, account and operation, shown as
//! a table or passed on as JSON lines, and with `--follow` polled for new
//! ones until interrupted.
//!
//! The daemon decides which records a caller may read (their own; root:
//! all); the filters only narrow that down. It reads the current log file
//! only: records from before an `audit rotate` are in its archives.
//!
//! `vaultctl audit rotate` (root) asks the daemon to archive the log and
//! start a new file chained to the archive; it prints the new file's first
//! record.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use aivault_proto::{Reply, RequestBody};
use serde_json::Value;

use aivault_client::ClientError;

use crate::endpoint::Endpoint;
use crate::error::CtlError;
use crate::text::{escape, width};
use crate::time::{now_ms, parse_rfc3339_ms};

/// How many records the daemon is asked for when filtering here or
/// following: its largest answer.
const MAX_FETCH: u32 = 10_000;
/// Pause between two polls of `--follow`. Each poll is itself an audited
/// request (`audit.list`), so not much more often than this.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(2);

/// What `audit list` was asked for.
#[derive(Debug)]
pub struct ListArgs {
    pub limit: u32,
    pub since: Option<String>,
    pub user: Option<String>,
    pub op: Option<String>,
    pub follow: bool,
    pub json: bool,
}

/// The filters, parsed.
#[derive(Debug, Default)]
struct Filter {
    /// Milliseconds since the epoch.
    since_ms: Option<i64>,
    uid: Option<u32>,
    op: Option<String>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.since_ms.is_none() && self.uid.is_none() && self.op.is_none()
    }

    fn keeps(&self, r: &Value) -> bool {
        if let Some(uid) = self.uid {
            if r["uid"].as_u64() != Some(u64::from(uid)) {
                return false;
            }
        }
        if let Some(op) = &self.op {
            if r["op"].as_str() != Some(op.as_str()) {
                return false;
            }
        }
        if let Some(since) = self.since_ms {
            // A record whose time cannot be read is shown rather than hidden.
            if let Some(ts) = r["ts"].as_str().and_then(parse_rfc3339_ms) {
                return ts >= since;
            }
        }
        true
    }
}

pub fn list(ep: &Endpoint, args: ListArgs) -> Result<i32, CtlError> {
    let accounts = Accounts::load();
    let filter = Filter {
        since_ms: args.since.as_deref().map(parse_since).transpose()?,
        uid: args
            .user
            .as_deref()
            .map(|u| accounts.uid_of(u))
            .transpose()?,
        op: args.op,
    };
    let fetch = if filter.is_empty() && !args.follow {
        args.limit
    } else {
        MAX_FETCH
    };
    let records = fetch_records(ep, fetch)?;
    let mut last_seq = records.iter().filter_map(|(_, r)| seq(r)).max();
    let mut shown: Vec<&(String, Value)> =
        records.iter().filter(|(_, r)| filter.keeps(r)).collect();
    let skip = shown.len().saturating_sub(args.limit as usize);
    shown.drain(..skip);

    let mut table = Table::new(args.json, &accounts, shown.iter().map(|(_, r)| r));
    table.header();
    for (line, r) in &shown {
        let _ = table.row(line, r);
    }
    if !args.follow {
        return Ok(0);
    }
    // This process's own polls are audited too; they are not echoed back.
    let me = i64::from(std::process::id());
    let own_poll = |r: &Value| r["op"] == "audit.list" && r["pid"].as_i64() == Some(me);
    loop {
        std::thread::sleep(FOLLOW_INTERVAL);
        let records = fetch_records(ep, MAX_FETCH)?;
        for (line, r) in &records {
            let new = seq(r).is_some_and(|s| last_seq.is_none_or(|l| s > l));
            // A closed stdout (`| head`) ends the follow.
            if new && filter.keeps(r) && !own_poll(r) && table.row(line, r).is_err() {
                return Ok(0);
            }
        }
        last_seq = records
            .iter()
            .filter_map(|(_, r)| seq(r))
            .max()
            .max(last_seq);
    }
}

/// `audit rotate`: archives the log; prints the archive and the new
/// file's first record (`--json`: that record as the daemon wrote it).
pub fn rotate(ep: &Endpoint, json: bool) -> Result<i32, CtlError> {
    let reply = ep.open()?.call(RequestBody::AuditRotate)?;
    let Reply::AuditRecords(lines) = reply else {
        return Err(ClientError::Protocol.into());
    };
    let Some(line) = lines.first() else {
        return Err(ClientError::Protocol.into());
    };
    if json {
        println!("{line}");
        return Ok(0);
    }
    let r: Value = serde_json::from_str(line).unwrap_or(Value::Null);
    let archive = r["detail"]["archive"].as_str().unwrap_or("?");
    let last = r["detail"]["last_seq"].as_u64().unwrap_or(0);
    let next = seq(&r).unwrap_or(0);
    println!(
        "archived records up to seq {last} as {}; the log goes on from seq {next} (its audit.rotate record)",
        escape(archive)
    );
    Ok(0)
}

fn seq(r: &Value) -> Option<u64> {
    r["seq"].as_u64()
}

/// The newest `limit` records the daemon lets this caller read, oldest
/// first, each as its line and parsed.
fn fetch_records(ep: &Endpoint, limit: u32) -> Result<Vec<(String, Value)>, CtlError> {
    let lines = ep.open()?.audit_records(limit)?;
    Ok(lines
        .into_iter()
        .map(|l| {
            let v = serde_json::from_str(&l).unwrap_or(Value::Null);
            (l, v)
        })
        .collect())
}

/// Output: JSON lines as the daemon wrote them, or an aligned table whose
/// column widths are set by the first records and kept while following.
struct Table<'a> {
    json: bool,
    accounts: &'a Accounts,
    widths: [usize; 5],
    out: std::io::StdoutLock<'static>,
}

const HEADERS: [&str; 6] = ["TIME (UTC)", "USER", "OP", "NAME", "OUTCOME", "REASON"];

impl<'a> Table<'a> {
    fn new<'r>(json: bool, accounts: &'a Accounts, first: impl Iterator<Item = &'r Value>) -> Self {
        let mut widths = [19, 8, 14, 16, 7];
        for r in first {
            let cells = cells(accounts, r);
            for (w, c) in widths.iter_mut().zip(cells.iter()) {
                *w = width(*w, [c.as_str()]);
            }
        }
        for (w, h) in widths.iter_mut().zip(HEADERS) {
            *w = width(*w, [h]);
        }
        Table {
            json,
            accounts,
            widths,
            out: std::io::stdout().lock(),
        }
    }

    fn header(&mut self) {
        if !self.json {
            let cells = HEADERS.map(String::from);
            let _ = self.line(&cells).and_then(|()| self.out.flush());
        }
    }

    fn row(&mut self, line: &str, r: &Value) -> std::io::Result<()> {
        if self.json {
            writeln!(self.out, "{line}")?;
        } else {
            let cells = cells(self.accounts, r);
            self.line(&cells)?;
        }
        self.out.flush()
    }

    fn line(&mut self, cells: &[String; 6]) -> std::io::Result<()> {
        let mut text = String::new();
        for (c, w) in cells.iter().zip(self.widths) {
            text.push_str(c);
            let pad = w.saturating_sub(c.chars().count()) + 2;
            text.push_str(&" ".repeat(pad));
        }
        text.push_str(&cells[5]);
        writeln!(self.out, "{}", text.trim_end())
    }
}

/// One record's cells, every one of them escaped.
fn cells(accounts: &Accounts, r: &Value) -> [String; 6] {
    let text = |v: &Value| escape(v.as_str().unwrap_or("-"));
    let time = match r["ts"].as_str() {
        // 2026-11-22T05:10:00.123Z -> 2026-11-22 05:10:00
        Some(ts) if ts.len() >= 19 && ts.is_char_boundary(19) && ts.is_ascii() => {
            format!("{} {}", &ts[..10], &ts[11..19])
        }
        _ => text(&r["ts"]),
    };
    let user = match r["uid"].as_u64().and_then(|u| u32::try_from(u).ok()) {
        Some(uid) => escape(&accounts.name_of(uid)),
        None => "-".into(),
    };
    [
        time,
        user,
        text(&r["op"]),
        text(&r["name"]),
        text(&r["outcome"]),
        text(&r["reason"]),
    ]
}

/// The local account database (`/etc/passwd`). `vaultctl` is linked
/// statically and does not load NSS modules: accounts only a directory
/// service knows are shown by number and must be named by uid.
#[derive(Debug, Default)]
struct Accounts {
    by_uid: HashMap<u32, String>,
}

const PASSWD: &str = "/etc/passwd";

impl Accounts {
    fn load() -> Self {
        let text = std::fs::read_to_string(PASSWD).unwrap_or_default();
        Self::parse(&text)
    }

    fn parse(text: &str) -> Self {
        let mut by_uid = HashMap::new();
        for line in text.lines() {
            let mut f = line.split(':');
            let (Some(name), Some(_), Some(uid)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if let Ok(uid) = uid.parse::<u32>() {
                // The first entry for a uid is the one getpwuid would return.
                by_uid.entry(uid).or_insert_with(|| name.to_string());
            }
        }
        Accounts { by_uid }
    }

    fn name_of(&self, uid: u32) -> String {
        self.by_uid
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }

    /// A `--user` argument: a uid, or a name in the account database.
    fn uid_of(&self, user: &str) -> Result<u32, CtlError> {
        if let Ok(uid) = user.parse::<u32>() {
            return Ok(uid);
        }
        self.by_uid
            .iter()
            .find(|(_, n)| n.as_str() == user)
            .map(|(uid, _)| *uid)
            .ok_or_else(|| {
                CtlError::Usage(format!(
                    "--user {}: no such account in {PASSWD} (give a uid instead)",
                    escape(user)
                ))
            })
    }
}

/// `--since`: a duration back from now (`90s`, `30m`, `1h`, `7d`, `2w`) or
/// an RFC 3339 time (`2026-11-22T05:10:00Z`, `…+01:00`), as milliseconds
/// since the epoch.
fn parse_since(s: &str) -> Result<i64, CtlError> {
    let bad = || {
        CtlError::Usage(format!(
            "invalid --since {}: use a duration such as 1h or 7d, or a time such as 2026-11-22T05:10:00Z",
            escape(s)
        ))
    };
    if s.contains('T') || s.contains('t') {
        return parse_rfc3339_ms(s).ok_or_else(bad);
    }
    let split = s
        .len()
        .checked_sub(1)
        .filter(|i| s.is_char_boundary(*i))
        .ok_or_else(bad)?;
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    let back = n
        .checked_mul(secs)
        .and_then(|v| v.checked_mul(1_000))
        .filter(|_| n >= 0)
        .ok_or_else(bad)?;
    Ok(now_ms().saturating_sub(back))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times() {
        let t = parse_since("1h").unwrap();
        assert!((now_ms() - t - 3_600_000).abs() < 60_000);
        assert_eq!(
            parse_since("2026-11-22T05:10:00Z").unwrap(),
            1_795_324_200_000
        );
        for bad in ["", "1", "1y", "h", "-1h", "é"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn accounts_by_name_and_number() {
        let a = Accounts::parse("root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/h:/bin/sh\nbad line\ndup:x:1000:1::/:/\n");
        assert_eq!(a.name_of(0), "root");
        assert_eq!(a.name_of(1000), "alice");
        assert_eq!(a.name_of(4242), "4242");
        assert_eq!(a.uid_of("alice").unwrap(), 1000);
        assert_eq!(a.uid_of("77").unwrap(), 77);
        assert!(a.uid_of("nobody-here").is_err());
    }

    #[test]
    fn filters_match_fields() {
        let r: Value = serde_json::from_str(
            r#"{"seq":3,"ts":"2026-11-22T05:10:00.123Z","uid":1000,"op":"secret.set"}"#,
        )
        .unwrap();
        let keep = |f: Filter| f.keeps(&r);
        assert!(keep(Filter::default()));
        assert!(keep(Filter {
            uid: Some(1000),
            ..Filter::default()
        }));
        assert!(!keep(Filter {
            uid: Some(0),
            ..Filter::default()
        }));
        assert!(keep(Filter {
            op: Some("secret.set".into()),
            ..Filter::default()
        }));
        assert!(!keep(Filter {
            op: Some("run".into()),
            ..Filter::default()
        }));
        assert!(keep(Filter {
            since_ms: Some(1_795_324_200_000),
            ..Filter::default()
        }));
        assert!(!keep(Filter {
            since_ms: Some(1_795_324_200_124),
            ..Filter::default()
        }));
    }
}
