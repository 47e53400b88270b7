//! Every system call the daemon makes that needs more than a safe wrapper.
//!
//! Each `unsafe` block states why it is sound. Everything else in the crate
//! is safe code.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

/// `SO_PEERPIDFD` (Linux 6.5+); not yet exported by every libc crate release.
const SO_PEERPIDFD: libc::c_int = 77;

/// Who is on the other end of a Unix stream socket, as the kernel recorded it
/// at `connect()` time. Nothing here comes from the peer's own words.
#[derive(Debug)]
pub struct PeerIdentity {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    /// A pidfd for the peer process where the kernel offers one: unlike `pid`,
    /// it cannot come to name a different process after the peer exits.
    pub pidfd: Option<OwnedFd>,
}

/// Reads `SO_PEERCRED` (and `SO_PEERPIDFD` when available) from a connected socket.
pub fn peer_identity(sock: &impl AsFd) -> io::Result<PeerIdentity> {
    let cred = getsockopt(sock, PeerCredentials).map_err(io::Error::from)?;
    Ok(PeerIdentity {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
        pidfd: peer_pidfd(sock.as_fd().as_raw_fd()),
    })
}

fn peer_pidfd(fd: std::os::fd::RawFd) -> Option<OwnedFd> {
    let mut pidfd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `pidfd` and `len` are valid, properly sized out-parameters for a
    // getsockopt returning an int; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut pidfd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 && pidfd >= 0 {
        // SAFETY: the kernel just created this descriptor for us; nothing
        // else owns it.
        Some(unsafe { OwnedFd::from_raw_fd(pidfd) })
    } else {
        None
    }
}

/// Raises the soft open-file limit to the hard limit so connection limits,
/// not the fd table, decide when callers are turned away.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    Ok(hard)
}
