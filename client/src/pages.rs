//! Following the daemon's paged lists (protocol 3): each list-like answer
//! comes a page at a time, and these calls ask for page after page on one
//! connection until the list ends, so callers see one list.

use aivault_proto::{PageRequest, Reply, RequestBody, SecretInfo, WireScope};

use crate::{Client, ClientError};

/// Times a policy list is started again because it changed while it was
/// being read, before giving up.
const MAX_RESTARTS: usize = 5;

/// A policy list: the commands a caller may run (`policy show`) or the
/// explanation of every rule (`policy check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyList {
    /// `false` when the policy on disk is invalid; `error` says why.
    pub ok: bool,
    pub error: Option<String>,
    /// One JSON object per command or rule.
    pub items: Vec<String>,
}

fn first(cursor: Option<String>, max_items: u32) -> PageRequest {
    PageRequest {
        cursor,
        max_items,
        max_bytes: 0,
    }
}

impl Client {
    /// One page of secrets in name order after `cursor` (from the first
    /// for `None`), at most `max_items` (0: as many as one reply holds),
    /// and the cursor of the next page.
    pub fn secrets_page(
        &mut self,
        scope: WireScope,
        cursor: Option<String>,
        max_items: u32,
    ) -> Result<(Vec<SecretInfo>, Option<String>), ClientError> {
        let page = first(cursor.clone(), max_items);
        match self.call(RequestBody::SecretListPage { scope, page })? {
            // A cursor that does not move on would ask for the same page
            // for ever.
            Reply::SecretsPage { next: Some(n), .. }
                if cursor.as_ref().is_some_and(|c| &n <= c) =>
            {
                Err(ClientError::Protocol)
            }
            Reply::SecretsPage { secrets, next } => Ok((secrets, next)),
            _ => Err(ClientError::Protocol),
        }
    }

    /// Every secret of `scope`, in name order, page after page.
    pub fn list_secrets(&mut self, scope: WireScope) -> Result<Vec<SecretInfo>, ClientError> {
        let mut all = Vec::new();
        let mut cursor = None;
        loop {
            let (mut secrets, next) = self.secrets_page(scope, cursor, 0)?;
            all.append(&mut secrets);
            match next {
                Some(n) => cursor = Some(n),
                None => return Ok(all),
            }
        }
    }

    /// The newest `limit` audit records this caller may read, oldest
    /// first, as the daemon's JSON lines.
    pub fn audit_records(&mut self, limit: u32) -> Result<Vec<String>, ClientError> {
        let mut pages: Vec<Vec<String>> = Vec::new();
        let mut left = limit;
        let mut cursor: Option<String> = None;
        while left > 0 {
            let page = first(cursor.clone(), 0);
            let Reply::AuditPage { records, next } =
                self.call(RequestBody::AuditListPage { limit: left, page })?
            else {
                return Err(ClientError::Protocol);
            };
            let got = u32::try_from(records.len()).unwrap_or(u32::MAX);
            if got > left {
                return Err(ClientError::Protocol);
            }
            left -= got;
            pages.push(records);
            match next {
                // Older records only: a cursor must go down.
                Some(n) if got > 0 && older(&n, cursor.as_deref()) => cursor = Some(n),
                Some(_) => return Err(ClientError::Protocol),
                None => break,
            }
        }
        Ok(pages.into_iter().rev().flatten().collect())
    }

    /// The commands this caller may run (`check == false`) or the
    /// explanation of the policy on disk (`check`, root only), page after
    /// page; started again if the list changes in between.
    pub fn policy_list(&mut self, check: bool) -> Result<PolicyList, ClientError> {
        let mut restarts = 0;
        let mut items = Vec::new();
        let mut cursor = None;
        loop {
            let page = first(cursor.take(), 0);
            let body = if check {
                RequestBody::PolicyCheckPage { page }
            } else {
                RequestBody::PolicyShowPage { page }
            };
            let Reply::PolicyPage(p) = self.call(body)? else {
                return Err(ClientError::Protocol);
            };
            if p.restarted {
                restarts += 1;
                if restarts > MAX_RESTARTS {
                    return Err(ClientError::Daemon(aivault_proto::WireError::new(
                        aivault_proto::ErrorCode::Busy,
                        "the policy kept changing while it was being read; try again",
                    )));
                }
                items.clear();
            }
            if !p.ok {
                return Ok(PolicyList {
                    ok: false,
                    error: p.error,
                    items: Vec::new(),
                });
            }
            let empty = p.items.is_empty();
            items.extend(p.items);
            match p.next {
                Some(_) if empty && !p.restarted => return Err(ClientError::Protocol),
                Some(n) => cursor = Some(n),
                None => {
                    return Ok(PolicyList {
                        ok: true,
                        error: None,
                        items,
                    })
                }
            }
        }
    }
}

/// Whether audit cursor `next` names an older record than `previous`.
fn older(next: &str, previous: Option<&str>) -> bool {
    let Ok(n) = next.parse::<u64>() else {
        return false;
    };
    previous.is_none_or(|p| p.parse::<u64>().is_ok_and(|p| n < p))
}
