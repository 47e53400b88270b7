//! The runner's end of the daemon connection: sending [`RunnerEvent`]s and
//! reading [`RunInput`] frames without ever blocking on a partial frame.
//!
//! Writes are blocking (the daemon reads continuously); reads go through
//! [`FrameReader`], which is fed by one `read` per readable poll and hands
//! out complete frames only, so a slow daemon cannot stall the pump loop
//! in the middle of a frame.

use std::io::{self, Read, Write};

use aivault_proto::frame::check_len;
use aivault_proto::{FrameError, RunnerEvent, Stream, FRAME_HEADER_LEN};

/// Largest output payload per [`RunnerEvent::Output`] frame, well under
/// [`aivault_proto::MAX_FRAME`] once encoded.
pub const OUTPUT_CHUNK: usize = 128 * 1024;

/// Bytes read from the socket at a time.
const READ_SIZE: usize = 64 * 1024;

/// Encodes and writes one event.
pub fn send(w: &mut impl Write, event: &RunnerEvent) -> Result<(), FrameError> {
    let body = aivault_proto::encode(event)?;
    aivault_proto::write_frame(w, &body)
}

/// Sends `data` as as many `Output` events as it takes; nothing if empty.
pub fn send_output(w: &mut impl Write, stream: Stream, data: &[u8]) -> Result<(), FrameError> {
    for chunk in data.chunks(OUTPUT_CHUNK) {
        send(
            w,
            &RunnerEvent::Output {
                stream,
                data: chunk.to_vec(),
            },
        )?;
    }
    Ok(())
}

/// Reassembles frames from whatever reads return.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// One `read` into the buffer; `Ok(0)` is end of stream.
    pub fn fill(&mut self, r: &mut impl Read) -> io::Result<usize> {
        let start = self.buf.len();
        self.buf.resize(start + READ_SIZE, 0);
        let result = r.read(&mut self.buf[start..]);
        let n = *result.as_ref().unwrap_or(&0);
        self.buf.truncate(start + n);
        result
    }

    /// The next complete frame body, if one is buffered. Announced lengths
    /// are checked before waiting for the body.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(header) = self.buf.get(..FRAME_HEADER_LEN) else {
            return Ok(None);
        };
        let mut bytes = [0u8; FRAME_HEADER_LEN];
        bytes.copy_from_slice(header);
        let len = check_len(bytes)?;
        let end = FRAME_HEADER_LEN + len;
        if self.buf.len() < end {
            return Ok(None);
        }
        let body = self.buf[FRAME_HEADER_LEN..end].to_vec();
        self.buf.drain(..end);
        Ok(Some(body))
    }

    /// Bytes of an incomplete frame are buffered (matters at end of stream).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aivault_proto::RunInput;

    /// A reader that returns at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn frames_split_anywhere_are_reassembled() {
        let mut wire = Vec::new();
        let inputs = [
            RunInput::Stdin(b"hello".to_vec()),
            RunInput::StdinEof,
            RunInput::Signal(15),
        ];
        for input in &inputs {
            let body = aivault_proto::encode(input).expect("encode");
            aivault_proto::write_frame(&mut wire, &body).expect("frame");
        }
        for step in [1, 3, 7, 1000] {
            let mut src = Trickle { data: &wire, step };
            let mut reader = FrameReader::default();
            let mut got = Vec::new();
            while reader.fill(&mut src).expect("read") > 0 {
                while let Some(body) = reader.next_frame().expect("frame") {
                    got.push(aivault_proto::decode::<RunInput>(&body).expect("decode"));
                }
            }
            assert_eq!(got, inputs);
            assert!(reader.is_empty());
        }
    }

    #[test]
    fn oversized_announcement_is_refused() {
        let mut reader = FrameReader::default();
        let header = u32::MAX.to_be_bytes();
        reader.fill(&mut &header[..]).expect("read");
        assert!(matches!(reader.next_frame(), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn output_is_chunked() {
        let mut wire = Vec::new();
        let data = vec![b'x'; OUTPUT_CHUNK * 2 + 5];
        send_output(&mut wire, Stream::Stderr, &data).expect("send");
        let mut src = &wire[..];
        let mut reader = FrameReader::default();
        let mut sizes = Vec::new();
        while reader.fill(&mut src).expect("read") > 0 {
            while let Some(body) = reader.next_frame().expect("frame") {
                match aivault_proto::decode(&body).expect("decode") {
                    RunnerEvent::Output { stream, data } => {
                        assert_eq!(stream, Stream::Stderr);
                        sizes.push(data.len());
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(sizes, [OUTPUT_CHUNK, OUTPUT_CHUNK, 5]);
    }
}
