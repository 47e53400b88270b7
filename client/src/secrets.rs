//! `vaultctl secrets …`: store, rotate, import, list, test, mask and remove
//! secrets. Values come from stdin or a no-echo prompt, never from the
//! command line, and are never printed.

use std::io::{IsTerminal, Read, Write};

use aivault_client::cli::{CharsetArg, ConflictArg, MetaOpts, ScopeArg, SecretsCmd};
use aivault_client::{dotenv, ClientError};
use aivault_proto::{
    Charset, ErrorCode, ImportConflict, MetaInput, Reply, RequestBody, SecretBytes, SecretInfo,
    SetMode, WireError, WireScope,
};
use serde_json::json;
use zeroize::Zeroizing;

use crate::endpoint::{scope, Endpoint};
use crate::error::usage;
use crate::error::CtlError;
use crate::report::print_json;
use crate::report::Ui;
use crate::text::{escape, width};
use crate::time::{date, now, parse_expiry, parse_window};

/// Largest value accepted from stdin (the daemon enforces the same limit).
const MAX_VALUE: usize = 64 * 1024;
/// Largest `.env` file `import` reads.
const MAX_IMPORT_FILE: u64 = 16 * 1024 * 1024;
/// Values shorter than this are redacted only as raw bytes, not in encoded forms.
const MIN_REDACTABLE: usize = aivault_redact::MIN_ENCODED_LEN;

pub fn run(ep: &Endpoint, ui: Ui, cmd: SecretsCmd) -> Result<i32, CtlError> {
    let json = ui.json;
    match cmd {
        SecretsCmd::Backup { file, all } => crate::backup::backup(ep, ui, &file, all),
        SecretsCmd::Restore {
            file,
            verify_only,
            conflict,
        } => crate::backup::restore(ep, ui, &file, verify_only, conflict),
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
        SecretsCmd::Generate {
            name,
            length,
            charset,
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
            let mut c = ep.open()?;
            let Reply::Done { version } = c.call(RequestBody::SecretGenerate {
                scope: scope(s.scope),
                name: name.clone(),
                length,
                charset: match charset {
                    CharsetArg::Alnum => Charset::Alnum,
                    CharsetArg::Hex => Charset::Hex,
                    CharsetArg::Base64url => Charset::Base64Url,
                    CharsetArg::Printable => Charset::Printable,
                },
                meta,
                mode,
            })?
            else {
                return Err(ClientError::Protocol.into());
            };
            if json {
                print_json(&json!({ "name": name, "version": version, "length": length }));
            }
            ui.info(&format!("generated {name} ({length} characters)"));
            Ok(0)
        }
        SecretsCmd::List { scope: s, expiring } => {
            let until = expiring.as_deref().map(parse_window).transpose()?;
            let mut list = ep.open()?.list_secrets(scope(s.scope))?;
            if let Some(until) = until {
                list.retain(|s| s.expires.is_some_and(|e| e <= until));
            }
            print_list(json, &list, now());
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
        SecretsCmd::Import {
            file,
            scope: s,
            conflict,
            dry_run,
            meta,
        } => {
            let meta = meta_input(meta)?;
            let text = read_import(&file)?;
            let parsed =
                dotenv::parse(&text).map_err(|e| usage(format!("{}: {e}", file.display())))?;
            // Empty values are never stored (as with `set`): skipped, said.
            let (empty, entries): (Vec<_>, Vec<_>) =
                parsed.into_iter().partition(|e| e.value.is_empty());
            for e in &empty {
                ui.warn(&format!(
                    "{}: line {}: {} has an empty value; skipped",
                    file.display(),
                    e.line,
                    e.name
                ));
            }
            if entries.is_empty() {
                return Err(usage(format!(
                    "{}: no NAME=value lines with a value",
                    file.display()
                )));
            }
            let names: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
            // Overwriting needs no list of what exists, except to plan.
            let existing = if conflict == ConflictArg::Overwrite && !dry_run {
                Vec::new()
            } else {
                existing_names(ep, s.scope, &names)?
            };
            if conflict == ConflictArg::Error && !existing.is_empty() {
                return Err(ClientError::Daemon(WireError::new(
                    ErrorCode::AlreadyExists,
                    format!(
                        "{} exist already; nothing was imported (choose --conflict skip or overwrite)",
                        existing.join(", ")
                    ),
                ))
                .into());
            }
            let (stored, skipped): (Vec<String>, Vec<String>) = names
                .iter()
                .cloned()
                .partition(|n| conflict != ConflictArg::Skip || !existing.contains(n));
            if dry_run {
                print_plan(json, &stored, &skipped, &existing);
                return Ok(0);
            }
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
            let conflict = match conflict {
                ConflictArg::Error => ImportConflict::Error,
                ConflictArg::Skip => ImportConflict::Skip,
                ConflictArg::Overwrite => ImportConflict::Overwrite,
            };
            let body = if meta == MetaInput::default() {
                RequestBody::SecretImportWith {
                    scope: scope(s.scope),
                    entries: wire,
                    conflict,
                }
            } else {
                RequestBody::SecretImportMeta {
                    scope: scope(s.scope),
                    entries: wire,
                    conflict,
                    meta,
                }
            };
            let Reply::Imported { count } = c.call(body)? else {
                return Err(ClientError::Protocol.into());
            };
            if json {
                print_json(&json!({ "imported": count, "names": stored, "skipped": skipped }));
            }
            ui.info(&format!("imported {count} secrets: {}", stored.join(", ")));
            if !skipped.is_empty() {
                ui.info(&format!(
                    "skipped {} existing: {}",
                    skipped.len(),
                    skipped.join(", ")
                ));
            }
            for name in short {
                ui.warn(&format!(
                    "{name} is shorter than {MIN_REDACTABLE} bytes; only its raw form can be redacted from output"
                ));
            }
            Ok(0)
        }
    }
}

/// Which of `names` exist already in the scope (one `list`, page after page).
fn existing_names(ep: &Endpoint, s: ScopeArg, names: &[String]) -> Result<Vec<String>, CtlError> {
    let list = ep.open()?.list_secrets(scope(s))?;
    let stored: std::collections::HashSet<&str> = list.iter().map(|s| s.name.as_str()).collect();
    Ok(names
        .iter()
        .filter(|n| stored.contains(n.as_str()))
        .cloned()
        .collect())
}

/// What an import would do, for `--dry-run`: nothing was sent.
fn print_plan(json: bool, stored: &[String], skipped: &[String], existing: &[String]) {
    let (create, overwrite): (Vec<&String>, Vec<&String>) =
        stored.iter().partition(|n| !existing.contains(n));
    if json {
        print_json(&json!({
            "dry_run": true, "create": create, "overwrite": overwrite, "skip": skipped,
        }));
        return;
    }
    let mut out = std::io::stdout().lock();
    for (verb, names) in [
        ("create", create),
        ("overwrite", overwrite),
        ("skip", skipped.iter().collect()),
    ] {
        for n in names {
            let _ = writeln!(out, "would {verb} {n}");
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

/// Whether a secret with this expiry has expired at `now` (the daemon
/// refuses it to runs from its expiry second on).
fn expired(expires: Option<u64>, now: u64) -> bool {
    expires.is_some_and(|e| e <= now)
}

fn print_list(json: bool, list: &[SecretInfo], now: u64) {
    if json {
        let v: Vec<_> = list
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "scope": match s.scope { WireScope::Own => "user", WireScope::System => "system" },
                    "version": s.version, "created": s.created, "updated": s.updated,
                    "description": s.description, "tags": s.tags, "expires": s.expires,
                    "expired": expired(s.expires, now),
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
            match s.expires {
                _ if expired(s.expires, now) => "EXPIRED".to_string(),
                Some(e) => date(e),
                None => "-".into(),
            },
            escape(s.description.as_deref().unwrap_or("")),
            tags
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// Reads a value: from a terminal, a no-echo prompt (twice when `confirm`,
/// i.e. for a secret's value); otherwise all of stdin, minus one trailing
/// newline.
pub(crate) fn read_value(prompt: &str, confirm: bool) -> Result<Zeroizing<Vec<u8>>, CtlError> {
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
        // Room for the largest value up front: a growing buffer would leave
        // unwiped copies of the value behind in freed memory.
        let mut buf = Zeroizing::new(Vec::with_capacity(MAX_VALUE + 2));
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
    // Room for the largest file up front (see `read_value`).
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_IMPORT_FILE as usize + 1));
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
