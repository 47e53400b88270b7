//! The control socket to the daemon: one `SOCK_SEQPACKET` datagram per
//! postcard message ([`aivault_proto::broker`]), descriptors as
//! `SCM_RIGHTS` on the datagram that names them.
//!
//! [`Control`] is the asynchronous side the service uses (many requests in
//! flight share it; each send is one atomic datagram). [`recv_blocking`] and
//! [`send_blocking`] serve the binary before its runtime exists (the
//! runtime's threads are started only after confinement, so they inherit
//! it). [`adopt_inherited`] takes ownership of the descriptor the broker was
//! started with without `unsafe`: the kernel duplicates it through a
//! private socketpair.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use aivault_proto::broker::{FromBroker, ToBroker, MAX_CONTROL};
use rustix::net::{
    recvmsg, sendmsg, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags,
    ReturnFlags, SendAncillaryBuffer, SendFlags, SocketFlags, SocketType,
};
use tokio::io::Interest;
use tokio::net::UnixDatagram;

/// Descriptors accepted on one datagram; more are closed and refused.
const MAX_FDS: usize = 4;

/// One message from the daemon with the descriptors it carried.
#[derive(Debug)]
pub struct Received {
    pub msg: ToBroker,
    pub fds: Vec<OwnedFd>,
}

/// The asynchronous control socket. Tokio has no sequenced-packet type;
/// its datagram socket supplies the readiness (the calls themselves are
/// `recvmsg`/`sendmsg`, which are the same on both kinds).
#[derive(Debug)]
pub struct Control {
    sock: UnixDatagram,
}

impl Control {
    /// Wraps the control socket (it is made non-blocking). Must be called
    /// inside a tokio runtime.
    pub fn new(fd: OwnedFd) -> io::Result<Control> {
        check_seqpacket(&fd)?;
        let std = std::os::unix::net::UnixDatagram::from(fd);
        std.set_nonblocking(true)?;
        Ok(Control {
            sock: UnixDatagram::from_std(std)?,
        })
    }

    /// The next message; `None` when the daemon closed its end.
    pub async fn recv(&self) -> io::Result<Option<Received>> {
        self.sock
            .async_io(Interest::READABLE, || recv_once(self.sock.as_fd()))
            .await
    }

    /// Sends one message.
    pub async fn send(&self, msg: &FromBroker) -> io::Result<()> {
        let bytes = encode(msg)?;
        self.sock
            .async_io(Interest::WRITABLE, || send_once(self.sock.as_fd(), &bytes))
            .await
    }
}

/// Receives one message on a blocking socket.
pub fn recv_blocking(fd: &OwnedFd) -> io::Result<Option<Received>> {
    recv_once(fd.as_fd())
}

/// Sends one message on a blocking socket.
pub fn send_blocking(fd: &OwnedFd, msg: &FromBroker) -> io::Result<()> {
    send_once(fd.as_fd(), &encode(msg)?)
}

fn encode(msg: &FromBroker) -> io::Result<Vec<u8>> {
    let bytes = postcard::to_stdvec(msg).map_err(io::Error::other)?;
    if bytes.len() > MAX_CONTROL {
        return Err(io::Error::other("control message too large"));
    }
    Ok(bytes)
}

fn send_once(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<()> {
    let mut space: [MaybeUninit<u8>; 0] = [];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let sent = sendmsg(
        fd,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if sent != bytes.len() {
        return Err(io::Error::other("control message sent in part"));
    }
    Ok(())
}

fn recv_once(fd: BorrowedFd<'_>) -> io::Result<Option<Received>> {
    let mut buf = vec![0u8; MAX_CONTROL];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(
        fd,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = msg {
            fds.extend(rights);
        }
    }
    if got.flags.contains(ReturnFlags::TRUNC) || got.flags.contains(ReturnFlags::CTRUNC) {
        return Err(io::Error::other("control message truncated"));
    }
    if got.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    let msg = postcard::from_bytes(&buf[..got.bytes])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Some(Received { msg, fds }))
}

fn check_seqpacket(fd: &OwnedFd) -> io::Result<()> {
    let ty = rustix::net::sockopt::socket_type(fd)?;
    let family = rustix::net::sockopt::socket_domain(fd)?;
    if ty != SocketType::SEQPACKET || family != AddressFamily::UNIX {
        return Err(io::Error::other(
            "the control descriptor is not a unix SOCK_SEQPACKET socket",
        ));
    }
    Ok(())
}

/// Takes ownership of an inherited descriptor (the control socket at
/// [`aivault_proto::broker::CONTROL_FD`]) without `unsafe`: it is sent over
/// a private socketpair and received as an [`OwnedFd`] (a duplicate), and
/// the inherited number is closed. Fails if `raw` is not open.
pub fn adopt_inherited(raw: RawFd) -> io::Result<OwnedFd> {
    use nix::sys::socket::{sendmsg as nix_sendmsg, ControlMessage, MsgFlags};
    use std::os::fd::AsRawFd;

    // Checked first: were `raw` closed, the socketpair below could take its
    // number, and closing `raw` would close the pair's own end.
    nix::fcntl::fcntl(raw, nix::fcntl::FcntlArg::F_GETFD).map_err(io::Error::from)?;
    let (a, b) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let fds = [raw];
    nix_sendmsg::<()>(
        a.as_fd().as_raw_fd(),
        &[IoSlice::new(b"fd")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(io::Error::from)?;
    let mut buf = [0u8; 2];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    recvmsg(
        &b,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut adopted = None;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut rights) = msg {
            adopted = rights.next();
        }
    }
    let adopted = adopted.ok_or_else(|| io::Error::other("descriptor not received"))?;
    nix::unistd::close(raw).map_err(io::Error::from)?;
    Ok(adopted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::SendAncillaryMessage;

    fn pair() -> (OwnedFd, OwnedFd) {
        rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap()
    }

    fn send_raw(fd: &OwnedFd, bytes: &[u8], attach: Option<BorrowedFd<'_>>) {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        let fds;
        if let Some(a) = attach {
            fds = [a];
            assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
        }
        sendmsg(fd, &[IoSlice::new(bytes)], &mut control, SendFlags::empty()).unwrap();
    }

    #[test]
    fn a_connection_arrives_with_its_socket_and_garbage_or_eof_are_told_apart() {
        let (daemon, broker) = pair();
        let (attached, _peer) = pair();
        let msg = postcard::to_stdvec(&ToBroker::Connection { conn: 9 }).unwrap();
        send_raw(&daemon, &msg, Some(attached.as_fd()));
        let got = recv_blocking(&broker).unwrap().unwrap();
        assert_eq!(got.msg, ToBroker::Connection { conn: 9 });
        assert_eq!(got.fds.len(), 1);
        assert_eq!(
            rustix::net::sockopt::socket_type(&got.fds[0]).unwrap(),
            SocketType::SEQPACKET
        );
        send_raw(&daemon, &[0xff, 0xff, 0xff], None);
        let e = recv_blocking(&broker).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        drop(daemon);
        assert!(recv_blocking(&broker).unwrap().is_none());
    }

    #[test]
    fn an_inherited_descriptor_is_adopted_and_its_number_closed() {
        let (a, b) = pair();
        use std::os::fd::{AsRawFd, IntoRawFd};
        let raw = b.into_raw_fd();
        let owned = adopt_inherited(raw).unwrap();
        assert_ne!(owned.as_raw_fd(), raw);
        send_blocking(
            &a.try_clone().unwrap(),
            &FromBroker::Confined(Err("x".into())),
        )
        .unwrap();
        let mut buf = [0u8; 64];
        let n = rustix::net::recv(&owned, &mut buf, RecvFlags::empty())
            .unwrap()
            .0;
        let back: FromBroker = postcard::from_bytes(&buf[..n]).unwrap();
        assert_eq!(back, FromBroker::Confined(Err("x".into())));
    }

    #[test]
    fn a_socket_that_is_not_seqpacket_is_refused() {
        let (a, _b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        assert!(check_seqpacket(&a).is_err());
    }
}
