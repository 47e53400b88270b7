//! The daemon's end of a jailed process's control channel, for any pair of
//! message types: a `SOCK_SEQPACKET` socket pair, one postcard message per
//! datagram, descriptors attached (`SCM_RIGHTS`) to the message that names
//! them. Non-blocking, on the runtime: a process that stops reading stalls
//! only the tasks talking to it. Messages that may carry secrets are
//! encoded into buffers wiped after sending.
//!
//! What the process sends is untrusted: a datagram over the limit, one
//! carrying descriptors, or one that does not decode is an error; each
//! kind's own bounds on the fields come on top (the broker's:
//! `crate::broker::control::check`, the gateway's: `crate::gateway`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::unix::AsyncFd;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the control socket failed: {0}")]
    Io(#[from] io::Error),
    #[error("a message of {0} bytes is over the control channel's limit")]
    TooLarge(usize),
    #[error("cannot encode a control message: {0}")]
    Encode(postcard::Error),
    #[error("the process sent a message that does not decode")]
    Malformed,
    #[error("the process sent descriptors")]
    Descriptors,
    #[error("the process sent {0}")]
    OutOfBounds(&'static str),
}

/// The daemon's end of a control channel whose datagrams are at most
/// `limit` bytes.
#[derive(Debug)]
pub struct Control {
    sock: AsyncFd<OwnedFd>,
    limit: usize,
}

/// A new socket pair: the daemon's end (non-blocking, on the runtime) and
/// the process's (blocking, close-on-exec; the jail host makes it its
/// descriptor 3). Call it within the runtime.
pub fn pair(limit: usize) -> io::Result<(Control, OwnedFd)> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    for end in [&ours, &theirs] {
        nix::sys::socket::setsockopt(end, nix::sys::socket::sockopt::SndBuf, &limit)?;
    }
    let flags = OFlag::from_bits_truncate(fcntl(ours.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(
        ours.as_raw_fd(),
        FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK),
    )?;
    Ok((
        Control {
            sock: crate::sys::async_fd(ours)?,
            limit,
        },
        theirs,
    ))
}

impl Control {
    /// Sends `msg`, with `fd` attached if given.
    pub async fn send<T: Serialize>(
        &self,
        msg: &T,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), ControlError> {
        use nix::sys::socket::MsgFlags;
        let body = Zeroizing::new(postcard::to_stdvec(msg).map_err(ControlError::Encode)?);
        if body.len() > self.limit {
            return Err(ControlError::TooLarge(body.len()));
        }
        let raw: Vec<std::os::fd::RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
        loop {
            let mut ready = self.sock.writable().await?;
            let sent = ready.try_io(|sock| {
                super::wire::send_datagram(sock.as_fd(), &body, &raw, MsgFlags::MSG_DONTWAIT)
            });
            match sent {
                Ok(Ok(n)) if n == body.len() => return Ok(()),
                Ok(Ok(_)) => return Err(io::Error::other("a short datagram write").into()),
                Ok(Err(e)) => return Err(e.into()),
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one message into `buf` (kept by the reader); `None` once
    /// the process's end is closed.
    pub async fn recv<T: DeserializeOwned>(
        &self,
        buf: &mut Vec<u8>,
    ) -> Result<Option<T>, ControlError> {
        buf.resize(self.limit + 1, 0);
        let (n, fds) = loop {
            let mut ready = self.sock.readable().await?;
            match ready.try_io(|sock| crate::sys::recv_with_fds(sock.get_ref(), buf)) {
                Ok(Ok(got)) => break got,
                Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                    return Err(ControlError::TooLarge(buf.len()))
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_would_block) => continue,
            }
        };
        if !fds.is_empty() {
            return Err(ControlError::Descriptors);
        }
        if n == 0 {
            return Ok(None);
        }
        if n > self.limit {
            return Err(ControlError::TooLarge(n));
        }
        postcard::from_bytes(&buf[..n])
            .map(Some)
            .map_err(|_| ControlError::Malformed)
    }

    /// The daemon's end (for tests).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.get_ref().as_fd()
    }
}
