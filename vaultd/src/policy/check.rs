//! Small validators for names, paths, hashes and accounts used by [`super::compile`].
//!
//! Imports [`super::error`] and [`super::schema`], never `compile`: the
//! direction is `load` → `compile` → `check` → `error`.

use std::path::{Component, Path};

use nix::unistd::{Group, User};

use super::error::EntryError;
use super::schema::RawId;

pub fn is_normal_absolute(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

pub fn valid_rule_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The store's rule for secret names ([`crate::names::check_name`]).
pub fn valid_secret_name(name: &str) -> bool {
    crate::names::check_name(name).is_ok()
}

pub fn parse_sha256(hex: &str) -> Result<[u8; 32], EntryError> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return Err(EntryError::Sha256);
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| EntryError::Sha256)?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| EntryError::Sha256)?;
    }
    Ok(out)
}

/// Resolves user and group entries to ids, with a description for humans.
pub fn identities(
    users: &[RawId],
    groups: &[RawId],
) -> Result<(Vec<u32>, Vec<u32>, String), EntryError> {
    if users.is_empty() && groups.is_empty() {
        return Err(EntryError::Nobody);
    }
    let mut uids = Vec::new();
    let mut gids = Vec::new();
    let mut text = Vec::new();
    for u in users {
        let uid = match u {
            RawId::Id(id) => *id,
            RawId::Name(n) => User::from_name(n)
                .map_err(|e| EntryError::Lookup(n.clone(), e))?
                .ok_or_else(|| EntryError::UnknownUser(n.clone()))?
                .uid
                .as_raw(),
        };
        text.push(match u {
            RawId::Id(id) => format!("uid {id}"),
            RawId::Name(n) => format!("user {n} (uid {uid})"),
        });
        uids.push(uid);
    }
    for g in groups {
        let gid = match g {
            RawId::Id(id) => *id,
            RawId::Name(n) => Group::from_name(n)
                .map_err(|e| EntryError::Lookup(n.clone(), e))?
                .ok_or_else(|| EntryError::UnknownGroup(n.clone()))?
                .gid
                .as_raw(),
        };
        text.push(match g {
            RawId::Id(id) => format!("gid {id}"),
            RawId::Name(n) => format!("group {n} (gid {gid})"),
        });
        gids.push(gid);
    }
    Ok((uids, gids, text.join(", ")))
}
