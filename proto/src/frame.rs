//! Length-prefixed framing over any blocking `Read`/`Write`.
//!
//! The daemon has its own async reader built on [`parse_header`]-equivalent
//! logic ([`check_len`]) so both ends enforce the same limit.

use std::io::{self, Read, Write};

/// Largest frame either side accepts: enough for a maximum-size secret plus
/// metadata, small enough that a hostile length costs nothing.
pub const MAX_FRAME: usize = 256 * 1024;

/// Bytes in the length prefix.
pub const FRAME_HEADER_LEN: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("empty frame")]
    Empty,
    #[error("malformed message")]
    Decode,
    #[error("message could not be encoded")]
    Encode,
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Validates an announced frame length.
pub fn check_len(header: [u8; FRAME_HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Reads one frame body. A clean end of stream before the header is `Closed`.
pub fn read_frame(r: &mut impl Read) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    let mut got = 0;
    while got < FRAME_HEADER_LEN {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = check_len(header)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(body)
}

/// Writes one frame (header and body in a single buffer, one write call).
pub fn write_frame(w: &mut impl Write, body: &[u8]) -> Result<(), FrameError> {
    if body.is_empty() {
        return Err(FrameError::Empty);
    }
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    // The copy may hold a secret (a `set` request): wiped on drop.
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(FRAME_HEADER_LEN + body.len()));
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf)?;
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").unwrap();
        assert_eq!(read_frame(&mut &buf[..]).unwrap(), b"hello");
    }

    #[test]
    fn oversize_announcement_is_refused_before_allocation() {
        let header = (4u32 << 30).wrapping_sub(1).to_be_bytes();
        assert!(matches!(
            read_frame(&mut &header[..]),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn truncated_body_is_an_error() {
        let mut buf = 10u32.to_be_bytes().to_vec();
        buf.extend_from_slice(b"abc");
        assert!(matches!(read_frame(&mut &buf[..]), Err(FrameError::Io(_))));
    }

    #[test]
    fn empty_stream_is_closed_and_empty_frame_refused() {
        assert!(matches!(read_frame(&mut &[][..]), Err(FrameError::Closed)));
        assert!(matches!(
            read_frame(&mut &[0u8, 0, 0, 0][..]),
            Err(FrameError::Empty)
        ));
    }
}
