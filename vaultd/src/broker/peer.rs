//! Who is on the other end of a connection to the broker's local
//! endpoint, as the kernel says — never as the connection says.
//!
//! * Unix socket: `SO_PEERCRED` (uid, gid, pid at `connect`).
//! * Loopback TCP: the uid owning the *peer's* socket in the kernel's
//!   socket table ([`crate::sys::sockdiag`]: an exact `NETLINK_SOCK_DIAG`
//!   lookup, `/proc/net/tcp{,6}` only where netlink cannot answer), its
//!   primary gid from the account database (none without an account:
//!   `(gid_t) -1`); the pid is unknown (0), which tells the decisions to
//!   judge the caller by its account's groups alone.
//!
//! A connection that cannot be identified is refused; so is a TCP peer
//! that is not on loopback.

use std::net::SocketAddr;
use std::os::fd::AsFd;

use crate::caller::Caller;
use crate::sys::sockdiag::{self, TcpOwner};

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot read the peer's credentials: {0}")]
    Credentials(std::io::Error),
    #[error("a TCP peer not on loopback ({0})")]
    NotLoopback(SocketAddr),
    #[error("the kernel's socket table has no established socket for the peer")]
    Unknown,
    #[error("the kernel's socket table cannot be read: {0}")]
    Table(std::io::Error),
}

/// The caller on a Unix stream connection.
pub fn unix_caller(conn: &impl AsFd) -> Result<Caller, PeerError> {
    let peer = crate::sys::peer_identity(conn).map_err(PeerError::Credentials)?;
    Ok(Caller {
        uid: peer.uid,
        gid: peer.gid,
        pid: peer.pid,
    })
}

fn loopback(a: SocketAddr) -> bool {
    a.ip().to_canonical().is_loopback()
}

/// The uid owning the peer's socket of a TCP connection whose local end
/// is `local` and remote end `remote` (the peer's socket has them the
/// other way round). Blocking: it may read `/proc`.
pub fn tcp_peer_uid(local: SocketAddr, remote: SocketAddr) -> Result<u32, PeerError> {
    if !loopback(remote) {
        return Err(PeerError::NotLoopback(remote));
    }
    if !loopback(local) {
        return Err(PeerError::NotLoopback(local));
    }
    let owner = match sockdiag::tcp_socket_owner(remote, local) {
        Ok(owner) => owner,
        Err(e) => {
            tracing::debug!(error = %e, "sock_diag cannot answer; reading /proc/net/tcp");
            sockdiag::proc_net_tcp_owner(remote, local).map_err(PeerError::Table)?
        }
    };
    match owner {
        TcpOwner::Uid(uid) => Ok(uid),
        TcpOwner::None => Err(PeerError::Unknown),
    }
}

/// `(gid_t) -1`: no group has it.
const NO_GROUP: u32 = u32::MAX;

/// The caller on a loopback TCP connection (blocking: the socket table
/// and the account database).
pub fn tcp_caller(local: SocketAddr, remote: SocketAddr) -> Result<Caller, PeerError> {
    let uid = tcp_peer_uid(local, remote)?;
    let gid = crate::sys::account(uid).map_or(NO_GROUP, |(gid, _)| gid);
    Ok(Caller { uid, gid, pid: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn a_unix_peer_is_its_credentials() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let caller = unix_caller(&a).unwrap();
        assert_eq!(caller.uid, nix::unistd::getuid().as_raw());
        assert_eq!(caller.pid, std::process::id() as i32);
    }

    #[test]
    fn a_tcp_peer_is_the_owner_of_its_socket_and_a_gone_one_is_nobody() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (conn, _) = listener.accept().unwrap();
        let (local, remote) = (conn.local_addr().unwrap(), conn.peer_addr().unwrap());
        let me = nix::unistd::getuid().as_raw();
        assert_eq!(tcp_caller(local, remote).unwrap().uid, me);
        assert_eq!(tcp_caller(local, remote).unwrap().pid, 0);
        // Shut down (a forked child of another test may hold a copy of the
        // descriptor): the peer's socket is closing, not established.
        client.shutdown(std::net::Shutdown::Both).unwrap();
        assert!(matches!(tcp_caller(local, remote), Err(PeerError::Unknown)));
    }

    #[test]
    fn a_tcp_peer_off_loopback_is_refused_before_any_lookup() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        for (local, remote) in [
            ("127.0.0.1:80", "192.0.2.1:5000"),
            ("192.0.2.2:80", "127.0.0.1:5000"),
            ("[::1]:80", "[2001:db8::1]:5000"),
        ] {
            assert!(matches!(
                tcp_caller(a(local), a(remote)),
                Err(PeerError::NotLoopback(_))
            ));
        }
    }
}
