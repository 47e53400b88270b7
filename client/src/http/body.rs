//! A response body as it arrives: `Content-Length`, `chunked`, or (for an
//! answer with neither, on a closing connection) up to the close. A body
//! cut short fails with `UnexpectedEof`, a malformed chunk with
//! `InvalidData`; neither is ever read as a complete body.

use std::io::{self, BufRead, Read};
use std::time::Duration;

use super::head::Head;

/// Longest chunk-size line (size, extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// Most bytes of trailer fields after the last chunk.
const MAX_TRAILERS: usize = 16 * 1024;

/// How the body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the connection closes.
    Close,
}

impl Framing {
    /// The framing of `head`, the answer to a `method` request.
    pub fn of(head: &Head, method: &str) -> io::Result<Framing> {
        if method == "HEAD" || head.status == 204 || head.status == 304 || head.status < 200 {
            return Ok(Framing::Empty);
        }
        let te: Vec<&str> = head.headers_named("transfer-encoding").collect();
        let cl: Vec<&str> = head.headers_named("content-length").collect();
        if !te.is_empty() {
            if !cl.is_empty() {
                return Err(invalid("both Transfer-Encoding and Content-Length"));
            }
            let last = te
                .iter()
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .next_back()
                .unwrap_or("");
            return if last.eq_ignore_ascii_case("chunked") {
                Ok(Framing::Chunked)
            } else {
                Ok(Framing::Close)
            };
        }
        match cl.as_slice() {
            [] => Ok(Framing::Close),
            [first, rest @ ..] => {
                if rest.iter().any(|v| v != first) {
                    return Err(invalid("conflicting Content-Length values"));
                }
                if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid("Content-Length is not a number"));
                }
                first
                    .parse::<u64>()
                    .map(Framing::Length)
                    .map_err(|_| invalid("Content-Length is out of range"))
            }
        }
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

fn cut_short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the connection closed before the response body ended",
    )
}

#[derive(Debug)]
enum State {
    /// Bytes left of a `Content-Length` body.
    Length(u64),
    /// Bytes left of the current chunk; 0: a size line comes next.
    Chunk {
        left: u64,
        first: bool,
    },
    Close,
    Done,
}

/// A body reader over the connection `R`.
#[derive(Debug)]
pub struct Body<R> {
    inner: io::BufReader<R>,
    state: State,
    timeout: Option<Duration>,
}

impl<R: Read> Body<R> {
    pub fn new(inner: io::BufReader<R>, framing: Framing, timeout: Option<Duration>) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunk {
                left: 0,
                first: true,
            },
            Framing::Close => State::Close,
        };
        Body {
            inner,
            state,
            timeout,
        }
    }

    /// The wait bound this body was read with.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// One CRLF- (or LF-) terminated line of at most `max` bytes.
    fn line(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let mut raw = Vec::new();
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Err(cut_short());
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if raw.len() + take > max {
                return Err(invalid("a chunk line is too long"));
            }
            raw.extend_from_slice(&buf[..take]);
            self.inner.consume(take);
            if done {
                raw.pop();
                if raw.last() == Some(&b'\r') {
                    raw.pop();
                }
                return Ok(raw);
            }
        }
    }

    /// Reads the next chunk's size (after the previous chunk's CRLF);
    /// at the last chunk, reads the trailers and ends the body.
    fn next_chunk(&mut self, first: bool) -> io::Result<()> {
        if !first && !self.line(2)?.is_empty() {
            return Err(invalid("a chunk does not end in CRLF"));
        }
        let l = self.line(MAX_CHUNK_LINE)?;
        let size = l.split(|&b| b == b';').next().unwrap_or(&[]);
        let size = std::str::from_utf8(size)
            .ok()
            .map(|s| s.trim_matches(|c| c == ' ' || c == '\t'))
            .filter(|s| !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or_else(|| invalid("a chunk size is not hexadecimal"))?;
        if size == 0 {
            let mut left = MAX_TRAILERS;
            loop {
                // The blank line that ends them always fits.
                let t = self.line(left.max(2))?;
                if t.is_empty() {
                    break;
                }
                left = left.saturating_sub(t.len() + 2);
            }
            self.state = State::Done;
        } else {
            self.state = State::Chunk {
                left: size,
                first: false,
            };
        }
        Ok(())
    }
}

impl<R: Read> Read for Body<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                State::Done => return Ok(0),
                State::Close => return self.inner.read(out),
                State::Length(left) => {
                    let want = out.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self.inner.read(&mut out[..want])?;
                    if n == 0 {
                        return Err(cut_short());
                    }
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::Done
                    } else {
                        State::Length(left)
                    };
                    return Ok(n);
                }
                State::Chunk { left: 0, first } => self.next_chunk(first)?,
                State::Chunk { left, first } => {
                    let want = out.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self.inner.read(&mut out[..want])?;
                    if n == 0 {
                        return Err(cut_short());
                    }
                    self.state = State::Chunk {
                        left: left - n as u64,
                        first,
                    };
                    return Ok(n);
                }
            }
        }
    }
}
