//! The sending half of the executable hand-off: the daemon sends the
//! runner's job frame with the command's open file attached as
//! `SCM_RIGHTS` to its first byte, so the runner executes exactly the file
//! the daemon resolved and checked. The receiving half is the runner's
//! (`aivault_runner::handoff`).

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

/// Sends as much of `bytes` (a whole frame: header and body) as the socket
/// takes in one `sendmsg`, with `fd` attached. Returns the bytes sent; the
/// caller writes any rest plainly (the descriptor goes with the first byte).
/// Works on blocking and non-blocking sockets alike (`WouldBlock` is
/// returned as an error for the caller to wait on). Nothing is sent for an
/// empty `bytes`: a descriptor needs at least one byte to travel with.
pub fn send_frame_with_fd(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fd: BorrowedFd<'_>,
) -> io::Result<usize> {
    send_frame_with_fds(socket, bytes, &[fd])
}

/// [`send_frame_with_fd`] with several descriptors: the executable, then
/// for a job whose command talks over a socket, that socket (it becomes
/// the command's stdin and stdout).
pub fn send_frame_with_fds(
    socket: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    if bytes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a descriptor needs at least one byte to travel with",
        ));
    }
    let fds: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(bytes)];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn the_bytes_go_out_with_the_descriptor() {
        let (a, mut b) = UnixStream::pair().expect("pair");
        let file = std::fs::File::open("/proc/self/exe").expect("open");
        let n = send_frame_with_fd(a.as_fd(), b"\0\0\0\x01x", file.as_fd()).expect("send");
        assert_eq!(n, 5);
        // (The runner's half, `aivault_runner::handoff`, tests receiving
        // the descriptor; a plain read drops it.)
        let mut got = [0u8; 5];
        b.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"\0\0\0\x01x");
    }

    #[test]
    fn nothing_to_carry_the_descriptor_is_refused() {
        let (a, _b) = UnixStream::pair().expect("pair");
        let file = std::fs::File::open("/proc/self/exe").expect("open");
        let err = send_frame_with_fd(a.as_fd(), b"", file.as_fd()).expect_err("empty");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
