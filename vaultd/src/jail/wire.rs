//! What the daemon and the jail host say to each other: one postcard
//! message per `SOCK_SEQPACKET` datagram, descriptors (a cgroup to join, a
//! pidfd of a started process) attached with `SCM_RIGHTS`.
//!
//! Every request gets exactly one reply, in order. Nothing here ever holds
//! a secret: the jail host learns whom to start and where, never what the
//! process will be told.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Largest message either side sends or accepts.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Which program a jailed process runs. Each kind's executable is fixed
/// when the jail host starts; a request names the kind, never a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JailKind {
    /// `aivault-runner`: executes one allowlisted command with secrets.
    Runner,
    /// `aivault-broker`: the HTTP capability broker of one caller uid,
    /// under a fresh uid; its control socket is attached to the request
    /// and becomes its descriptor 3 (`aivault_proto::broker::CONTROL_FD`).
    Broker,
    /// `aivault-gateway`: the MCP gateway of one agent connection, under a
    /// fresh uid; its control socket becomes its descriptor 3
    /// (`aivault_proto::gateway::CONTROL_FD`).
    Gateway,
}

impl JailKind {
    /// A stable name for logs and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            JailKind::Runner => "runner",
            JailKind::Broker => "broker",
            JailKind::Gateway => "gateway",
        }
    }

    /// Whether the kind is started with a control socket (and only under a
    /// run uid of its own, without a working directory).
    pub fn has_control(self) -> bool {
        matches!(self, JailKind::Broker | JailKind::Gateway)
    }
}

/// Who a jailed process runs as, where, and with which arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnRequest {
    pub kind: JailKind,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (empty for a fresh run uid).
    pub groups: Vec<u32>,
    /// The working directory, entered once the uid has changed.
    pub cwd: PathBuf,
    /// Arguments after the kind's own program name.
    pub args: Vec<String>,
    /// A `cgroup.procs` descriptor is attached: join it first.
    pub join_cgroup: bool,
    /// The caller's working directory is attached (after the cgroup, if
    /// any): give the process a mount of it, in a mount namespace of its
    /// own.
    #[serde(default)]
    pub workdir: Option<WorkdirRequest>,
    /// A socket is attached (after the cgroup and the working directory,
    /// if any): the process gets it as descriptor 3. Exactly the kinds
    /// that have a control channel ([`JailKind::has_control`]) get one.
    #[serde(default)]
    pub control: bool,
}

/// How a jailed process gets the caller's working directory
/// (`crate::sys::workdir_mount`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkdirRequest {
    /// Where the mount goes: an empty directory the daemon made for the
    /// run (opened without following symbolic links).
    pub target: PathBuf,
    /// The caller's uid and gid, shown to a fresh-uid process as its own;
    /// `None` in caller mode (the process is the caller).
    pub caller: Option<(u32, u32)>,
    pub writable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Are you there? (Answered `Pong`.)
    Ping,
    Spawn(SpawnRequest),
    /// SIGKILL every process of `uid`; first (and after) reap `reap`, the
    /// uid's jailed process, if it has ended.
    Kill {
        uid: u32,
        reap: Option<i32>,
    },
    /// Reap the jailed process `pid` if it has ended.
    Reap {
        pid: i32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Pong,
    /// Started; its pidfd is attached.
    Spawned {
        pid: i32,
    },
    /// Every process of the uid was sent SIGKILL; `none_left`: no task of
    /// the uid exists any more, not even a zombie.
    Killed {
        none_left: bool,
        reaped: bool,
    },
    Reaped {
        reaped: bool,
    },
    /// The request failed at the step named.
    Failed {
        message: String,
    },
}

/// Sends `msg` as one datagram, with `fds` attached.
pub fn send<T: Serialize>(sock: BorrowedFd<'_>, msg: &T, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    use nix::sys::socket::MsgFlags;
    let body = postcard::to_stdvec(msg).map_err(io::Error::other)?;
    if body.len() > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "message too large",
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    match send_datagram(sock, &body, &raw, MsgFlags::empty())? {
        n if n == body.len() => Ok(()),
        _ => Err(io::Error::other("short datagram write")),
    }
}

/// One `sendmsg` of `body` with `fds` attached (`SCM_RIGHTS`), retried on
/// `EINTR`, never raising `SIGPIPE`; the bytes sent. (Shared with the
/// non-blocking channel, `super::control`, which adds `MSG_DONTWAIT`.)
pub fn send_datagram(
    sock: BorrowedFd<'_>,
    body: &[u8],
    fds: &[RawFd],
    flags: nix::sys::socket::MsgFlags,
) -> io::Result<usize> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let cmsgs: Vec<ControlMessage<'_>> = if fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(fds)]
    };
    let iov = [io::IoSlice::new(body)];
    loop {
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &iov,
            &cmsgs,
            flags | MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Receives one message and its descriptors; `None` when the peer closed.
pub fn recv<T: for<'de> Deserialize<'de>>(
    sock: &impl AsFd,
) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let (n, fds) = crate::sys::recv_with_fds(sock, &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    let msg = postcard::from_bytes(&buf[..n])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Some((msg, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    #[test]
    fn a_request_and_its_descriptor_arrive_whole() {
        let (a, b) = pair();
        let req = Request::Spawn(SpawnRequest {
            kind: JailKind::Runner,
            uid: 61234,
            gid: 61234,
            groups: vec![],
            cwd: "/run/aivault/runs/61234/home".into(),
            args: vec!["--socket".into(), "/run/aivault/runner.sock".into()],
            join_cgroup: true,
            workdir: Some(WorkdirRequest {
                target: "/run/aivault/runs/61234/work".into(),
                caller: Some((1000, 1000)),
                writable: false,
            }),
            control: false,
        });
        let file = std::fs::File::open("/dev/null").unwrap();
        send(a.as_fd(), &req, &[file.as_fd()]).unwrap();
        let (got, fds): (Request, _) = recv(&b).unwrap().unwrap();
        assert_eq!(got, req);
        assert_eq!(fds.len(), 1);
        drop(a);
        assert!(
            recv::<Request>(&b).unwrap().is_none(),
            "close is seen as None"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let (a, b) = pair();
        nix::unistd::write(&a, &[0xff, 0xff, 0xff, 0xff, 0x0f]).unwrap();
        assert!(recv::<Request>(&b).is_err());
    }

    #[test]
    fn an_oversized_message_is_refused_before_sending() {
        let (a, _b) = pair();
        let big = Reply::Failed {
            message: "x".repeat(MAX_MESSAGE + 1),
        };
        assert!(send(a.as_fd(), &big, &[]).is_err());
    }
}
