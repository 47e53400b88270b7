//! A rule's `approval` and `approvers`: whether a person must approve each
//! run before the command starts, and who may.
//!
//! ```toml
//! approval = "required"            # every run
//! approval = "once-per-session"    # the first run in each login session
//! approval = { ttl = "15m" }       # then again once 15 minutes have passed
//! approvers = { users = ["alice"], groups = ["admins"] }
//! approval_channel = "polkit"      # only through polkit
//! approval_channel = "session"     # also the requester's own uid from
//!                                  # another session, without polkit
//! ```
//!
//! Without `approvers` the caller approves its own runs — as a person,
//! never from the requesting session. By default (`"any"`) an approval by
//! the requester's own uid must come through polkit: a process of that uid
//! can open another session by itself (a crontab line, `ssh localhost`), so
//! a session of its own proves no person. Another approver may use any
//! channel (`crate::approval`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::check::identities;
use super::error::EntryError;
use super::schema::{RawApproval, RawApprovers};
use super::units::parse_duration;

/// The longest `ttl` accepted.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// How often a person must approve.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalMode {
    /// Every run.
    Required,
    /// The first run of a caller in each of its login sessions.
    OncePerSession,
    /// Then again once this long has passed since the approval.
    Ttl(Duration),
}

/// A rule's approval requirement, validated.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRule {
    pub mode: ApprovalMode,
    /// Who may approve; `None`: the caller itself (as a person).
    pub approvers: Option<Approvers>,
    /// Only approvals through polkit count (`approval_channel = "polkit"`).
    #[serde(default)]
    pub polkit_only: bool,
    /// The requester's own uid may approve from another session, or with a
    /// code, without polkit (`approval_channel = "session"`: weaker, see
    /// SECURITY.md).
    #[serde(default)]
    pub same_uid_session: bool,
}

/// Uids and gids that may approve, resolved at load time.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Approvers {
    pub users: Vec<u32>,
    pub groups: Vec<u32>,
    /// `user alice (uid 1000), group admins (gid 100)` for explanations.
    pub text: String,
}

impl ApprovalRule {
    /// Whether `uid` (primary group `gid`, supplementary `groups`) may
    /// approve a run that `requester` asked for.
    pub fn may_approve(&self, requester: u32, uid: u32, gid: u32, groups: &[u32]) -> bool {
        match &self.approvers {
            None => uid == requester,
            Some(a) => {
                a.users.contains(&uid)
                    || a.groups.contains(&gid)
                    || groups.iter().any(|g| a.groups.contains(g))
            }
        }
    }

    /// `approval required by the caller`, for explanations.
    pub fn describe(&self) -> String {
        let mode = match self.mode {
            ApprovalMode::Required => "every run".to_owned(),
            ApprovalMode::OncePerSession => "once per login session".to_owned(),
            ApprovalMode::Ttl(d) => format!("once per {} s", d.as_secs()),
        };
        let who = match &self.approvers {
            None => "the caller, from another login session or through polkit".to_owned(),
            Some(a) => a.text.clone(),
        };
        let how = if self.polkit_only {
            ", authenticated by polkit"
        } else {
            ""
        };
        format!("a person must approve {mode}: {who}{how}")
    }
}

/// Validates a rule's `approval` and `approvers`.
pub fn compile(
    approval: Option<RawApproval>,
    approvers: Option<RawApprovers>,
    channel: Option<String>,
) -> Result<Option<ApprovalRule>, EntryError> {
    let (polkit_only, same_uid_session) = match channel.as_deref() {
        None | Some("any") => (false, false),
        Some("polkit") => (true, false),
        Some("session") => (false, true),
        Some(other) => {
            return Err(EntryError::Approval(format!(
                "approval_channel {other:?} is not \"any\", \"polkit\" or \"session\""
            )))
        }
    };
    let Some(raw) = approval else {
        if approvers.is_some() || channel.is_some() {
            return Err(EntryError::Approval(
                "approvers or approval_channel without approval: say approval = \"required\" (or \"once-per-session\", or { ttl = \"15m\" })".into(),
            ));
        }
        return Ok(None);
    };
    let mode = match raw {
        RawApproval::Mode(m) if m == "required" => ApprovalMode::Required,
        RawApproval::Mode(m) if m == "once-per-session" => ApprovalMode::OncePerSession,
        RawApproval::Mode(m) => {
            return Err(EntryError::Approval(format!(
                "approval {m:?} is not \"required\", \"once-per-session\" or {{ ttl = \"15m\" }}"
            )))
        }
        RawApproval::Ttl(t) => {
            let d = parse_duration(&t.ttl).map_err(EntryError::Approval)?;
            if d.is_zero() || d > MAX_TTL {
                return Err(EntryError::Approval(format!(
                    "approval ttl must be more than 0 and at most {} h",
                    MAX_TTL.as_secs() / 3600
                )));
            }
            ApprovalMode::Ttl(d)
        }
    };
    let approvers = approvers
        .map(|a| {
            identities(&a.users, &a.groups).map(|(users, groups, text)| Approvers {
                users,
                groups,
                text,
            })
        })
        .transpose()?;
    Ok(Some(ApprovalRule {
        mode,
        approvers,
        polkit_only,
        same_uid_session,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<ApprovalRule>, EntryError> {
        #[derive(Deserialize)]
        struct T {
            approval: Option<RawApproval>,
            approvers: Option<RawApprovers>,
            approval_channel: Option<String>,
        }
        let t: T = toml::from_str(text).expect("toml");
        compile(t.approval, t.approvers, t.approval_channel)
    }

    #[test]
    fn the_three_modes_parse() {
        let r = parse("approval = \"required\"").unwrap().unwrap();
        assert_eq!(r.mode, ApprovalMode::Required);
        assert!(r.approvers.is_none());
        let r = parse("approval = \"once-per-session\"").unwrap().unwrap();
        assert_eq!(r.mode, ApprovalMode::OncePerSession);
        let r = parse("approval = { ttl = \"15m\" }").unwrap().unwrap();
        assert_eq!(r.mode, ApprovalMode::Ttl(Duration::from_secs(900)));
        assert!(!r.polkit_only);
        let r = parse("approval = \"required\"\napproval_channel = \"polkit\"")
            .unwrap()
            .unwrap();
        assert!(r.polkit_only);
        assert!(parse("").unwrap().is_none());
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            "approval = \"sometimes\"",
            "approval = { ttl = \"0s\" }",
            "approval = { ttl = \"25h\" }",
            "approvers = { users = [0] }",
            "approval = \"required\"\napprovers = {}",
            "approval_channel = \"polkit\"",
            "approval = \"required\"\napproval_channel = \"tty\"",
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn the_default_approver_is_the_caller_alone() {
        let r = parse("approval = \"required\"").unwrap().unwrap();
        assert!(r.may_approve(1000, 1000, 1000, &[]));
        assert!(!r.may_approve(1000, 1001, 1000, &[1000]));
        let r = parse("approval = \"required\"\napprovers = { users = [7], groups = [50] }")
            .unwrap()
            .unwrap();
        assert!(!r.may_approve(1000, 1000, 1000, &[]));
        assert!(r.may_approve(1000, 7, 1, &[]));
        assert!(r.may_approve(1000, 8, 1, &[50]));
    }
}
