//! `secret.backup` and `secret.restore`: encrypted backups ([`crate::backup`])
//! built and opened here, on top of the vault's public operations. The
//! client only ever stores and sends the opaque blob.
//!
//! * A user backs up its own scope; root with `all` backs up every scope.
//! * A backup records whose it is, authenticated with the rest: a user may
//!   restore only a backup of its own uid, and only into its own scope;
//!   root restores any backup into the scopes it records.
//! * A restore checks the whole backup (authentication, names, values,
//!   metadata, conflicts) before it writes anything; `verify_only` stops
//!   there. The values of each scope are then stored in one atomic write;
//!   metadata (description, tags, expiry) follows secret by secret.

use aivault_proto::{
    ErrorCode, ImportConflict, MetaInput, Reply, RestoreReport, WireError, WireScope,
};
use serde_json::json;
use zeroize::Zeroizing;

use super::secrets::{check_meta, check_value};
use super::{Caller, Daemon, VaultState};
use crate::audit::gate::Entry;
use crate::backup::{self, BackupError, BackupScope, Holds};
use crate::store::{self, MetaUpdate, PutMode, Scope, SecretValue};
use crate::wire_error::{err, sealed, store_err};

/// Largest backup: it travels in one frame, with room for the envelope.
pub const MAX_BACKUP: usize = aivault_proto::MAX_FRAME - 1024;
/// Most secrets one backup holds (as for an import).
const MAX_ENTRIES: usize = super::MAX_IMPORT;
/// Most bytes of names a record lists (see the import record).
const RECORDED_NAMES: usize = 32 * 1024;

fn to_store(s: BackupScope) -> Scope {
    match s {
        BackupScope::User(uid) => Scope::User(uid),
        BackupScope::System => Scope::System,
    }
}

fn to_backup(s: Scope) -> BackupScope {
    match s {
        Scope::User(uid) => BackupScope::User(uid),
        Scope::System => BackupScope::System,
    }
}

fn label(s: BackupScope) -> String {
    match s {
        BackupScope::User(uid) => format!("uid {uid}"),
        BackupScope::System => "system".into(),
    }
}

/// A record's list of names, bounded like an import's.
fn names_detail<'a>(names: impl Iterator<Item = (BackupScope, &'a str)>) -> serde_json::Value {
    let mut left = RECORDED_NAMES;
    let mut shown = Vec::new();
    let mut count = 0usize;
    for (scope, name) in names {
        count += 1;
        if name.len() + 8 <= left {
            left -= name.len() + 8;
            shown.push(match scope {
                BackupScope::User(uid) => json!({ "uid": uid, "name": name }),
                BackupScope::System => json!({ "scope": "system", "name": name }),
            });
        }
    }
    let mut d = json!({ "count": count, "secrets": shown });
    if shown.len() < count {
        d["secrets_left_out"] = json!(count - shown.len());
    }
    d
}

fn backup_err(e: &BackupError) -> WireError {
    match e {
        BackupError::Random | BackupError::Encode => err(ErrorCode::Internal, e.to_string()),
        _ => err(ErrorCode::BadRequest, e.to_string()),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Daemon {
    pub(super) fn backup(&self, caller: &Caller, op: &str, all: bool) -> Result<Reply, WireError> {
        let guard = self.vault.read().unwrap_or_else(|p| p.into_inner());
        let VaultState::Open(vault) = &*guard else {
            return Err(sealed());
        };
        let base = || {
            Entry::new(caller, op).scope(if all {
                WireScope::System
            } else {
                WireScope::Own
            })
        };
        if all {
            self.require_root(caller, op, "only root can back up the whole vault (--all)")?;
        }
        let scopes = if all {
            vault.scopes()
        } else {
            vec![Scope::User(caller.uid)]
        };
        let mut entries = Vec::new();
        for scope in scopes {
            for meta in vault.list(scope) {
                let value = vault.decrypt(scope, &meta.name).map_err(|e| {
                    tracing::error!(op, name = meta.name, "stored record failed authentication");
                    self.audit.failed(base(), store_err(&e))
                })?;
                entries.push(backup::Entry {
                    scope: to_backup(scope),
                    name: meta.name,
                    description: meta.description,
                    tags: meta.tags,
                    expires: meta.expires,
                    value: backup::Value(Zeroizing::new(value.as_bytes().to_vec())),
                });
            }
        }
        if entries.is_empty() {
            return Err(self.audit.deny(
                base(),
                err(ErrorCode::NotFound, "there are no secrets to back up"),
            ));
        }
        let holds = if all {
            Holds::All
        } else {
            Holds::User(caller.uid)
        };
        let root = self.backup_root.read().unwrap_or_else(|p| p.into_inner());
        let Some(root) = root.as_ref() else {
            return Err(sealed());
        };
        let blob = backup::seal(root, holds, vault.vault_id(), now(), &entries)
            .map_err(|e| self.audit.failed(base(), backup_err(&e)))?;
        if blob.len() > MAX_BACKUP {
            return Err(self.audit.deny(
                base(),
                err(
                    ErrorCode::BadRequest,
                    format!(
                        "the backup would be {} bytes; at most {MAX_BACKUP} fit in one reply",
                        blob.len()
                    ),
                ),
            ));
        }
        let detail = names_detail(entries.iter().map(|e| (e.scope, e.name.as_str())));
        self.audit.record(base().detail(detail))?;
        Ok(Reply::Backup {
            count: entries.len() as u32,
            blob,
        })
    }

    pub(super) fn restore(
        &self,
        caller: &Caller,
        op: &str,
        blob: &[u8],
        verify_only: bool,
        conflict: ImportConflict,
    ) -> Result<Reply, WireError> {
        // A read lock, as for an import: the store serialises its own
        // writes, and other users' runs and reads do not wait for a restore.
        let guard = self.vault.read().unwrap_or_else(|p| p.into_inner());
        let VaultState::Open(vault) = &*guard else {
            return Err(sealed());
        };
        // `System` in the records once the header says the backup holds
        // the whole vault.
        let scope = std::cell::Cell::new(WireScope::Own);
        let base = || Entry::new(caller, op).scope(scope.get());
        let deny = |e: WireError| self.audit.deny(base(), e);
        if blob.len() > MAX_BACKUP {
            return Err(deny(err(ErrorCode::BadRequest, "too large to be a backup")));
        }
        // Whose it is, from the header, before anything is decrypted.
        let (header, _) = backup::read_header(blob).map_err(|e| deny(backup_err(&e)))?;
        if header.holds == Holds::All {
            scope.set(WireScope::System);
        }
        if !caller.is_root() {
            match header.holds {
                Holds::User(uid) if uid == caller.uid => {}
                Holds::User(uid) => {
                    return Err(deny(err(
                        ErrorCode::PermissionDenied,
                        format!("this backup holds the secrets of uid {uid}; only that account or root can restore it"),
                    )))
                }
                Holds::All => {
                    return Err(deny(err(
                        ErrorCode::PermissionDenied,
                        "this is a backup of the whole vault; only root can restore it",
                    )))
                }
            }
        }
        let (header, entries) = {
            let root = self.backup_root.read().unwrap_or_else(|p| p.into_inner());
            let Some(root) = root.as_ref() else {
                return Err(sealed());
            };
            backup::open(root, blob).map_err(|e| deny(backup_err(&e)))?
        };
        if entries.len() > MAX_ENTRIES {
            return Err(deny(err(
                ErrorCode::BadRequest,
                format!("a restore carries at most {MAX_ENTRIES} secrets"),
            )));
        }
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        for e in &entries {
            let own =
                matches!((header.holds, e.scope), (Holds::User(u), BackupScope::User(v)) if u == v);
            if !own && header.holds != Holds::All {
                return Err(deny(err(
                    ErrorCode::BadRequest,
                    "the backup holds a secret outside the scope it names",
                )));
            }
            let at = |m: &str| format!("{} {}: {m}", label(e.scope), e.name);
            store::validate_name(&e.name).map_err(|x| deny(store_err(&x)))?;
            check_value(&e.value.0).map_err(|x| deny(err(x.code, at(&x.message))))?;
            let meta = MetaInput {
                description: e.description.clone(),
                tags: e.tags.clone(),
                expires: e.expires,
            };
            check_meta(&meta).map_err(|x| deny(err(x.code, at(&x.message))))?;
            if !seen.insert((e.scope, e.name.as_str())) {
                return Err(deny(err(ErrorCode::BadRequest, at("appears twice"))));
            }
        }
        let exists = |e: &backup::Entry| vault.meta(to_store(e.scope), &e.name).is_some();
        let existing: Vec<String> = entries
            .iter()
            .filter(|e| exists(e))
            .map(|e| format!("{} {}", label(e.scope), e.name))
            .collect();
        if conflict == ImportConflict::Error && !existing.is_empty() {
            let shown: Vec<&str> = existing.iter().take(10).map(String::as_str).collect();
            let more = if existing.len() > shown.len() {
                ", …"
            } else {
                ""
            };
            return Err(deny(err(
                ErrorCode::AlreadyExists,
                format!(
                    "{} of the secrets exist already ({}{more}); nothing was restored (choose --conflict skip or overwrite)",
                    existing.len(),
                    shown.join(", ")
                ),
            )));
        }
        let mut scopes: Vec<BackupScope> = entries.iter().map(|e| e.scope).collect();
        scopes.sort();
        scopes.dedup();
        let skip = conflict == ImportConflict::Skip;
        let report = RestoreReport {
            verify_only,
            created: (entries.len() - existing.len()) as u32,
            overwritten: if skip { 0 } else { existing.len() as u32 },
            skipped: if skip { existing.len() as u32 } else { 0 },
            scopes: scopes.len() as u32,
        };
        let mut detail = names_detail(entries.iter().map(|e| (e.scope, e.name.as_str())));
        detail["verify_only"] = json!(verify_only);
        detail["conflict"] = json!(match conflict {
            ImportConflict::Error => "error",
            ImportConflict::Skip => "skip",
            ImportConflict::Overwrite => "overwrite",
        });
        detail["created"] = json!(report.created);
        detail["overwritten"] = json!(report.overwritten);
        detail["skipped"] = json!(report.skipped);
        self.audit.record(base().detail(detail))?;
        if verify_only {
            return Ok(Reply::Restored(report));
        }
        let entries: Vec<backup::Entry> = entries
            .into_iter()
            .filter(|e| !(skip && exists(e)))
            .collect();
        for scope in scopes {
            let values: Vec<(String, SecretValue)> = entries
                .iter()
                .filter(|e| e.scope == scope)
                .map(|e| (e.name.clone(), SecretValue::new(e.value.0.to_vec())))
                .collect();
            vault
                .put_many(to_store(scope), values)
                .map_err(|e| self.store_failed(base(), op, &e))?;
        }
        for e in entries
            .iter()
            .filter(|e| e.description.is_some() || !e.tags.is_empty() || e.expires.is_some())
        {
            let update = MetaUpdate {
                description: e.description.clone(),
                tags: e.tags.clone(),
                expires: e.expires,
            };
            let value = SecretValue::new(e.value.0.to_vec());
            vault
                .put(to_store(e.scope), &e.name, &value, update, PutMode::Rotate)
                .map_err(|x| self.store_failed(base(), op, &x))?;
        }
        Ok(Reply::Restored(report))
    }
}
