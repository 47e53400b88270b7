//! The desktop-notifier channel: one-time codes.
//!
//! A notifier (any D-Bus client of the approver) registers with the daemon
//! ([`Notifiers`]); the daemon keeps its bus unique name, uid and login
//! session, and forgets it when the name leaves the bus or after
//! [`NOTIFIER_LIFETIME`]. For each new pending request, every registered
//! notifier whose uid may approve it and whose session is another than the
//! request's gets a fresh random code of its own ([`issue`]), sent to that
//! unique name alone (a unicast signal: the bus delivers it to nobody else).
//! Knowing the code proves the person saw the notifier, so an approval with
//! it may come from any session ([`check`]), but only from the uid the code
//! was issued to, who must still be an approver. A few wrong codes revoke
//! the request's codes. Codes live in the pending request: they expire with
//! it. They are never logged or audited; only that one was issued, to whom.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aivault_proto::approval::format_id;
use aivault_proto::{ErrorCode, PendingApproval, WireError};
use serde_json::json;

use super::session;
use super::ApprovalHost;
use crate::audit::gate::Entry;
use crate::caller::Caller;

/// Notifiers registered at once for one uid.
pub const MAX_NOTIFIERS_PER_UID: usize = 4;
/// Notifiers registered at once, all uids together.
pub const MAX_NOTIFIERS: usize = 64;
/// How long a registration lasts; the notifier registers again to go on.
pub const NOTIFIER_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Wrong codes a request takes before its codes are revoked.
pub const MAX_WRONG_CODES: u32 = 3;
/// Symbols of a code (Crockford's base 32: no I, L, O, U).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Symbols in a code: 50 random bits.
const CODE_LEN: usize = 10;

/// A registered notifier.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// The bus it is on (the bus's GUID): unique names are unique per bus.
    pub bus: String,
    /// Its unique name on that bus.
    pub address: String,
    pub caller: Caller,
    /// Its audit session (a notifier outside any session is refused).
    pub session: u32,
    until: Instant,
}

/// The registered notifiers. One per daemon, in [`super::Approvals`].
#[derive(Debug, Default)]
pub struct Notifiers {
    list: std::sync::Mutex<Vec<Notifier>>,
}

impl Notifiers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Notifier>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers (or renews) `address` on `bus` for `caller`; how long the
    /// registration lasts. Refused for a process in no login session and
    /// over the bounds.
    pub fn register(
        &self,
        bus: &str,
        address: &str,
        caller: Caller,
        session: Option<u32>,
    ) -> Result<Duration, WireError> {
        let Some(session) = session else {
            return Err(WireError::new(
                ErrorCode::PermissionDenied,
                "the notifier is in no login session: it would never get a code (start it from a login session)",
            ));
        };
        let now = Instant::now();
        let mut list = self.lock();
        list.retain(|n| n.until > now);
        let until = now + NOTIFIER_LIFETIME;
        if let Some(n) = list
            .iter_mut()
            .find(|n| n.bus == bus && n.address == address)
        {
            n.until = until;
            return Ok(NOTIFIER_LIFETIME);
        }
        if list.iter().filter(|n| n.caller.uid == caller.uid).count() >= MAX_NOTIFIERS_PER_UID {
            return Err(WireError::new(
                ErrorCode::Busy,
                format!("{MAX_NOTIFIERS_PER_UID} notifiers are registered for your uid already"),
            ));
        }
        if list.len() >= MAX_NOTIFIERS {
            return Err(WireError::new(
                ErrorCode::Busy,
                "too many notifiers are registered; try again later",
            ));
        }
        list.push(Notifier {
            bus: bus.to_owned(),
            address: address.to_owned(),
            caller,
            session,
            until,
        });
        Ok(NOTIFIER_LIFETIME)
    }

    /// Forgets `address` on `bus` (its name left the bus).
    pub fn forget(&self, bus: &str, address: &str) {
        self.lock()
            .retain(|n| !(n.bus == bus && n.address == address));
    }

    /// Forgets the notifiers that `keep` rejects (another bus, a name gone
    /// while the daemon was not listening).
    pub fn retain(&self, keep: impl Fn(&Notifier) -> bool) {
        self.lock().retain(keep);
    }

    /// The notifiers on `bus` still in force.
    pub fn on(&self, bus: &str) -> Vec<Notifier> {
        let now = Instant::now();
        let mut list = self.lock();
        list.retain(|n| n.until > now);
        list.iter().filter(|n| n.bus == bus).cloned().collect()
    }
}

/// A code issued for a pending request.
#[derive(Debug, Clone)]
pub struct Issued {
    code: [u8; CODE_LEN],
    /// The uid whose notifier got it: the only one it approves for.
    pub uid: u32,
    /// The notifier's unique name and session, for the record.
    pub address: String,
    pub session: u32,
}

/// The codes of one pending request.
#[derive(Debug, Default)]
pub struct Codes {
    issued: Vec<Issued>,
    wrong: u32,
    revoked: bool,
}

/// What [`Codes::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// The code is one issued to this uid (its notifier's session).
    Right { session: u32, address: String },
    /// Wrong; this many tries are left before the codes are revoked
    /// (0: they are revoked now).
    Wrong { left: u32 },
    /// No code is in force for the request (none issued, or revoked).
    None { revoked: bool },
}

impl Codes {
    pub fn add(&mut self, issued: Issued) {
        if !self.revoked {
            self.issued.push(issued);
        }
    }

    /// Drops the code issued to `address` (its record could not be written).
    pub fn drop_for(&mut self, address: &str) {
        self.issued.retain(|i| i.address != address);
    }

    /// Checks `given` (as typed: case, spaces and dashes do not matter) for
    /// `uid`. Every issued code is compared, in constant time each; a
    /// wrong code counts against the request.
    pub fn check(&mut self, uid: u32, given: &str) -> Checked {
        if self.revoked || self.issued.is_empty() {
            return Checked::None {
                revoked: self.revoked,
            };
        }
        let given = normalize(given);
        let mut found = None;
        for i in &self.issued {
            let same = given.as_ref().is_some_and(|g| same_code(g, &i.code));
            if same && i.uid == uid && found.is_none() {
                found = Some((i.session, i.address.clone()));
            }
        }
        if let Some((session, address)) = found {
            return Checked::Right { session, address };
        }
        self.wrong += 1;
        let left = MAX_WRONG_CODES.saturating_sub(self.wrong);
        if left == 0 {
            self.revoked = true;
            self.issued.clear();
        }
        Checked::Wrong { left }
    }
}

/// A fresh code from the kernel's random source.
fn draw() -> Result<[u8; CODE_LEN], WireError> {
    let mut b = [0u8; CODE_LEN];
    getrandom::getrandom(&mut b)
        .map_err(|_| WireError::new(ErrorCode::Internal, "no randomness for a code"))?;
    Ok(b.map(|x| ALPHABET[usize::from(x & 31)]))
}

/// A code as shown: `ABCDE-FGHJK`.
pub fn show(code: &[u8; CODE_LEN]) -> String {
    let (a, b) = code.split_at(CODE_LEN / 2);
    format!(
        "{}-{}",
        String::from_utf8_lossy(a),
        String::from_utf8_lossy(b)
    )
}

/// A typed code in canonical form (upper case, `O` read as `0`, `I` and
/// `L` as `1`, spaces and dashes dropped); `None` if it cannot be a code.
fn normalize(text: &str) -> Option<[u8; CODE_LEN]> {
    let mut out = [0u8; CODE_LEN];
    let mut n = 0;
    for c in text.bytes() {
        let c = match c.to_ascii_uppercase() {
            b' ' | b'-' => continue,
            b'O' => b'0',
            b'I' | b'L' => b'1',
            c => c,
        };
        if !ALPHABET.contains(&c) || n == CODE_LEN {
            return None;
        }
        out[n] = c;
        n += 1;
    }
    (n == CODE_LEN).then_some(out)
}

/// Whether `a` and `b` are equal, in time independent of where they differ.
fn same_code(a: &[u8; CODE_LEN], b: &[u8; CODE_LEN]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// One code to deliver: to the notifier's unique name alone.
#[derive(Debug)]
pub struct Delivery {
    pub address: String,
    pub code: String,
    pub info: PendingApproval,
}

/// Issues a code for pending request `id` to every notifier on `bus` that
/// may approve it from another session; each is audited (`approval.code`,
/// without the code) before it is handed out. Nothing for a rule that
/// accepts polkit only, or a request no longer pending.
pub async fn issue(daemon: &Arc<dyn ApprovalHost>, bus: &str, id: u64) -> Vec<Delivery> {
    let approvals = &daemon.approvals();
    let Some(view) = approvals.view(id) else {
        return Vec::new();
    };
    if view.rule.polkit_only {
        return Vec::new();
    }
    let mut out = Vec::new();
    for n in approvals.notifiers.on(bus) {
        if session::refuse(Some(n.session), view.session).is_some()
            || super::own_uid_needs_polkit(&view, n.caller.uid)
        {
            continue;
        }
        let groups = {
            let (uid, gid) = (n.caller.uid, n.caller.gid);
            tokio::task::spawn_blocking(move || crate::sys::account_groups(uid, gid))
                .await
                .unwrap_or_default()
        };
        if !view
            .rule
            .may_approve(view.requester.uid, n.caller.uid, n.caller.gid, &groups)
        {
            continue;
        }
        let code = match draw() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e.message, "no code issued");
                continue;
            }
        };
        let issued = Issued {
            code,
            uid: n.caller.uid,
            address: n.address.clone(),
            session: n.session,
        };
        if !approvals.add_code(id, issued) {
            break;
        }
        let detail = json!({
            "id": format_id(id),
            "notifier": n.address,
            "notifier_session": n.session,
            "requester_uid": view.requester.uid,
            "requester_session": view.session,
        });
        let (d, rule, caller) = (daemon.clone(), view.info.rule.clone(), n.caller);
        let recorded = tokio::task::spawn_blocking(move || {
            d.audit().record(
                Entry::new(&caller, "approval.code")
                    .name(Some(&rule))
                    .detail(detail),
            )
        })
        .await
        .unwrap_or_else(|_| Err(WireError::new(ErrorCode::Internal, "internal error")));
        if recorded.is_err() {
            approvals.drop_code(id, &n.address);
            continue;
        }
        out.push(Delivery {
            address: n.address,
            code: show(&code),
            info: view.info.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32) -> Caller {
        Caller {
            uid,
            gid: uid,
            pid: 1,
        }
    }

    #[test]
    fn codes_are_random_of_the_alphabet_and_read_back_as_typed() {
        let a = draw().expect("draw");
        let b = draw().expect("draw");
        assert_ne!(a, b);
        assert!(a.iter().all(|c| ALPHABET.contains(c)));
        let shown = show(&a);
        assert_eq!(normalize(&shown), Some(a));
        assert_eq!(normalize(&shown.to_lowercase().replace('-', " ")), Some(a));
        assert_eq!(normalize("0123456789A"), None);
        assert_eq!(normalize("012345678"), None);
        assert_eq!(normalize("01234567U9"), None);
        assert_eq!(normalize("oIL3456789"), normalize("0113456789"));
    }

    #[test]
    fn a_code_approves_for_its_uid_only_and_wrong_ones_revoke_them() {
        let mut c = Codes::default();
        assert_eq!(c.check(1000, "x"), Checked::None { revoked: false });
        let code = draw().expect("draw");
        c.add(Issued {
            code,
            uid: 1000,
            address: ":1.7".into(),
            session: 9,
        });
        assert!(matches!(
            c.check(1000, &show(&code)),
            Checked::Right { session: 9, .. }
        ));
        // The right code for another uid counts as wrong.
        assert_eq!(c.check(1001, &show(&code)), Checked::Wrong { left: 2 });
        assert_eq!(c.check(1000, "AAAAA-AAAAA"), Checked::Wrong { left: 1 });
        assert_eq!(c.check(1000, "not a code"), Checked::Wrong { left: 0 });
        assert_eq!(c.check(1000, &show(&code)), Checked::None { revoked: true });
    }

    #[test]
    fn notifiers_are_bounded_need_a_session_and_are_forgotten() {
        let n = Notifiers::default();
        assert!(n.register("g", ":1.1", caller(1000), None).is_err());
        for i in 0..MAX_NOTIFIERS_PER_UID {
            n.register("g", &format!(":1.{i}"), caller(1000), Some(3))
                .expect("within the bound");
        }
        // Renewing is not registering again.
        n.register("g", ":1.0", caller(1000), Some(3))
            .expect("renew");
        let e = n
            .register("g", ":1.99", caller(1000), Some(3))
            .expect_err("over the bound");
        assert_eq!(e.code, ErrorCode::Busy);
        n.register("g", ":1.50", caller(1001), Some(4))
            .expect("another uid");
        assert_eq!(n.on("g").len(), MAX_NOTIFIERS_PER_UID + 1);
        assert!(n.on("other bus").is_empty());
        n.forget("g", ":1.0");
        assert_eq!(n.on("g").len(), MAX_NOTIFIERS_PER_UID);
        n.retain(|x| x.caller.uid != 1000);
        assert_eq!(n.on("g").len(), 1);
    }
}
