//! The secret operations: set (create, upsert, rotate), import, list,
//! exists, mask, remove. Each checks the caller's scope and the request's
//! shape, records its decision through the audit gate before it touches the
//! vault, and never returns a value.

use aivault_proto::{
    Charset, ErrorCode, ImportConflict, MetaInput, Reply, SecretBytes, SecretInfo, SetMode,
    WireError, WireScope,
};
use serde_json::json;
use zeroize::Zeroizing;

use super::{Caller, Daemon, VaultState};
use crate::audit::gate::Entry;
use crate::store::{self, MetaUpdate, PutMode, Scope, SecretValue, StoreError, Vault};
use crate::wire_error::{err, sealed, store_err};

/// Most entries one `import` may carry.
pub const MAX_IMPORT: usize = 10_000;
/// Most tags on one secret, and the longest tag and description.
pub const MAX_TAGS: usize = 32;
pub const MAX_TAG_LEN: usize = 64;
pub const MAX_DESCRIPTION_LEN: usize = 1024;

/// Shortest and longest value `generate` draws.
pub const GENERATE_LEN: std::ops::RangeInclusive<u32> = 8..=4096;

fn alphabet(charset: Charset) -> Vec<u8> {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    match charset {
        Charset::Alnum => ALNUM.to_vec(),
        Charset::Hex => b"0123456789abcdef".to_vec(),
        Charset::Base64Url => [ALNUM, b"-_"].concat(),
        Charset::Printable => (b'!'..=b'~').collect(),
    }
}

/// `length` characters of `charset`, uniformly from the operating
/// system's random source: a byte is used only when it falls below the
/// largest multiple of the alphabet's size, so no character is favoured.
fn random_value(length: usize, charset: Charset) -> Result<Zeroizing<Vec<u8>>, getrandom::Error> {
    let alphabet = alphabet(charset);
    let n = alphabet.len();
    let limit = 256 - 256 % n;
    let mut out = Zeroizing::new(Vec::with_capacity(length));
    let mut pool = Zeroizing::new([0u8; 256]);
    while out.len() < length {
        getrandom::getrandom(&mut pool[..])?;
        for &b in pool.iter() {
            if out.len() == length {
                break;
            }
            if usize::from(b) < limit {
                out.push(alphabet[usize::from(b) % n]);
            }
        }
    }
    Ok(out)
}

/// The fixed-width mask shown for a value: 12 characters, the last 4 of the
/// value only when it is at least 16 bytes long and they are printable ASCII.
pub fn mask(value: &[u8]) -> String {
    if value.len() >= 16 {
        let tail = &value[value.len() - 4..];
        if tail.iter().all(|b| b.is_ascii_graphic()) {
            return format!("********{}", String::from_utf8_lossy(tail));
        }
    }
    "************".to_string()
}

/// The name as an audit record shows it: one longer than any valid name is
/// left out (the record's reason says it was too long), so that the
/// refusal of a huge name is still within what one record may hold.
fn recorded(name: &str) -> Option<&str> {
    (name.len() <= store::MAX_NAME_LEN).then_some(name)
}

/// Most bytes of names an import's record lists (valid names need no JSON
/// escaping): a large import must not make its record too large to write.
const RECORDED_IMPORT_NAMES: usize = 32 * 1024;

/// An import's record: how many entries, and their names as far as they fit
/// in [`RECORDED_IMPORT_NAMES`] (`names_left_out` counts the others).
fn import_detail(entries: &[(String, SecretBytes)]) -> serde_json::Value {
    let mut left = RECORDED_IMPORT_NAMES;
    let names: Vec<&str> = entries
        .iter()
        .map(|(n, _)| n.as_str())
        .take_while(|n| {
            let fits = n.len() <= left;
            left = left.saturating_sub(n.len());
            fits
        })
        .collect();
    let mut detail = json!({ "names": names, "count": entries.len() });
    if names.len() < entries.len() {
        detail["names_left_out"] = json!(entries.len() - names.len());
    }
    detail
}

pub(super) fn info(meta: store::SecretMeta) -> SecretInfo {
    SecretInfo {
        name: meta.name,
        scope: match meta.scope {
            Scope::System => WireScope::System,
            Scope::User(_) => WireScope::Own,
        },
        version: meta.version,
        created: meta.created,
        updated: meta.updated,
        description: meta.description,
        tags: meta.tags,
        expires: meta.expires,
    }
}

pub(super) fn check_meta(meta: &MetaInput) -> Result<(), WireError> {
    let bad = |m: &str| Err(err(ErrorCode::BadRequest, m.to_string()));
    if meta
        .description
        .as_ref()
        .is_some_and(|d| d.len() > MAX_DESCRIPTION_LEN)
    {
        return bad("description is longer than 1024 bytes");
    }
    if meta.tags.len() > MAX_TAGS {
        return bad("at most 32 tags");
    }
    if meta
        .tags
        .iter()
        .any(|t| t.is_empty() || t.len() > MAX_TAG_LEN || t.chars().any(char::is_control))
    {
        return bad("tags must be 1 to 64 printable characters");
    }
    Ok(())
}

pub(super) fn check_value(value: &[u8]) -> Result<(), WireError> {
    if value.is_empty() {
        return Err(err(ErrorCode::InvalidValue, "empty values are not stored"));
    }
    if value.len() > store::MAX_VALUE_LEN {
        return Err(err(
            ErrorCode::InvalidValue,
            format!("values are limited to {} bytes", store::MAX_VALUE_LEN),
        ));
    }
    Ok(())
}

/// One `set` request, as decoded.
#[derive(Debug)]
pub struct SetRequest<'a> {
    pub op: &'a str,
    pub scope: WireScope,
    pub name: &'a str,
    pub value: SecretBytes,
    pub meta: MetaInput,
    pub mode: SetMode,
}

/// One `generate` request, as decoded.
#[derive(Debug)]
pub struct GenerateRequest<'a> {
    pub op: &'a str,
    pub scope: WireScope,
    pub name: &'a str,
    pub length: u32,
    pub charset: Charset,
    pub meta: MetaInput,
    pub mode: SetMode,
}

impl Daemon {
    /// Draws a value and stores it as `set` would; the value goes only to
    /// the vault, never into the reply or the audit record.
    pub(super) fn generate(
        &self,
        caller: &Caller,
        req: GenerateRequest<'_>,
    ) -> Result<Reply, WireError> {
        let entry = || {
            Entry::new(caller, req.op)
                .scope(req.scope)
                .name(recorded(req.name))
        };
        if !GENERATE_LEN.contains(&req.length) {
            return Err(self.audit.deny(
                entry(),
                err(
                    ErrorCode::BadRequest,
                    format!(
                        "a generated value is {} to {} characters long",
                        GENERATE_LEN.start(),
                        GENERATE_LEN.end()
                    ),
                ),
            ));
        }
        let mut value = random_value(req.length as usize, req.charset).map_err(|e| {
            tracing::error!(error = %e, "random source failed");
            self.audit.failed(
                entry(),
                err(ErrorCode::Internal, "the random source failed"),
            )
        })?;
        self.set(
            caller,
            SetRequest {
                op: req.op,
                scope: req.scope,
                name: req.name,
                value: SecretBytes::new(std::mem::take(&mut *value)),
                meta: req.meta,
                mode: req.mode,
            },
        )
    }

    pub(super) fn list(
        &self,
        caller: &Caller,
        op: &str,
        scope: WireScope,
    ) -> Result<Reply, WireError> {
        self.read_op(caller, op, scope, None, |v, s| {
            Ok(Reply::Secrets(v.list(s).into_iter().map(info).collect()))
        })
    }

    pub(super) fn exists(
        &self,
        caller: &Caller,
        op: &str,
        scope: WireScope,
        name: &str,
    ) -> Result<Reply, WireError> {
        self.read_op(caller, op, scope, Some(name), |v, s| {
            Ok(Reply::Exists(v.meta(s, name).is_some()))
        })
    }

    pub(super) fn masked(
        &self,
        caller: &Caller,
        op: &str,
        scope: WireScope,
        name: &str,
    ) -> Result<Reply, WireError> {
        self.read_op(caller, op, scope, Some(name), |v, s| {
            let value = v.decrypt(s, name).map_err(|e| store_err(&e))?;
            Ok(Reply::Masked(mask(value.as_bytes())))
        })
    }

    /// Shared path of the read-only secret operations.
    pub(super) fn read_op(
        &self,
        caller: &Caller,
        op: &str,
        scope: WireScope,
        name: Option<&str>,
        f: impl FnOnce(&Vault, Scope) -> Result<Reply, WireError>,
    ) -> Result<Reply, WireError> {
        let guard = self.vault.read().unwrap_or_else(|p| p.into_inner());
        let VaultState::Open(vault) = &*guard else {
            return Err(sealed());
        };
        let entry = || {
            Entry::new(caller, op)
                .scope(scope)
                .name(name.and_then(recorded))
        };
        let s = self
            .resolve(caller, scope)
            .map_err(|e| self.audit.deny(entry(), e))?;
        if let Some(n) = name {
            store::validate_name(n).map_err(|e| self.audit.deny(entry(), store_err(&e)))?;
        }
        self.audit.record(entry())?;
        let result = f(vault, s);
        if let Err(e) = &result {
            if e.code == ErrorCode::Tampered {
                tracing::error!(op, name, "stored record failed authentication");
                self.audit.failed(entry(), e.clone());
            }
        }
        result
    }

    pub(super) fn set(&self, caller: &Caller, req: SetRequest<'_>) -> Result<Reply, WireError> {
        let SetRequest {
            op,
            scope,
            name,
            value,
            meta,
            mode,
        } = req;
        // A read lock: the vault serializes its own writes, and reads
        // never wait for them.
        let guard = self.vault.read().unwrap_or_else(|p| p.into_inner());
        let VaultState::Open(vault) = &*guard else {
            return Err(sealed());
        };
        let entry = || Entry::new(caller, op).scope(scope).name(recorded(name));
        let deny = |e: WireError| self.audit.deny(entry(), e);
        let s = self.resolve(caller, scope).map_err(deny)?;
        store::validate_name(name).map_err(|e| deny(store_err(&e)))?;
        check_value(value.as_bytes()).map_err(deny)?;
        check_meta(&meta).map_err(deny)?;
        let exists = vault.meta(s, name).is_some();
        match mode {
            SetMode::Create if exists => {
                return Err(deny(store_err(&StoreError::AlreadyExists {
                    name: name.into(),
                })))
            }
            SetMode::Rotate if !exists => {
                return Err(deny(err(ErrorCode::NotFound, "no such secret")))
            }
            _ => {}
        }
        let (mode_label, put_mode) = match mode {
            SetMode::Create => ("create", PutMode::Create),
            SetMode::Upsert => ("upsert", PutMode::Upsert),
            SetMode::Rotate => ("rotate", PutMode::Rotate),
        };
        self.audit
            .record(entry().detail(json!({ "mode": mode_label })))?;
        let update = MetaUpdate {
            description: meta.description,
            tags: meta.tags,
            expires: meta.expires,
        };
        let value = SecretValue::new(value.into_inner().to_vec());
        match vault.put(s, name, &value, update, put_mode) {
            Ok(version) => Ok(Reply::Done {
                version: Some(version),
            }),
            Err(e) => Err(self.store_failed(entry(), op, &e)),
        }
    }

    /// Records that an allowed vault update failed; returns the wire error.
    pub(super) fn store_failed(&self, entry: Entry<'_>, op: &str, e: &StoreError) -> WireError {
        tracing::error!(error = %e, op, "vault update failed");
        self.audit.failed(entry, store_err(e))
    }

    pub(super) fn import(
        &self,
        caller: &Caller,
        op: &str,
        scope: WireScope,
        mut entries: Vec<(String, SecretBytes)>,
        conflict: ImportConflict,
        meta: MetaInput,
    ) -> Result<Reply, WireError> {
        // A read lock: the vault serializes its own writes, and reads
        // never wait for them.
        let guard = self.vault.read().unwrap_or_else(|p| p.into_inner());
        let VaultState::Open(vault) = &*guard else {
            return Err(sealed());
        };
        let entry = || Entry::new(caller, op).scope(scope);
        let deny = |e: WireError| self.audit.deny(entry(), e);
        let s = self.resolve(caller, scope).map_err(deny)?;
        if entries.is_empty() || entries.len() > MAX_IMPORT {
            return Err(deny(err(
                ErrorCode::BadRequest,
                format!("an import carries 1 to {MAX_IMPORT} entries"),
            )));
        }
        check_meta(&meta).map_err(deny)?;
        let mut seen = std::collections::HashSet::with_capacity(entries.len());
        for (name, value) in &entries {
            store::validate_name(name).map_err(|e| deny(store_err(&e)))?;
            check_value(value.as_bytes())
                .map_err(|e| deny(err(e.code, format!("{name}: {}", e.message))))?;
            // One value per name: a later duplicate would silently replace
            // an earlier one of the same import.
            if !seen.insert(name.as_str()) {
                return Err(deny(err(
                    ErrorCode::BadRequest,
                    format!("{name} appears more than once in the import"),
                )));
            }
        }
        let existing: Vec<&str> = entries
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| vault.meta(s, n).is_some())
            .collect();
        let skipped = existing.len();
        if conflict == ImportConflict::Error && skipped > 0 {
            let shown: Vec<&str> = existing.iter().copied().take(10).collect();
            let more = if skipped > shown.len() { ", …" } else { "" };
            return Err(deny(err(
                ErrorCode::AlreadyExists,
                format!(
                    "{skipped} of the names exist already ({}{more}); nothing was imported (choose --conflict skip or overwrite)",
                    shown.join(", ")
                ),
            )));
        }
        let mut detail = import_detail(&entries);
        detail["conflict"] = json!(match conflict {
            ImportConflict::Error => "error",
            ImportConflict::Skip => "skip",
            ImportConflict::Overwrite => "overwrite",
        });
        if conflict == ImportConflict::Skip {
            detail["skipped"] = json!(skipped);
            entries.retain(|(n, _)| vault.meta(s, n).is_none());
        }
        self.audit.record(entry().detail(detail))?;
        if entries.is_empty() {
            return Ok(Reply::Imported { count: 0 });
        }
        let values = entries
            .into_iter()
            .map(|(n, v)| (n, SecretValue::new(v.into_inner().to_vec())))
            .collect();
        let update = MetaUpdate {
            description: meta.description,
            tags: meta.tags,
            expires: meta.expires,
        };
        // Decided again inside the store's transaction: a name created
        // since the check above is refused or skipped, never overwritten.
        let on_existing = match conflict {
            ImportConflict::Error => store::OnExisting::Refuse,
            ImportConflict::Skip => store::OnExisting::Skip,
            ImportConflict::Overwrite => store::OnExisting::Replace,
        };
        match vault.import(s, values, on_existing, &update) {
            Ok(count) => Ok(Reply::Imported {
                count: count as u32,
            }),
            Err(e) => Err(self.store_failed(entry(), op, &e)),
        }
    }

    pub(super) fn remove(
        &self,
        caller: &Caller,
        op: &str,
        scope: WireScope,
        name: &str,
    ) -> Result<Reply, WireError> {
        // A read lock: the vault serializes its own writes, and reads
        // never wait for them.
        let guard = self.vault.read().unwrap_or_else(|p| p.into_inner());
        let VaultState::Open(vault) = &*guard else {
            return Err(sealed());
        };
        let entry = || Entry::new(caller, op).scope(scope).name(recorded(name));
        let deny = |e: WireError| self.audit.deny(entry(), e);
        let s = self.resolve(caller, scope).map_err(deny)?;
        store::validate_name(name).map_err(|e| deny(store_err(&e)))?;
        if vault.meta(s, name).is_none() {
            return Err(deny(err(ErrorCode::NotFound, "no such secret")));
        }
        self.audit.record(entry())?;
        match vault.remove(s, name) {
            Ok(()) => Ok(Reply::Done { version: None }),
            Err(e) => Err(self.store_failed(entry(), op, &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_import_record_lists_names_within_its_bound() {
        let value = || SecretBytes::new(b"v".to_vec());
        let few: Vec<_> = ["A", "B"]
            .iter()
            .map(|n| (n.to_string(), value()))
            .collect();
        assert_eq!(
            import_detail(&few),
            json!({ "names": ["A", "B"], "count": 2 })
        );
        let name = "N".repeat(100);
        let many: Vec<_> = (0..2000).map(|_| (name.clone(), value())).collect();
        let d = import_detail(&many);
        let shown = RECORDED_IMPORT_NAMES / 100;
        assert_eq!(d["names"].as_array().map(Vec::len), Some(shown));
        assert_eq!(d["count"], 2000);
        assert_eq!(d["names_left_out"], 2000 - shown);
    }

    #[test]
    fn generated_values_have_the_length_and_charset_asked_for() {
        for (charset, n) in [
            (Charset::Alnum, 62),
            (Charset::Hex, 16),
            (Charset::Base64Url, 64),
            (Charset::Printable, 94),
        ] {
            let allowed = alphabet(charset);
            assert_eq!(allowed.len(), n);
            let v = random_value(4096, charset).unwrap();
            assert_eq!(v.len(), 4096);
            assert!(v.iter().all(|b| allowed.contains(b)), "{charset:?}");
            // 4096 draws from at most 94 characters miss one with
            // negligible probability.
            assert!(allowed.iter().all(|c| v.contains(c)), "{charset:?}");
        }
        assert_ne!(
            random_value(32, Charset::Alnum).unwrap(),
            random_value(32, Charset::Alnum).unwrap()
        );
    }

    #[test]
    fn mask_is_fixed_width_and_reveals_at_most_four() {
        assert_eq!(mask(b"short"), "************");
        assert_eq!(mask(b"0123456789abcdefWXYZ"), "********WXYZ");
        assert_eq!(mask(b"0123456789abcdef").len(), 12);
        assert_eq!(mask("0123456789abcdé".as_bytes()), "************");
    }
}
