//! Handing the command's executable from `aivaultd` to the runner: the job
//! frame travels with the open file attached as `SCM_RIGHTS` to its first
//! byte, so the runner executes exactly the file the daemon resolved and
//! checked, whenever the job arrives (a warm runner waits for it idle).
//!
//! [`send_frame_with_fd`] is the sending half, in `aivault_proto::handoff`
//! (the daemon, and tests playing it; re-exported here); [`recv_frame_with_fd`]
//! the runner's receiving half.

use std::io::{IoSliceMut, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use aivault_proto::frame::check_len;
use aivault_proto::{FrameError, FRAME_HEADER_LEN};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

pub use aivault_proto::handoff::{send_frame_with_fd, send_frame_with_fds};

/// Why a job frame and its descriptor could not be received.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("the job arrived without exactly one executable descriptor (and at most one socket)")]
    NoDescriptor,
}

/// Reads one frame whose first byte carries exactly one descriptor (made
/// close-on-exec on arrival). A frame without one, or with more, is refused
/// and any received descriptor closed.
pub fn recv_frame_with_fd<S: Read + AsRawFd>(
    socket: &mut S,
) -> Result<(Vec<u8>, OwnedFd), HandoffError> {
    let (body, mut fds) = recv_frame_with_fds(socket)?;
    match (fds.pop(), fds.is_empty()) {
        (Some(fd), true) => Ok((body, fd)),
        _ => Err(HandoffError::NoDescriptor),
    }
}

/// A job frame: the executable, and, for a job whose command talks over
/// a socket instead of the runner's pumped pipes (an MCP gateway's
/// upstream server), that socket as a second descriptor; it becomes the
/// command's stdin and stdout. One or two descriptors, else refused.
pub fn recv_job_frame<S: Read + AsRawFd>(
    socket: &mut S,
) -> Result<(Vec<u8>, OwnedFd, Option<OwnedFd>), HandoffError> {
    let (body, fds) = recv_frame_with_fds(socket)?;
    let mut fds = fds.into_iter();
    match (fds.next(), fds.next(), fds.next()) {
        (Some(exe), stdio, None) => Ok((body, exe, stdio)),
        _ => Err(HandoffError::NoDescriptor),
    }
}

/// One frame and every descriptor on its first byte (at most two).
fn recv_frame_with_fds<S: Read + AsRawFd>(
    socket: &mut S,
) -> Result<(Vec<u8>, Vec<OwnedFd>), HandoffError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let (got, received) = loop {
        let mut iov = [IoSliceMut::new(&mut header)];
        match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
                let mut fds: Vec<OwnedFd> = Vec::new();
                for c in msg.cmsgs().map_err(|e| FrameError::Io(e.into()))? {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        fds.extend(crate::sys::adopt_received_fds(raw));
                    }
                }
                if truncated {
                    return Err(HandoffError::NoDescriptor);
                }
                break (msg.bytes, fds);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(FrameError::Io(e.into()).into()),
        }
    };
    if got == 0 {
        return Err(FrameError::Closed.into());
    }
    socket
        .read_exact(&mut header[got..])
        .map_err(FrameError::Io)?;
    let len = check_len(header)?;
    let mut body = vec![0u8; len];
    socket.read_exact(&mut body).map_err(FrameError::Io)?;
    Ok((body, received))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn a_frame_and_its_descriptor_arrive_together() {
        let (a, mut b) = UnixStream::pair().expect("pair");
        let file = std::fs::File::open("/proc/self/exe").expect("open");
        let bytes = frame(b"job body");
        let n = send_frame_with_fd(a.as_fd(), &bytes, file.as_fd()).expect("send");
        assert_eq!(n, bytes.len());
        let (body, fd) = recv_frame_with_fd(&mut b).expect("recv");
        assert_eq!(body, b"job body");
        let flags =
            nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).expect("flags");
        assert_ne!(
            flags & libc::FD_CLOEXEC,
            0,
            "received descriptor is close-on-exec"
        );
        let a_meta = file.metadata().expect("meta");
        let b_meta = std::fs::File::from(fd).metadata().expect("meta");
        use std::os::unix::fs::MetadataExt;
        assert_eq!((a_meta.dev(), a_meta.ino()), (b_meta.dev(), b_meta.ino()));
    }

    #[test]
    fn a_job_takes_its_executable_and_at_most_one_socket() {
        let (a, mut b) = UnixStream::pair().expect("pair");
        let file = std::fs::File::open("/proc/self/exe").expect("open");
        let (sock, _peer) = UnixStream::pair().expect("pair");
        let bytes = frame(b"job body");
        send_frame_with_fds(a.as_fd(), &bytes, &[file.as_fd(), sock.as_fd()]).expect("send");
        let (body, _exe, stdio) = recv_job_frame(&mut b).expect("recv");
        assert_eq!(body, b"job body");
        let stdio = stdio.expect("the socket arrived");
        assert!(std::os::unix::net::UnixStream::from(stdio)
            .peer_addr()
            .is_ok());
        // The plain hand-off still wants exactly one.
        send_frame_with_fds(a.as_fd(), &bytes, &[file.as_fd(), sock.as_fd()]).expect("send");
        assert!(matches!(
            recv_frame_with_fd(&mut b),
            Err(HandoffError::NoDescriptor)
        ));
        // Without the executable, a job is refused.
        std::io::Write::write_all(&mut &a, &bytes).expect("write");
        assert!(matches!(
            recv_job_frame(&mut b),
            Err(HandoffError::NoDescriptor)
        ));
    }

    #[test]
    fn a_frame_without_a_descriptor_is_refused() {
        let (mut a, mut b) = UnixStream::pair().expect("pair");
        std::io::Write::write_all(&mut a, &frame(b"job body")).expect("write");
        assert!(matches!(
            recv_frame_with_fd(&mut b),
            Err(HandoffError::NoDescriptor)
        ));
    }

    #[test]
    fn a_closed_socket_is_reported_as_closed() {
        let (a, mut b) = UnixStream::pair().expect("pair");
        drop(a);
        assert!(matches!(
            recv_frame_with_fd(&mut b),
            Err(HandoffError::Frame(FrameError::Closed))
        ));
    }
}
