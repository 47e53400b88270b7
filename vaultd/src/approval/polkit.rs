//! Asking polkitd whether the approving process's user is present:
//! `CheckAuthorization` for action [`ACTION`] (shipped with `auth_self`
//! defaults, so polkit's authentication agent for the approver asks for the
//! user's own password or fingerprint) on the approver's process, with user
//! interaction allowed.
//!
//! The subject is `unix-process` (pid, start time, uid), read by the daemon
//! from the kernel, never from the approver's words. polkit then finds the
//! agent registered for that process or its session (the desktop's, or the
//! text agent `vaultctl approvals approve --polkit` starts on its own
//! terminal) and asks there.

use std::collections::HashMap;
use std::time::Duration;

use zbus::zvariant::Value;

/// The polkit action an approval needs.
pub const ACTION: &str = "org.aivault.approve";
/// `AllowUserInteraction`.
const ALLOW_USER_INTERACTION: u32 = 1;

/// The approving process, as polkit identifies it.
#[derive(Debug, Clone, Copy)]
pub struct Subject {
    pub pid: i32,
    pub start_time: u64,
    pub uid: u32,
}

/// What the check is about, shown by agents that show details (and in
/// the action's message).
#[derive(Debug, Clone)]
pub struct About {
    pub request: String,
    pub rule: String,
    pub command: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PolkitError {
    #[error("cannot reach polkit: {0}")]
    Bus(zbus::Error),
    #[error("polkit refused the check: {0}")]
    Check(zbus::Error),
    #[error("polkit gave no answer in time")]
    Timeout,
}

/// Whether polkit authorizes `subject` for [`ACTION`] (after asking the
/// user through its agent). `bus` is `system` or a D-Bus address. Bounded
/// by `within`.
pub async fn authorized(
    bus: &str,
    subject: Subject,
    about: &About,
    within: Duration,
) -> Result<bool, PolkitError> {
    let check = async {
        let builder = match bus {
            "system" => zbus::connection::Builder::system(),
            address => zbus::connection::Builder::address(address),
        }
        .map_err(PolkitError::Bus)?;
        let conn = builder.build().await.map_err(PolkitError::Bus)?;
        let mut who: HashMap<&str, Value<'_>> = HashMap::new();
        who.insert("pid", Value::U32(subject.pid as u32));
        who.insert("start-time", Value::U64(subject.start_time));
        who.insert("uid", Value::I32(subject.uid as i32));
        let mut details: HashMap<&str, &str> = HashMap::new();
        details.insert("aivault.request", &about.request);
        details.insert("aivault.rule", &about.rule);
        details.insert("aivault.command", &about.command);
        let reply = conn
            .call_method(
                Some("org.freedesktop.PolicyKit1"),
                "/org/freedesktop/PolicyKit1/Authority",
                Some("org.freedesktop.PolicyKit1.Authority"),
                "CheckAuthorization",
                &(
                    ("unix-process", who),
                    ACTION,
                    details,
                    ALLOW_USER_INTERACTION,
                    "",
                ),
            )
            .await
            .map_err(PolkitError::Check)?;
        let (is_authorized, _challenge, _details): (bool, bool, HashMap<String, String>) =
            reply.body().deserialize().map_err(PolkitError::Check)?;
        Ok(is_authorized)
    };
    tokio::time::timeout(within, check)
        .await
        .unwrap_or(Err(PolkitError::Timeout))
}
