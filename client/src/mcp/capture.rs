//! The bounded capture of one output stream of a `secret_run`: at most
//! [`Limit::bytes`] are kept, from the start ([`Keep::Head`]) or the end
//! ([`Keep::Tail`]) of the output; the rest is counted and dropped, so the
//! command runs to its natural end and its real status is reported.

/// Default bytes kept of each stream: enough for most answers, small
/// enough not to fill a model's context.
pub const DEFAULT_BYTES: usize = 16 * 1024;
/// Most bytes of each stream a call may ask for.
pub const MAX_BYTES: usize = 1024 * 1024;

/// Which part of a stream longer than the limit is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    Head,
    Tail,
}

impl Keep {
    pub fn as_str(self) -> &'static str {
        match self {
            Keep::Head => "head",
            Keep::Tail => "tail",
        }
    }
}

/// How much of each stream a call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub bytes: usize,
    pub keep: Keep,
}

impl Default for Limit {
    fn default() -> Self {
        Limit {
            bytes: DEFAULT_BYTES,
            keep: Keep::Tail,
        }
    }
}

/// One captured output stream.
#[derive(Debug)]
pub struct Captured {
    limit: Limit,
    /// For a tail, up to twice the limit before it is compacted.
    buf: Vec<u8>,
    /// Bytes the command wrote to this stream.
    pub total: u64,
}

impl Captured {
    pub fn new(limit: Limit) -> Self {
        Captured {
            limit,
            buf: Vec::new(),
            total: 0,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let cap = self.limit.bytes;
        match self.limit.keep {
            Keep::Head => {
                let room = cap.saturating_sub(self.buf.len());
                self.buf.extend_from_slice(&data[..room.min(data.len())]);
            }
            Keep::Tail => {
                self.buf.extend_from_slice(data);
                if self.buf.len() > 2 * cap {
                    self.buf.drain(..self.buf.len() - cap);
                }
            }
        }
    }

    pub fn truncated(&self) -> bool {
        self.total > self.limit.bytes as u64
    }

    /// The kept bytes, at most the limit, cut at a character boundary where
    /// the cut fell inside a UTF-8 sequence.
    fn kept(&self) -> &[u8] {
        let cap = self.limit.bytes;
        match self.limit.keep {
            Keep::Head => {
                let b = &self.buf[..cap.min(self.buf.len())];
                if !self.truncated() {
                    return b;
                }
                match std::str::from_utf8(b) {
                    Err(e) if e.error_len().is_none() => &b[..e.valid_up_to()],
                    _ => b,
                }
            }
            Keep::Tail => {
                let b = &self.buf[self.buf.len().saturating_sub(cap)..];
                if !self.truncated() {
                    return b;
                }
                let skip = b
                    .iter()
                    .take(3)
                    .take_while(|c| (**c & 0xC0) == 0x80)
                    .count();
                &b[skip..]
            }
        }
    }

    /// The kept output as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.kept()).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(keep: Keep, bytes: usize, chunks: &[&[u8]]) -> Captured {
        let mut c = Captured::new(Limit { bytes, keep });
        for ch in chunks {
            c.push(ch);
        }
        c
    }

    #[test]
    fn head_and_tail_keep_their_end_within_the_limit() {
        let head = capture(Keep::Head, 4, &[b"abc", b"def", b"gh"]);
        assert_eq!(
            (head.text(), head.total, head.truncated()),
            ("abcd".into(), 8, true)
        );
        let tail = capture(Keep::Tail, 4, &[b"abc", b"def", b"gh"]);
        assert_eq!(
            (tail.text(), tail.total, tail.truncated()),
            ("efgh".into(), 8, true)
        );
        let short = capture(Keep::Tail, 4, &[b"ab"]);
        assert_eq!((short.text(), short.truncated()), ("ab".into(), false));
    }

    #[test]
    fn a_long_tail_is_compacted_and_still_exact() {
        let chunk = [b'x'; 1000];
        let mut c = Captured::new(Limit {
            bytes: 1500,
            keep: Keep::Tail,
        });
        for _ in 0..10 {
            c.push(&chunk);
        }
        c.push(b"END");
        assert!(c.buf.len() <= 2 * 1500 + 1000);
        let t = c.text();
        assert_eq!(t.len(), 1500);
        assert!(t.ends_with("xEND"));
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        // "é" is two bytes: a limit of 3 splits the second one.
        let head = capture(Keep::Head, 3, &["éé".as_bytes()]);
        assert_eq!(head.text(), "é");
        let tail = capture(Keep::Tail, 3, &["éé".as_bytes()]);
        assert_eq!(tail.text(), "é");
    }
}
