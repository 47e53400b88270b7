//! Which login session a process belongs to, as the kernel says.
//!
//! The audit session id (`/proc/<pid>/sessionid`) is assigned by the kernel
//! when a process with `CAP_AUDIT_CONTROL` sets its login uid
//! (`pam_loginuid` at login: console, ssh, a display manager, cron), and is
//! inherited by every descendant. An unprivileged process cannot change
//! it, so an agent and everything it starts stay in the session it was
//! started in. `4294967295` means "no session" (a process that no login
//! started, such as a system service or a user manager's child).

/// The value the kernel reports for "no session".
const UNSET: u32 = u32::MAX;

/// `pid`'s audit session, if it has one (and still runs).
pub fn audit_session(pid: i32) -> Option<u32> {
    if pid <= 0 {
        return None;
    }
    std::fs::read_to_string(format!("/proc/{pid}/sessionid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|s| *s != UNSET)
}

/// `pid`'s start time in clock ticks since boot (`/proc/<pid>/stat` field
/// 22): with the pid, what polkit identifies a process by.
pub fn start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // After the command: state is field 3, start time field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Why an approval from `approver` (an audit session, or none) may not
/// decide a request made from `requester`'s session; `None` if it may.
pub fn refuse(approver: Option<u32>, requester: Option<u32>) -> Option<String> {
    match (approver, requester) {
        (None, _) => Some(
            "the approving process is in no login session: approve from a login session (a console, ssh or desktop login)".into(),
        ),
        (Some(a), Some(r)) if a == r => Some(format!(
            "an approval must come from another login session than the request's (both are in session {a})"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_session_or_none_is_refused() {
        assert!(refuse(Some(4), Some(4)).is_some());
        assert!(refuse(None, Some(4)).is_some());
        assert!(refuse(None, None).is_some());
        assert!(refuse(Some(5), Some(4)).is_none());
        assert!(refuse(Some(5), None).is_none());
    }

    #[test]
    fn this_process_has_a_start_time() {
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some_and(|t| t > 0));
        assert_eq!(start_time(-1), None);
        assert_eq!(audit_session(0), None);
    }
}
