//! Who owns a TCP socket, from the kernel's socket table: an exact
//! `NETLINK_SOCK_DIAG` lookup (`inet_diag_req_v2` without `NLM_F_DUMP`),
//! or, where netlink is unavailable, `/proc/net/tcp{,6}`.
//!
//! The broker's loopback TCP endpoint asks this about the *peer* of each
//! connection it accepts: the socket whose local address is the
//! connection's remote one and whose remote address is the connection's
//! local one. Its owner is the uid that created it (`sock_i_uid`), which
//! no byte on the connection can change. Only an established socket whose
//! four addresses are exactly the ones asked for counts: a lookup that
//! finds a listener, a socket in `TIME_WAIT` or a closing one, or none,
//! identifies nobody.
//!
//! The messages are built and read as bytes (the layouts of
//! `linux/netlink.h`, `linux/sock_diag.h` and `linux/inet_diag.h`): no
//! `unsafe` is needed here.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

/// `SOCK_DIAG_BY_FAMILY` (`linux/sock_diag.h`).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
/// `TCP_ESTABLISHED` (`net/tcp_states.h`).
const TCP_ESTABLISHED: u8 = 1;
/// `INET_DIAG_NOCOOKIE`: match any socket cookie.
const NO_COOKIE: u32 = !0;
/// `sizeof(struct nlmsghdr)`.
const NLMSG_HDR: usize = 16;
/// `sizeof(struct inet_diag_sockid)`.
const SOCKID: usize = 48;
/// `sizeof(struct inet_diag_req_v2)`.
const REQ_V2: usize = 8 + SOCKID;
/// `sizeof(struct inet_diag_msg)`.
const DIAG_MSG: usize = 4 + SOCKID + 20;
/// How long the kernel may take to answer.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What a lookup in the socket table found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpOwner {
    /// An established socket with exactly these addresses, owned by `uid`.
    Uid(u32),
    /// No established socket with exactly these addresses.
    None,
}

/// The two ends of a connection as one family's addresses: both IPv4 when
/// both are (or are IPv4-mapped), else both IPv6.
fn family_of(local: SocketAddr, remote: SocketAddr) -> (u8, [u8; 16], [u8; 16]) {
    let (l, r) = (local.ip().to_canonical(), remote.ip().to_canonical());
    match (l, r) {
        (IpAddr::V4(l), IpAddr::V4(r)) => {
            let (mut lb, mut rb) = ([0u8; 16], [0u8; 16]);
            lb[..4].copy_from_slice(&l.octets());
            rb[..4].copy_from_slice(&r.octets());
            (libc::AF_INET as u8, lb, rb)
        }
        _ => (
            libc::AF_INET6 as u8,
            v6(local.ip()).octets(),
            v6(remote.ip()).octets(),
        ),
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The request: the socket whose local end is `local`, remote end `remote`.
fn request(seq: u32, local: SocketAddr, remote: SocketAddr) -> Vec<u8> {
    let (family, src, dst) = family_of(local, remote);
    let mut m = Vec::with_capacity(NLMSG_HDR + REQ_V2);
    m.extend_from_slice(&((NLMSG_HDR + REQ_V2) as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // inet_diag_req_v2: family, protocol, extensions, pad, states.
    m.extend_from_slice(&[family, libc::IPPROTO_TCP as u8, 0, 0]);
    m.extend_from_slice(&u32::MAX.to_ne_bytes());
    // inet_diag_sockid: ports and addresses in network order.
    m.extend_from_slice(&local.port().to_be_bytes());
    m.extend_from_slice(&remote.port().to_be_bytes());
    m.extend_from_slice(&src);
    m.extend_from_slice(&dst);
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    m.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    m
}

fn u16_ne(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_ne(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The address at `at` of an `inet_diag_sockid` of `family`, canonical.
fn addr_at(family: u8, b: &[u8], at: usize) -> Option<IpAddr> {
    let raw: [u8; 16] = b.get(at..at + 16)?.try_into().ok()?;
    if family == libc::AF_INET as u8 {
        let v4: [u8; 4] = raw[..4].try_into().ok()?;
        Some(IpAddr::from(v4))
    } else if family == libc::AF_INET6 as u8 {
        Some(IpAddr::from(raw).to_canonical())
    } else {
        None
    }
}

/// Reads one `inet_diag_msg`: the owner if it is established with exactly
/// the addresses asked for.
fn owner_in(msg: &[u8], local: SocketAddr, remote: SocketAddr) -> Option<TcpOwner> {
    if msg.len() < DIAG_MSG {
        return None;
    }
    let (family, state) = (msg[0], msg[1]);
    let sport = u16::from_be_bytes([msg[4], msg[5]]);
    let dport = u16::from_be_bytes([msg[6], msg[7]]);
    let src = addr_at(family, msg, 8)?;
    let dst = addr_at(family, msg, 24)?;
    let exact = sport == local.port()
        && dport == remote.port()
        && src == local.ip().to_canonical()
        && dst == remote.ip().to_canonical();
    if !exact || state != TCP_ESTABLISHED {
        return Some(TcpOwner::None);
    }
    Some(TcpOwner::Uid(u32_ne(msg, 4 + SOCKID + 12)?))
}

/// Reads the kernel's answer to request `seq`.
fn answer(buf: &[u8], seq: u32, local: SocketAddr, remote: SocketAddr) -> io::Result<TcpOwner> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "a malformed sock_diag answer");
    let mut at = 0;
    let mut found = TcpOwner::None;
    while at + NLMSG_HDR <= buf.len() {
        let len = u32_ne(buf, at).ok_or_else(bad)? as usize;
        let kind = u16_ne(buf, at + 4).ok_or_else(bad)?;
        let got_seq = u32_ne(buf, at + 8).ok_or_else(bad)?;
        if len < NLMSG_HDR || at + len > buf.len() {
            return Err(bad());
        }
        let body = &buf[at + NLMSG_HDR..at + len];
        if got_seq == seq {
            match kind {
                NLMSG_ERROR => {
                    let code = u32_ne(body, 0).ok_or_else(bad)? as i32;
                    if code != 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                }
                NLMSG_DONE => break,
                SOCK_DIAG_BY_FAMILY => {
                    found = owner_in(body, local, remote).ok_or_else(bad)?;
                }
                _ => return Err(bad()),
            }
        }
        // Messages are aligned to 4 bytes.
        at += (len + 3) & !3;
    }
    Ok(found)
}

/// The owner of the established TCP socket whose local address is `local`
/// and remote address `remote`, by an exact `NETLINK_SOCK_DIAG` lookup.
/// An error means netlink could not answer (no socket family, no TCP
/// diagnostics handler, a filter): the caller may ask [`proc_net_tcp_owner`].
/// The kernel says `ENOENT` both for "no such socket" and for "no TCP
/// diagnostics", so that, too, is an error here.
pub fn tcp_socket_owner(local: SocketAddr, remote: SocketAddr) -> io::Result<TcpOwner> {
    use nix::sys::socket::{
        recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
        SockProtocol, SockType,
    };
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    let timeout = nix::sys::time::TimeVal::new(ANSWER_TIMEOUT.as_secs() as i64, 0);
    setsockopt(&sock, sockopt::ReceiveTimeout, &timeout)?;
    let seq = 1;
    let req = request(seq, local, remote);
    let kernel = NetlinkAddr::new(0, 0);
    loop {
        match sendto(sock.as_raw_fd(), &req, &kernel, MsgFlags::empty()) {
            Ok(n) if n == req.len() => break,
            Ok(_) => return Err(io::Error::other("a short netlink write")),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let got = &buf[..n];
        // Answers to our one request only; anything else is skipped.
        if got.len() >= NLMSG_HDR && u32_ne(got, 8) == Some(seq) {
            return answer(got, seq, local, remote);
        }
    }
}

/// One `/proc/net/tcp{,6}` address (`0100007F:1F90`: the address as the
/// kernel's 32-bit words printed in its byte order, the port in hex).
fn proc_addr(field: &str) -> Option<SocketAddr> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    if addr.len() % 8 != 0 || !addr.is_ascii() {
        return None;
    }
    for i in (0..addr.len()).step_by(8) {
        let word = u32::from_str_radix(&addr[i..i + 8], 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes.as_slice()).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes.as_slice()).ok()?).to_canonical(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Finds the socket in the text of `/proc/net/tcp` or `/proc/net/tcp6`.
pub fn owner_in_proc_table(table: &str, local: SocketAddr, remote: SocketAddr) -> TcpOwner {
    let want = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (local, remote) = (want(local), want(remote));
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(l), Some(r), Some(st), Some(uid)) = (f.get(1), f.get(2), f.get(3), f.get(7))
        else {
            continue;
        };
        if proc_addr(l) != Some(local) || proc_addr(r) != Some(remote) {
            continue;
        }
        if u8::from_str_radix(st, 16).ok() != Some(TCP_ESTABLISHED) {
            continue;
        }
        if let Ok(uid) = uid.parse() {
            return TcpOwner::Uid(uid);
        }
    }
    TcpOwner::None
}

/// [`tcp_socket_owner`] from `/proc/net/tcp` and `/proc/net/tcp6` (the
/// kernel's table as text; slower, for where netlink is unavailable).
pub fn proc_net_tcp_owner(local: SocketAddr, remote: SocketAddr) -> io::Result<TcpOwner> {
    let mut read_any = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        read_any = true;
        if let found @ TcpOwner::Uid(_) = owner_in_proc_table(&text, local, remote) {
            return Ok(found);
        }
    }
    if read_any {
        Ok(TcpOwner::None)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            "neither /proc/net/tcp nor /proc/net/tcp6 is readable",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::process::CommandExt;

    /// The peer of an accepted connection: (its local, its remote) end.
    fn peer_of(conn: &TcpStream) -> (SocketAddr, SocketAddr) {
        (conn.peer_addr().unwrap(), conn.local_addr().unwrap())
    }

    /// A client connected from a child running as `uid` (bash's
    /// `/dev/tcp`), which waits for one line before it exits.
    fn child_client(uid: u32, host: &str, port: u16) -> std::process::Child {
        std::process::Command::new("/bin/bash")
            .arg("-c")
            .arg(format!(
                "exec 3<>/dev/tcp/{host}/{port}; echo hi >&3; read -t 60 line <&3"
            ))
            .uid(uid)
            .gid(uid)
            .spawn()
            .unwrap()
    }

    fn identified_as_child(bind: &str, host: &str) {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root: its client runs as another uid"
        );
        let uid = 0x6c00_0000 + std::process::id() % 0x10000;
        let listener = TcpListener::bind(bind).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut child = child_client(uid, host, port);
        let (mut conn, _) = listener.accept().unwrap();
        let mut hi = [0u8; 3];
        conn.read_exact(&mut hi).unwrap();
        let (local, remote) = peer_of(&conn);
        assert_eq!(tcp_socket_owner(local, remote).unwrap(), TcpOwner::Uid(uid));
        assert_eq!(
            proc_net_tcp_owner(local, remote).unwrap(),
            TcpOwner::Uid(uid),
            "the /proc fallback agrees"
        );
        // Our own end is not the peer's: its owner is root, and asking with
        // the tuple reversed finds our socket, not the child's.
        assert_eq!(tcp_socket_owner(remote, local).unwrap(), TcpOwner::Uid(0));
        conn.write_all(b"bye\n").unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn an_ipv4_loopback_peer_is_the_uid_that_made_its_socket() {
        identified_as_child("127.0.0.1:0", "127.0.0.1");
    }

    #[test]
    fn an_ipv6_loopback_peer_is_the_uid_that_made_its_socket() {
        identified_as_child("[::1]:0", "::1");
    }

    #[test]
    fn a_peer_socket_that_is_gone_or_closing_identifies_nobody() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // Closed with a reset: the peer's socket no longer exists.
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (conn, _) = listener.accept().unwrap();
        let (local, remote) = peer_of(&conn);
        assert_eq!(tcp_socket_owner(local, remote).unwrap(), TcpOwner::Uid(0));
        nix::sys::socket::setsockopt(
            &client,
            nix::sys::socket::sockopt::Linger,
            &libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        )
        .unwrap();
        drop(client);
        // A child another test forks at this moment holds a copy of the
        // descriptor until it executes: the reset comes with the last copy.
        let gone = (0..500)
            .map(|_| {
                let now = tcp_socket_owner(local, remote);
                if now.as_ref().is_ok_and(|o| *o == TcpOwner::Uid(0)) {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                now
            })
            .find(|now| !now.as_ref().is_ok_and(|o| *o == TcpOwner::Uid(0)));
        assert!(
            matches!(gone, Some(Ok(TcpOwner::None) | Err(_))),
            "a reset peer identified as {gone:?}"
        );
        assert_eq!(proc_net_tcp_owner(local, remote).unwrap(), TcpOwner::None);
        // Closed in order (shut down: whoever else holds a copy), the
        // peer's socket is in FIN_WAIT, not established.
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (conn2, _) = listener.accept().unwrap();
        let (local, remote) = peer_of(&conn2);
        client.shutdown(std::net::Shutdown::Both).unwrap();
        let closing = tcp_socket_owner(local, remote).unwrap();
        assert_eq!(closing, TcpOwner::None, "a closing peer is nobody");
        assert_eq!(proc_net_tcp_owner(local, remote).unwrap(), TcpOwner::None);
        drop((conn, conn2, client));
    }

    #[test]
    fn the_proc_table_is_read_exactly() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n   1: 0100007F:A2B4 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 20 4 30 10 -1\n   2: 0100007F:A2B6 0100007F:1F90 06 00000000:00000000 00:00000000 00000000  1001        0 3 1 0 20 4 30 10 -1\n";
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            owner_in_proc_table(table, a("127.0.0.1:41652"), a("127.0.0.1:8080")),
            TcpOwner::Uid(1000)
        );
        assert_eq!(
            owner_in_proc_table(table, a("[::ffff:127.0.0.1]:41652"), a("127.0.0.1:8080")),
            TcpOwner::Uid(1000),
            "v4-mapped addresses are the same socket"
        );
        // TIME_WAIT (06), the listener, a wrong port: nobody.
        for (l, r) in [
            ("127.0.0.1:41654", "127.0.0.1:8080"),
            ("127.0.0.1:8080", "0.0.0.0:0"),
            ("127.0.0.1:41652", "127.0.0.1:8081"),
        ] {
            assert_eq!(owner_in_proc_table(table, a(l), a(r)), TcpOwner::None);
        }
        assert_eq!(proc_addr("zz:1"), None);
        assert_eq!(
            proc_addr("00000000000000000000000001000000:1F90"),
            Some(a("[::1]:8080"))
        );
    }

    #[test]
    fn a_malformed_or_foreign_answer_identifies_nobody() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let (l, r) = (a("127.0.0.1:1"), a("127.0.0.1:2"));
        assert!(answer(&[1, 2, 3], 1, l, r).is_ok_and(|o| o == TcpOwner::None));
        let mut torn = request(1, l, r);
        torn[0] = 200;
        assert!(answer(&torn, 1, l, r).is_err(), "a length past the end");
        // An error answer is an error.
        let mut err = Vec::new();
        err.extend_from_slice(&36u32.to_ne_bytes());
        err.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err.extend_from_slice(&0u16.to_ne_bytes());
        err.extend_from_slice(&1u32.to_ne_bytes());
        err.extend_from_slice(&0u32.to_ne_bytes());
        err.extend_from_slice(&(-libc::ENOENT).to_ne_bytes());
        err.extend_from_slice(&[0u8; 16]);
        let e = answer(&err, 1, l, r).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }
}
