//! What each `vaultctl` subcommand does. Output goes to stdout, diagnostics to
//! stderr; no code path prints a value.

use std::io::{IsTerminal, Read, Write};

use aivault_client::{dotenv, socket_path, Client, ClientError};
use aivault_proto::{
    ErrorCode, MetaInput, Reply, RequestBody, SecretBytes, SecretInfo, SetMode, WireError,
    WireScope,
};
use serde_json::json;
use zeroize::Zeroizing;

use aivault_client::cli::{
    AuditCmd, Cli, Command, MetaOpts, PolicyCmd, ScopeArg, SecretsCmd, DAEMON_TIMEOUT_ENV,
};

use crate::error::CtlError;
use crate::report::Ui;
use crate::text::{escape, width};

/// Largest value accepted from stdin (the daemon enforces the same limit).
const MAX_VALUE: usize = 64 * 1024;
/// Largest `.env` file `import` reads.
const MAX_IMPORT_FILE: u64 = 16 * 1024 * 1024;
/// Values shorter than this are redacted only as raw bytes, not in encoded forms.
const MIN_REDACTABLE: usize = aivault_redact::MIN_ENCODED_LEN;

fn usage(msg: impl Into<String>) -> CtlError {
    CtlError::Usage(msg.into())
}

fn scope(s: ScopeArg) -> WireScope {
    match s {
        ScopeArg::Own => WireScope::Own,
        ScopeArg::System => WireScope::System,
    }
}

/// Where the daemon is and how long to wait for it.
#[derive(Debug)]
pub struct Endpoint {
    pub path: std::path::PathBuf,
    pub timeout: Option<std::time::Duration>,
}

impl Endpoint {
    /// From `--socket`/`$AIVAULT_SOCKET` and `--daemon-timeout`/`$AIVAULT_DAEMON_TIMEOUT`.
    pub fn new(cli: &Cli) -> Result<Self, CtlError> {
        let from_env = std::env::var(DAEMON_TIMEOUT_ENV).ok();
        let timeout = match cli.daemon_timeout.as_deref().or(from_env.as_deref()) {
            None => Some(DEFAULT_DAEMON_TIMEOUT),
            Some("0") => None,
            Some(s) => Some(std::time::Duration::from_millis(
                crate::run::parse_duration_ms(s)
                    .map_err(|e| usage(format!("--daemon-timeout: {e}")))?,
            )),
        };
        Ok(Endpoint {
            path: socket_path(cli.socket.as_deref()),
            timeout,
        })
    }

    /// A connection, its handshake sent (see [`Client::open`]).
    pub fn open(&self) -> Result<Client, ClientError> {
        Client::open_with_timeout(&self.path, self.timeout)
    }
}

/// How long a daemon may take to answer unless told otherwise: far beyond
/// any request's normal time (a passphrase unlock, verifying a long audit
/// log), short enough that a hung daemon does not hang scripts.
const DEFAULT_DAEMON_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub fn run(cli: Cli, ui: Ui) -> Result<i32, CtlError> {
    let ep = Endpoint::new(&cli)?;
    let path = ep.path.clone();
    let json = cli.json;
    // Read local input before connecting, so a slow typist holds no daemon slot.
    match cli.command {
        Command::Secrets(cmd) => secrets(&ep, ui, cmd),
        Command::Run(args) => crate::run::run(&ep, ui, args),
        Command::Mcp => Ok(aivault_client::mcp::serve(&path)),
        Command::Policy(cmd) => {
            let body = match cmd {
                PolicyCmd::Show => RequestBody::PolicyShow,
                PolicyCmd::Check => RequestBody::PolicyCheck,
                PolicyCmd::Reload => RequestBody::PolicyReload,
            };
            let reload = matches!(body, RequestBody::PolicyReload);
            let mut c = ep.open()?;
            match c.call(body)? {
                Reply::Policy(text) => {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    if json {
                        print_json(&v);
                    } else {
                        print_policy(&v);
                    }
                    Ok(if v.get("ok") == Some(&serde_json::Value::Bool(false)) {
                        1
                    } else {
                        0
                    })
                }
                Reply::Done { .. } if reload => {
                    if json {
                        print_json(&json!({ "reloaded": true }));
                    }
                    ui.info("policy reloaded");
                    Ok(0)
                }
                _ => Err(ClientError::Protocol.into()),
            }
        }
        Command::Status => {
            let mut c = ep.open()?;
            let Reply::Status(s) = c.call(RequestBody::Status)? else {
                return Err(ClientError::Protocol.into());
            };
            if json {
                print_json(&json!({
                    "daemon_version": s.daemon_version, "protocol": s.protocol,
                    "sealed": s.sealed, "key_provider": s.key_provider,
                    "caller_uid": s.caller_uid, "caller_gid": s.caller_gid,
                    "own_secrets": s.own_secrets, "system_secrets": s.system_secrets,
                    "connections": s.connections,
                    "warm_runner_uids": s.warm_runner_uids,
                    "runs_active": s.runs_active, "quiescent": s.quiescent,
                    "open_fds": s.open_fds,
                }));
            } else {
                println!(
                    "daemon:       {} (protocol {})",
                    s.daemon_version, s.protocol
                );
                println!(
                    "state:        {}",
                    if s.sealed { "sealed" } else { "unsealed" }
                );
                println!("key provider: {}", s.key_provider);
                println!("you are:      uid {} gid {}", s.caller_uid, s.caller_gid);
                println!("your secrets: {}", s.own_secrets);
                println!("system:       {}", s.system_secrets);
                if s.caller_uid == 0 {
                    println!("warm runners: {}", s.warm_runner_uids.len());
                    println!("active runs:  {}", s.runs_active);
                }
            }
            Ok(0)
        }
        Command::Unlock => {
            let pass = read_value("Vault passphrase: ", false)?;
            let mut c = ep.open()?;
            c.call(RequestBody::Unlock {
                passphrase: SecretBytes::new(pass.to_vec()),
            })?;
            if json {
                print_json(&json!({ "unsealed": true }));
            }
            ui.info("vault unsealed");
            Ok(0)
        }
        Command::Audit(AuditCmd::List {
            limit,
            since,
            user,
            op,
            follow,
        }) => crate::audit::list(
            &ep,
            crate::audit::ListArgs {
                limit,
                since,
                user,
                op,
                follow,
                json,
            },
        ),
        Command::Audit(AuditCmd::Verify) => {
            let mut c = ep.open()?;
            let Reply::AuditVerified(r) = c.call(RequestBody::AuditVerify)? else {
                return Err(ClientError::Protocol.into());
            };
            if json {
                print_json(
                    &json!({"ok": r.ok, "records": r.records, "last_seq": r.last_seq, "problems": r.problems}),
                );
            } else {
                for p in &r.problems {
                    println!("problem: {p}");
                }
                println!(
                    "{}: {} records, last sequence {}",
                    if r.ok { "ok" } else { "FAILED" },
                    r.records,
                    r.last_seq
                );
            }
            Ok(if r.ok { 0 } else { 1 })
        }
    }
}

/// Human form of `policy show` (a list) and `policy check` (an object).
fn print_policy(v: &serde_json::Value) {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    if let Some(list) = v.as_array() {
        if list.is_empty() {
            println!("the policy lets you run nothing");
        }
        for c in list {
            let secrets: Vec<String> = c["secrets"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|g| format!("{} as ${}", s(&g["name"]), s(&g["env"])))
                        .collect()
                })
                .unwrap_or_default();
            println!("{}  (rule {})", s(&c["command"]), s(&c["rule"]));
            if let Some(args) = c["args"].as_array().filter(|a| !a.is_empty()) {
                let args: Vec<String> = args.iter().map(s).collect();
                println!("    arguments: {}", args.join("; "));
            }
            if !secrets.is_empty() {
                println!("    secrets:   {}", secrets.join(", "));
            }
        }
        return;
    }
    if v["ok"] == false {
        println!("policy INVALID: {}", s(&v["error"]));
        return;
    }
    for r in v["rules"].as_array().into_iter().flatten() {
        println!(
            "{} ({}): {}",
            s(&r["rule"]),
            s(&r["source"]),
            s(&r["effect"])
        );
        for w in r["warnings"].as_array().into_iter().flatten() {
            println!("    warning: {}", s(w));
        }
    }
    println!("policy ok");
}

fn print_json(v: &serde_json::Value) {
    println!("{v}");
}

fn secrets(ep: &Endpoint, ui: Ui, cmd: SecretsCmd) -> Result<i32, CtlError> {
    let json = ui.json;
    match cmd {
        SecretsCmd::Set {
            name,
            meta,
            scope: s,
            force,
        } => {
            let meta = meta_input(meta)?;
            let mode = if force {
                SetMode::Upsert
            } else {
                SetMode::Create
            };
            precheck(ep, s.scope, &name, mode)?;
            let value = read_value(&format!("Value for {name}: "), true)?;
            let short = value.len() < MIN_REDACTABLE;
            let version = put(ep, s.scope, name.clone(), value, meta, mode)?;
            report_written(ui, &name, version, "stored");
            warn_short(ui, short);
            Ok(0)
        }
        SecretsCmd::Rotate {
            name,
            meta,
            scope: s,
        } => {
            let meta = meta_input(meta)?;
            precheck(ep, s.scope, &name, SetMode::Rotate)?;
            let value = read_value(&format!("New value for {name}: "), true)?;
            let short = value.len() < MIN_REDACTABLE;
            let version = put(ep, s.scope, name.clone(), value, meta, SetMode::Rotate)?;
            report_written(ui, &name, version, "rotated");
            warn_short(ui, short);
            Ok(0)
        }
        SecretsCmd::List { scope: s } => {
            let mut c = ep.open()?;
            let Reply::Secrets(list) = c.call(RequestBody::SecretList {
                scope: scope(s.scope),
            })?
            else {
                return Err(ClientError::Protocol.into());
            };
            print_list(json, &list);
            Ok(0)
        }
        SecretsCmd::Exists { name, scope: s } => {
            let mut c = ep.open()?;
            let Reply::Exists(yes) = c.call(RequestBody::SecretExists {
                scope: scope(s.scope),
                name,
            })?
            else {
                return Err(ClientError::Protocol.into());
            };
            if json {
                print_json(&json!({ "exists": yes }));
            }
            Ok(if yes { 0 } else { 1 })
        }
        SecretsCmd::Masked { name, scope: s } => {
            let mut c = ep.open()?;
            let Reply::Masked(m) = c.call(RequestBody::SecretMasked {
                scope: scope(s.scope),
                name: name.clone(),
            })?
            else {
                return Err(ClientError::Protocol.into());
            };
            if json {
                print_json(&json!({ "name": name, "masked": m }));
            } else {
                println!("{m}");
            }
            Ok(0)
        }
        SecretsCmd::Rm { name, scope: s } => {
            let mut c = ep.open()?;
            c.call(RequestBody::SecretRemove {
                scope: scope(s.scope),
                name: name.clone(),
            })?;
            if json {
                print_json(&json!({ "name": name, "removed": true }));
            }
            ui.info(&format!("removed {name}"));
            Ok(0)
        }
        SecretsCmd::Import { file, scope: s } => {
            let text = read_import(&file)?;
            let entries =
                dotenv::parse(&text).map_err(|e| usage(format!("{}: {e}", file.display())))?;
            if entries.is_empty() {
                return Err(usage(format!("{}: no NAME=value lines", file.display())));
            }
            let names: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
            let short: Vec<String> = entries
                .iter()
                .filter(|e| e.value.len() < MIN_REDACTABLE)
                .map(|e| e.name.clone())
                .collect();
            let wire = entries
                .into_iter()
                .map(|e| (e.name, SecretBytes::new(e.value.to_vec())))
                .collect();
            let mut c = ep.open()?;
            let Reply::Imported { count } = c.call(RequestBody::SecretImport {
                scope: scope(s.scope),
                entries: wire,
            })?
            else {
                return Err(ClientError::Protocol.into());
            };
            if json {
                print_json(&json!({ "imported": count, "names": names }));
            }
            ui.info(&format!("imported {count} secrets: {}", names.join(", ")));
            for name in short {
                ui.warn(&format!(
                    "{name} is shorter than {MIN_REDACTABLE} bytes; only its raw form can be redacted from output"
                ));
            }
            Ok(0)
        }
    }
}

/// Before a value is asked for: whether the daemon would take this name in
/// this scope, and whether the secret exists as the mode needs (absent for
/// a plain `set`, present for `rotate`). One `exists` request, on its own
/// connection, closed again while the value is typed. The daemon checks
/// all of it again when the value arrives.
fn precheck(ep: &Endpoint, s: ScopeArg, name: &str, mode: SetMode) -> Result<(), CtlError> {
    let mut c = ep.open()?;
    let Reply::Exists(exists) = c.call(RequestBody::SecretExists {
        scope: scope(s),
        name: name.to_string(),
    })?
    else {
        return Err(ClientError::Protocol.into());
    };
    let refuse =
        |code, message: String| Err(ClientError::Daemon(WireError::new(code, message)).into());
    match mode {
        SetMode::Create if exists => refuse(
            ErrorCode::AlreadyExists,
            format!("{name} exists already; nothing was stored (replace its value with --force or `secrets rotate`)"),
        ),
        SetMode::Rotate if !exists => refuse(ErrorCode::NotFound, format!("no such secret: {name}")),
        _ => Ok(()),
    }
}

/// Said after a value is stored, so only about requests that succeeded.
fn warn_short(ui: Ui, short: bool) {
    if short {
        ui.warn(&format!(
            "values shorter than {MIN_REDACTABLE} bytes are redacted from output only in their raw form, not when encoded"
        ));
    }
}

fn put(
    ep: &Endpoint,
    s: ScopeArg,
    name: String,
    value: Zeroizing<Vec<u8>>,
    meta: MetaInput,
    mode: SetMode,
) -> Result<Option<u64>, CtlError> {
    let mut c = ep.open()?;
    let Reply::Done { version } = c.call(RequestBody::SecretSet {
        scope: scope(s),
        name,
        value: SecretBytes::new(value.to_vec()),
        meta,
        mode,
    })?
    else {
        return Err(ClientError::Protocol.into());
    };
    Ok(version)
}

fn report_written(ui: Ui, name: &str, version: Option<u64>, verb: &str) {
    if ui.json {
        print_json(&json!({ "name": name, "version": version }));
    }
    ui.info(&format!("{verb} {name} (version {})", version.unwrap_or(0)));
}

fn print_list(json: bool, list: &[SecretInfo]) {
    if json {
        let v: Vec<_> = list
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "scope": match s.scope { WireScope::Own => "user", WireScope::System => "system" },
                    "version": s.version, "created": s.created, "updated": s.updated,
                    "description": s.description, "tags": s.tags, "expires": s.expires,
                })
            })
            .collect();
        print_json(&serde_json::Value::Array(v));
        return;
    }
    // Names are plain ASCII (the daemon refuses others) but escaped all the
    // same; descriptions and tags are anyone's text: escaped, so a newline
    // or a terminal escape in them can neither break the table nor reach
    // the terminal.
    let names: Vec<String> = list.iter().map(|s| escape(&s.name)).collect();
    let w = width(32, names.iter().map(String::as_str));
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<w$} {:>7}  {:<10}  {:<10}  DESCRIPTION",
        "NAME", "VERSION", "UPDATED", "EXPIRES"
    );
    for (s, name) in list.iter().zip(&names) {
        let tags = if s.tags.is_empty() {
            String::new()
        } else {
            let tags: Vec<String> = s.tags.iter().map(|t| escape(t)).collect();
            format!(" [{}]", tags.join(","))
        };
        let line = format!(
            "{name:<w$} {:>7}  {:<10}  {:<10}  {}{}",
            s.version,
            date(s.updated),
            s.expires.map(date).unwrap_or_else(|| "-".into()),
            escape(s.description.as_deref().unwrap_or("")),
            tags
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// Reads a value: from a terminal, a no-echo prompt (twice when `confirm`,
/// i.e. for a secret's value); otherwise all of stdin, minus one trailing
/// newline.
fn read_value(prompt: &str, confirm: bool) -> Result<Zeroizing<Vec<u8>>, CtlError> {
    let value = if std::io::stdin().is_terminal() {
        let first = aivault_proto::tty::prompt_no_echo(prompt)
            .map_err(|e| usage(format!("cannot read from the terminal: {e}")))?;
        if confirm {
            let again = aivault_proto::tty::prompt_no_echo("Again: ")
                .map_err(|e| usage(format!("cannot read from the terminal: {e}")))?;
            if again != first {
                return Err(usage("the two entries differ; nothing was stored"));
            }
        }
        first
    } else {
        let mut buf = Zeroizing::new(Vec::new());
        std::io::stdin()
            .take(MAX_VALUE as u64 + 2)
            .read_to_end(&mut buf)
            .map_err(|e| usage(format!("cannot read stdin: {e}")))?;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        buf
    };
    if value.is_empty() {
        // The daemon's words for the same refusal.
        return Err(usage(if confirm {
            "empty values are not stored"
        } else {
            "the passphrase is empty"
        }));
    }
    if value.len() > MAX_VALUE {
        return Err(usage(format!("values are limited to {MAX_VALUE} bytes")));
    }
    Ok(value)
}

fn read_import(file: &std::path::Path) -> Result<Zeroizing<Vec<u8>>, CtlError> {
    let mut buf = Zeroizing::new(Vec::new());
    let cannot = |e: std::io::Error| usage(format!("cannot read {}: {e}", file.display()));
    if file.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_IMPORT_FILE + 1)
            .read_to_end(&mut buf)
            .map_err(cannot)?;
    } else {
        std::fs::File::open(file)
            .map_err(cannot)?
            .take(MAX_IMPORT_FILE + 1)
            .read_to_end(&mut buf)
            .map_err(cannot)?;
    }
    if buf.len() as u64 > MAX_IMPORT_FILE {
        return Err(usage(format!("{} is larger than 16 MiB", file.display())));
    }
    Ok(buf)
}

fn meta_input(m: MetaOpts) -> Result<MetaInput, CtlError> {
    let expires = m.expires.as_deref().map(parse_expiry).transpose()?;
    Ok(MetaInput {
        description: m.description,
        tags: m.tags,
        expires,
    })
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `30d`, `12h`, `2w`, `90m` from now, or `YYYY-MM-DD` (midnight UTC).
pub fn parse_expiry(s: &str) -> Result<u64, CtlError> {
    let bad = || {
        usage(format!(
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

pub(crate) fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` of a unix time (UTC).
fn date(secs: u64) -> String {
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
    }
}
