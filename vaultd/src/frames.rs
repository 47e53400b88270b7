//! Async framing over tokio streams, enforcing the same limits as
//! [`aivault_proto::read_frame`]: the length is checked before allocating.

use aivault_proto::{frame::check_len, FrameError, FRAME_HEADER_LEN};
use std::io::IoSlice;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads one frame body; a clean end of stream before a header is `Closed`.
pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(FrameError::Io(e)),
    }
    let len = check_len(header)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(body)
}

/// Writes one frame, header and body in one vectored write where the
/// stream takes it all (a reader woken by the header alone would wait again
/// for the body), the body straight from the caller's buffer (no copy that
/// could outlive a secret).
pub async fn write<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> Result<(), FrameError> {
    if body.is_empty() {
        return Err(FrameError::Empty);
    }
    if body.len() > aivault_proto::MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let header = (body.len() as u32).to_be_bytes();
    let mut done = 0;
    while done < header.len() {
        let parts = [IoSlice::new(&header[done..]), IoSlice::new(body)];
        match w.write_vectored(&parts).await? {
            0 => return Err(FrameError::Io(std::io::ErrorKind::WriteZero.into())),
            n => done += n,
        }
    }
    w.write_all(&body[done - header.len()..]).await?;
    w.flush().await?;
    Ok(())
}

/// Encodes and writes one message.
pub async fn send<W: AsyncWrite + Unpin, T: serde::Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    write(w, &aivault_proto::encode(msg)?).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames survive a stream that takes a few bytes per write, splitting
    /// the header itself.
    #[tokio::test]
    async fn frames_cross_a_stream_that_takes_three_bytes_at_a_time() {
        let (mut a, mut b) = tokio::io::duplex(3);
        let bodies: Vec<Vec<u8>> = vec![vec![7], (0..=255).collect(), vec![1; 5000]];
        let sent = bodies.clone();
        let writer = tokio::spawn(async move {
            for body in &sent {
                write(&mut a, body).await.expect("write");
            }
        });
        for body in &bodies {
            assert_eq!(&read(&mut b).await.expect("read"), body);
        }
        writer.await.expect("writer");
        assert!(matches!(read(&mut b).await, Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn an_empty_or_oversized_body_is_refused_before_anything_is_written() {
        let (mut a, mut b) = tokio::io::duplex(64);
        assert!(matches!(write(&mut a, &[]).await, Err(FrameError::Empty)));
        let big = vec![0u8; aivault_proto::MAX_FRAME + 1];
        assert!(matches!(
            write(&mut a, &big).await,
            Err(FrameError::TooLarge(_))
        ));
        drop(a);
        assert!(matches!(read(&mut b).await, Err(FrameError::Closed)));
    }
}
