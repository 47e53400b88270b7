//! Who sent a request, as the kernel says: the peer credentials of the
//! socket (`SO_PEERCRED`) or the bus daemon's word for a D-Bus sender. A
//! caller can ask; it is never believed about who it is. Imports nothing of
//! the daemon's, so every front end and the run path can use it.

/// The identity of one request's sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
}

impl Caller {
    /// Root may reach the system scope, unlock, reload and verify.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}
