//! Approvals: a run whose rule says `approval = ...` waits until a person
//! approves it through a channel the requesting session cannot drive.
//!
//! A waiting run's caller gets [`crate::Reply::AwaitingApproval`] (same
//! request id) before `RunStarted` or the refusal. Approvers list, approve
//! and deny with [`crate::RequestBody::Approvals`].

use serde::{Deserialize, Serialize};

/// One request waiting for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingApproval {
    /// Chosen by the daemon at random; shown as 16 hex digits.
    pub id: u64,
    /// The rule that requires approval.
    pub rule: String,
    /// The resolved command and its argument list, as audit records show
    /// them (arguments that look like values are masked).
    pub argv: Vec<String>,
    pub requester_uid: u32,
    pub requester_pid: i32,
    /// Milliseconds left before the request times out.
    pub expires_in_ms: u64,
}

/// What an approver asks. Its `Debug` never shows a code.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApprovalRequest {
    /// The pending requests this caller may approve, and its own.
    List,
    Approve {
        id: u64,
        channel: ApprovalChannel,
    },
    /// By an approver or the requester (who may always withdraw its own).
    Deny {
        id: u64,
    },
    /// With the one-time code the daemon sent to a desktop notifier of
    /// the caller in another session; from any session.
    ApproveCode {
        id: u64,
        code: String,
    },
}

impl std::fmt::Debug for ApprovalRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApprovalRequest::List => f.write_str("List"),
            ApprovalRequest::Approve { id, channel } => f
                .debug_struct("Approve")
                .field("id", id)
                .field("channel", channel)
                .finish(),
            ApprovalRequest::Deny { id } => f.debug_struct("Deny").field("id", id).finish(),
            ApprovalRequest::ApproveCode { id, .. } => f
                .debug_struct("ApproveCode")
                .field("id", id)
                .field("code", &"<hidden>")
                .finish(),
        }
    }
}

/// How an approver proves it is a person, not the requester's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApprovalChannel {
    /// The approving process is in another login session than the request.
    Session,
    /// As `Session`, and polkit authenticates the approver
    /// (`org.aivault.approve`, `auth_self`) through its agent.
    Polkit,
    /// A one-time code the daemon sent to the approver's desktop notifier
    /// (in another session than the request) was given back.
    Code,
}

impl ApprovalChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalChannel::Session => "session",
            ApprovalChannel::Polkit => "polkit",
            ApprovalChannel::Code => "code",
        }
    }
}

/// An id as shown to people.
pub fn format_id(id: u64) -> String {
    format!("{id:016x}")
}

/// Parses [`format_id`]'s form.
pub fn parse_id(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_back_as_shown_and_nothing_else_parses() {
        for id in [0, 1, 0x3f2a_9c0d_1e2b_4a58, u64::MAX] {
            assert_eq!(parse_id(&format_id(id)), Some(id));
        }
        for bad in ["", "xyz", "-1", "0x12", "1 2", "12345678901234567"] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }
}
