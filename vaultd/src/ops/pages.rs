//! The paged lists (protocol 3): secrets, audit records, the policy's
//! commands and its explanation, each a page at a time, so that no answer
//! outgrows a frame however long the list is.
//!
//! A page is filled until the client's `max_items` or `max_bytes` (at most
//! [`MAX_PAGE_BYTES`] of encoded items) would be passed; `next` is then the
//! cursor to ask for the rest. The daemon keeps no state for a client
//! between pages: secrets resume after the last name sent, audit records
//! before the last sequence number sent, the policy lists at an index
//! together with a fingerprint of the whole list, so that a list that
//! changed in between is started again (`restarted`) instead of mixed. (The
//! one thing kept is the last explanation a first page of `policy check`
//! made, which its later pages are cut from: loading the policy judges
//! every rule's command again, too slow to repeat per page.) A single item
//! larger than a page can carry is refused with a `Busy` error naming it.

use aivault_proto::{ErrorCode, PageRequest, PolicyPage, Reply, WireError, WireScope, MAX_FRAME};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{secrets::info, Caller, Daemon};
use crate::audit::gate::Entry;
use crate::audit::AuditLog;
use crate::policy::{Policy, Who};
use crate::store;
use crate::wire_error::{err, sealed};

/// Most bytes of encoded items on one page: a frame, less room for the rest
/// of the reply (its id, the cursor).
pub const MAX_PAGE_BYTES: usize = MAX_FRAME - 4 * 1024;

/// Most items on one page when the client leaves it to the daemon.
pub const MAX_PAGE_ITEMS: usize = 10_000;

/// Secrets read from the vault at a time while a page is filled.
const SECRETS_CHUNK: usize = 256;

/// What is left of a page's allowance.
struct Budget {
    items: usize,
    bytes: usize,
    taken: usize,
}

impl Budget {
    fn new(page: &PageRequest) -> Self {
        let items = match page.max_items as usize {
            0 => MAX_PAGE_ITEMS,
            n => n.min(MAX_PAGE_ITEMS),
        };
        let bytes = match page.max_bytes as usize {
            0 => MAX_PAGE_BYTES,
            n => n.min(MAX_PAGE_BYTES),
        };
        Budget {
            items,
            bytes,
            taken: 0,
        }
    }

    /// Takes an item of `size` encoded bytes if it fits. The first item of
    /// a page always fits within a page's bytes unless it is larger than
    /// any page may be: then `what` names it in the error. (A client's own
    /// lower `max_bytes` still gets one item per page.)
    fn take(&mut self, size: usize, what: impl FnOnce() -> String) -> Result<bool, WireError> {
        if self.items == 0 {
            return Ok(false);
        }
        if size > self.bytes {
            if self.taken > 0 {
                return Ok(false);
            }
            if size > MAX_PAGE_BYTES {
                return Err(too_large(&what(), size));
            }
        }
        self.items -= 1;
        self.bytes = self.bytes.saturating_sub(size);
        self.taken += 1;
        Ok(true)
    }
}

/// The error for one item that no page can carry.
fn too_large(what: &str, size: usize) -> WireError {
    err(
        ErrorCode::Busy,
        format!(
            "{what} is {size} bytes, more than one reply can carry ({MAX_PAGE_BYTES} bytes); it cannot be listed"
        ),
    )
}

/// Bytes `item` takes in a postcard list.
fn encoded_len<T: Serialize>(item: &T) -> usize {
    postcard::to_stdvec(item).map_or(usize::MAX, |v| v.len())
}

/// Bytes a string takes in a postcard list (its length as a varint, then it).
fn string_len(s: &str) -> usize {
    let mut n = s.len();
    let mut prefix = 1;
    while n >= 0x80 {
        n >>= 7;
        prefix += 1;
    }
    prefix + s.len()
}

fn bad_cursor() -> WireError {
    err(
        ErrorCode::BadRequest,
        "the page cursor is not one this daemon gave out",
    )
}

impl Daemon {
    pub(super) fn list_page(
        &self,
        caller: &Caller,
        op: &str,
        scope: WireScope,
        page: PageRequest,
    ) -> Result<Reply, WireError> {
        if let Some(c) = &page.cursor {
            // A cursor is the last name of a page: never longer than a name.
            if c.len() > store::MAX_NAME_LEN {
                return Err(bad_cursor());
            }
        }
        self.read_op(caller, op, scope, None, |v, s| {
            let mut budget = Budget::new(&page);
            let mut secrets = Vec::new();
            let mut after = page.cursor.clone();
            let mut full = false;
            'fill: loop {
                let chunk = v.list_after(s, after.as_deref(), SECRETS_CHUNK);
                let last_chunk = chunk.len() < SECRETS_CHUNK;
                for meta in chunk {
                    let item = info(meta);
                    let name = item.name.clone();
                    if !budget.take(encoded_len(&item), || format!("secret {name}"))? {
                        full = true;
                        break 'fill;
                    }
                    after = Some(name);
                    secrets.push(item);
                }
                if last_chunk {
                    break;
                }
            }
            // A page that ends exactly with the list has no next one.
            let more = full || v.list_after(s, after.as_deref(), 1).len() == 1;
            let next = if more && !secrets.is_empty() {
                after
            } else {
                None
            };
            Ok(Reply::SecretsPage { secrets, next })
        })
    }

    pub(super) fn audit_page(
        &self,
        caller: &Caller,
        op: &str,
        limit: u32,
        page: PageRequest,
    ) -> Result<Reply, WireError> {
        if self.is_sealed() {
            return Err(sealed());
        }
        let before = match &page.cursor {
            None => None,
            Some(c) => Some(c.parse::<u64>().map_err(|_| bad_cursor())?),
        };
        let filter = (!caller.is_root()).then_some(caller.uid);
        let limit = (limit as usize).clamp(1, 10_000);
        let mut budget = Budget::new(&page);
        let want = limit.min(budget.items);
        self.audit.record(
            Entry::new(caller, op).detail(json!({ "limit": limit, "page": before.is_some() })),
        )?;
        let read = match before {
            None => AuditLog::read(&self.cfg.audit_log, filter, want),
            Some(b) => AuditLog::read_before(&self.cfg.audit_log, filter, want, b),
        }
        .map_err(|_| err(ErrorCode::Internal, "the audit log could not be read"))?;
        let exhausted = read.len() < want;
        // Newest first into the page, so a full page leaves the older ones
        // for the next.
        let mut records = Vec::new();
        let mut oldest = None;
        let mut full = false;
        for r in read.iter().rev() {
            let line = r.to_string();
            let seq = r.get("seq").and_then(serde_json::Value::as_u64);
            let what = || format!("audit record {}", seq.unwrap_or(0));
            if !budget.take(string_len(&line), what)? {
                full = true;
                break;
            }
            oldest = seq;
            records.push(line);
        }
        records.reverse();
        // More to send: this page was cut short, or it gave all it read and
        // the log may hold older ones the client still wants.
        let more = full || (!exhausted && want < limit);
        let next = match oldest {
            Some(seq) if more && seq > 0 => Some(seq.to_string()),
            _ => None,
        };
        Ok(Reply::AuditPage { records, next })
    }

    pub(super) fn policy_show_page(
        &self,
        caller: &Caller,
        page: PageRequest,
    ) -> Result<Reply, WireError> {
        let who = Who {
            uid: caller.uid,
            gid: caller.gid,
            groups: crate::sys::account_groups(caller.uid, caller.gid),
        };
        let policy = self.policy();
        // The commands, then the HTTP capabilities (a `capability` member).
        let mut items: Vec<String> = policy
            .commands_for(&who)
            .iter()
            .map(|c| serde_json::to_string(c).unwrap_or_default())
            .collect();
        items.extend(
            policy
                .capability_summaries_for(&who)
                .iter()
                .map(|c| serde_json::to_string(c).unwrap_or_default()),
        );
        policy_page(&items, &page).map(Reply::PolicyPage)
    }

    pub(super) fn policy_check_page(
        &self,
        caller: &Caller,
        page: PageRequest,
    ) -> Result<Reply, WireError> {
        if !caller.is_root() {
            return Err(err(
                ErrorCode::PermissionDenied,
                "only root can check the policy",
            ));
        }
        // A later page of the explanation the first page gave: served from
        // that one, not re-read (loading judges every rule's command anew),
        // so that the pages make one consistent report.
        if let Some(cached) = self.check_pages.get(page.cursor.as_deref()) {
            return policy_page(&cached, &page).map(Reply::PolicyPage);
        }
        match Policy::load(&self.cfg.policy_dir) {
            Ok(p) => {
                let items: Vec<String> = p
                    .explain()
                    .iter()
                    .map(|r| serde_json::to_string(r).unwrap_or_default())
                    .collect();
                let reply = policy_page(&items, &page).map(Reply::PolicyPage);
                self.check_pages.put(items);
                reply
            }
            Err(e) => Ok(Reply::PolicyPage(PolicyPage {
                ok: false,
                error: Some(e.to_string()),
                items: Vec::new(),
                next: None,
                restarted: page.cursor.is_some(),
            })),
        }
    }
}

/// The policy explanation last given out by a first page, for its later
/// pages (one, however many clients: it is root's, and rare).
#[derive(Debug, Default)]
pub struct CheckPages(std::sync::Mutex<Option<(String, std::sync::Arc<Vec<String>>)>>);

impl CheckPages {
    /// The explanation `cursor` continues, if it is the one kept.
    fn get(&self, cursor: Option<&str>) -> Option<std::sync::Arc<Vec<String>>> {
        let (_, print) = cursor?.split_once(':')?;
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.as_ref()
            .filter(|(p, _)| p == print)
            .map(|(_, items)| items.clone())
    }

    fn put(&self, items: Vec<String>) {
        let print = fingerprint(&items);
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((print, std::sync::Arc::new(items)));
    }
}

/// The whole list's fingerprint: pages of one list carry it in their
/// cursors.
fn fingerprint(items: &[String]) -> String {
    let mut h = Sha256::new();
    for i in items {
        h.update((i.len() as u64).to_be_bytes());
        h.update(i.as_bytes());
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The page of `items` that `page` asks for. A cursor is
/// `<index>:<fingerprint>`; one of another list starts it again.
fn policy_page(items: &[String], page: &PageRequest) -> Result<PolicyPage, WireError> {
    let print = fingerprint(items);
    let (start, restarted) = match &page.cursor {
        None => (0, false),
        Some(c) => {
            let (index, fp) = c.split_once(':').ok_or_else(bad_cursor)?;
            let index: usize = index.parse().map_err(|_| bad_cursor())?;
            if fp == print && index <= items.len() {
                (index, false)
            } else {
                (0, true)
            }
        }
    };
    let mut budget = Budget::new(page);
    let mut end = start;
    for (i, item) in items.iter().enumerate().skip(start) {
        if !budget.take(string_len(item), || format!("policy entry {}", i + 1))? {
            break;
        }
        end = i + 1;
    }
    let next = (end < items.len()).then(|| format!("{end}:{print}"));
    Ok(PolicyPage {
        ok: true,
        error: None,
        items: items[start..end].to_vec(),
        next,
        restarted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(cursor: Option<String>, max_items: u32, max_bytes: u32) -> PageRequest {
        PageRequest {
            cursor,
            max_items,
            max_bytes,
        }
    }

    #[test]
    fn policy_pages_cover_the_list_once_and_restart_when_it_changes() {
        let items: Vec<String> = (0..25).map(|i| format!("{{\"rule\":\"r{i}\"}}")).collect();
        let mut got = Vec::new();
        let mut cursor = None;
        loop {
            let p = policy_page(&items, &page(cursor, 10, 0)).unwrap();
            assert!(!p.restarted);
            got.extend(p.items);
            match p.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        assert_eq!(got, items);
        let first = policy_page(&items, &page(None, 10, 0)).unwrap();
        let mut changed = items;
        changed[3].push(' ');
        let again = policy_page(&changed, &page(first.next, 10, 0)).unwrap();
        assert!(again.restarted);
        assert_eq!(again.items, changed[..10].to_vec());
    }

    #[test]
    fn a_page_keeps_to_its_bytes_and_an_item_too_large_for_any_page_is_an_error() {
        let items: Vec<String> = (0..10).map(|_| "x".repeat(1000)).collect();
        let p = policy_page(&items, &page(None, 0, 2500)).unwrap();
        assert_eq!(p.items.len(), 2);
        // A budget below one item still moves on, one item per page.
        let p = policy_page(&items, &page(None, 0, 10)).unwrap();
        assert_eq!(p.items.len(), 1);
        let huge = vec!["y".repeat(MAX_PAGE_BYTES)];
        let e = policy_page(&huge, &page(None, 0, 0)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Busy);
        assert!(e.message.contains("policy entry 1"), "{}", e.message);
    }

    #[test]
    fn string_lengths_match_postcard() {
        for n in [0, 1, 127, 128, 16_383, 16_384, 300_000] {
            let s = "a".repeat(n);
            assert_eq!(string_len(&s), encoded_len(&s), "{n}");
        }
    }
}
