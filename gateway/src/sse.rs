//! Server-sent events (the `text/event-stream` of the HTML standard) as
//! a streamable-HTTP MCP server answers a POST with them: an incremental
//! parser fed the body as it arrives, yielding each event's `data`.
//!
//! Lines end in `\n`, `\r\n` or `\r` (also when split across chunks); a
//! line starting with `:` is a comment; `data` lines are joined with `\n`;
//! a blank line dispatches the event (one without `data` is dropped);
//! `id`, `event` and `retry` are kept as the standard says or ignored.
//! Nothing is buffered beyond the limit: a line or an event's data longer
//! than it is an error, and the stream cannot be read further.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `event:`, `message` when none was given.
    pub event: String,
    pub data: String,
    /// The last `id:` seen so far on the stream.
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event longer than {0} bytes")]
    TooLarge(usize),
    #[error("an event that is not UTF-8")]
    NotUtf8,
}

/// The parser's state between chunks.
#[derive(Debug)]
pub struct Parser {
    max: usize,
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    event: Option<String>,
    id: Option<String>,
    /// The previous chunk ended in `\r`: a `\n` first in this one ends
    /// nothing more.
    after_cr: bool,
    failed: Option<SseError>,
}

impl Parser {
    /// A parser refusing lines and events over `max` bytes.
    pub fn new(max: usize) -> Parser {
        Parser {
            max,
            line: Vec::new(),
            data: Vec::new(),
            has_data: false,
            event: None,
            id: None,
            after_cr: false,
            failed: None,
        }
    }

    /// Feeds the next bytes of the body; events completed by them are
    /// appended to `out`. After an error every call fails the same way.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), SseError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.feed_inner(chunk, out);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
            self.line.clear();
            self.data.clear();
        }
        r
    }

    fn feed_inner(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), SseError> {
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while !rest.is_empty() {
            match rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
                None => {
                    self.push_line_bytes(rest)?;
                    break;
                }
                Some(at) => {
                    self.push_line_bytes(&rest[..at])?;
                    let cr = rest[at] == b'\r';
                    rest = &rest[at + 1..];
                    if cr {
                        match rest.first() {
                            Some(b'\n') => rest = &rest[1..],
                            None => self.after_cr = true,
                            Some(_) => {}
                        }
                    }
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line, out)?;
                }
            }
        }
        Ok(())
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + bytes.len() > self.max {
            return Err(SseError::TooLarge(self.max));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<Event>) -> Result<(), SseError> {
        if line.is_empty() {
            return self.dispatch(out);
        }
        if line.starts_with(b":") {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(at) => {
                let v = &line[at + 1..];
                (&line[..at], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                let extra = usize::from(self.has_data);
                if self.data.len() + extra + value.len() > self.max {
                    return Err(SseError::TooLarge(self.max));
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.event = Some(String::from_utf8(value.to_vec()).map_err(|_| SseError::NotUtf8)?)
            }
            // An id holding NUL is ignored, as the standard says.
            b"id" if !value.contains(&0) => {
                self.id = Some(String::from_utf8(value.to_vec()).map_err(|_| SseError::NotUtf8)?)
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) -> Result<(), SseError> {
        let event = self.event.take();
        if !self.has_data {
            return Ok(());
        }
        self.has_data = false;
        let data =
            String::from_utf8(std::mem::take(&mut self.data)).map_err(|_| SseError::NotUtf8)?;
        out.push(Event {
            event: event.unwrap_or_else(|| "message".into()),
            data,
            id: self.id.clone(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in(chunks: &[&[u8]], max: usize) -> Result<Vec<Event>, SseError> {
        let mut p = Parser::new(max);
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out)?;
        }
        Ok(out)
    }

    fn datas(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn events_are_split_by_blank_lines_and_data_lines_joined() {
        let body = b": a comment\nevent: message\nid: 7\ndata: {\"a\":1}\n\ndata: x\ndata:y\n\nretry: 10\n\n";
        let ev = parse_in(&[body], 1024).unwrap();
        assert_eq!(datas(&ev), ["{\"a\":1}", "x\ny"]);
        assert_eq!(ev[0].event, "message");
        assert_eq!(ev[0].id.as_deref(), Some("7"));
        assert_eq!(ev[1].id.as_deref(), Some("7"));
    }

    #[test]
    fn every_line_ending_and_every_split_point_gives_the_same_events() {
        for eol in ["\n", "\r\n", "\r"] {
            let body = format!("data: one{eol}{eol}event: other{eol}data: two{eol}{eol}");
            let bytes = body.as_bytes();
            for cut in 0..=bytes.len() {
                let (a, b) = bytes.split_at(cut);
                let ev = parse_in(&[a, b], 1024).unwrap();
                assert_eq!(datas(&ev), ["one", "two"], "{eol:?} cut at {cut}");
                assert_eq!(ev[1].event, "other");
            }
            // Byte by byte.
            let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(datas(&parse_in(&chunks, 1024).unwrap()), ["one", "two"]);
        }
    }

    #[test]
    fn an_event_without_data_or_an_unfinished_one_is_not_dispatched() {
        let ev = parse_in(&[b"event: ping\n\ndata: half"], 1024).unwrap();
        assert!(ev.is_empty());
    }

    #[test]
    fn nothing_is_buffered_beyond_the_limit() {
        let long_line = vec![b'a'; 100];
        assert_eq!(
            parse_in(&[b"data: ", &long_line], 64),
            Err(SseError::TooLarge(64))
        );
        // Many short data lines of one event add up.
        let lines = "data: 0123456789\n".repeat(10);
        assert_eq!(
            parse_in(&[lines.as_bytes()], 64),
            Err(SseError::TooLarge(64))
        );
        // Once failed, it stays failed.
        let mut p = Parser::new(8);
        let mut out = Vec::new();
        assert!(p.feed(b"data: 0123456789", &mut out).is_err());
        assert!(p.feed(b"\n\ndata: a\n\n", &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn bad_bytes_are_an_error_not_a_panic() {
        assert_eq!(
            parse_in(&[b"data: \xff\xfe\n\n"], 64),
            Err(SseError::NotUtf8)
        );
        assert!(parse_in(&[b"\n\n\r\r\n:\n:x\ndata\n\n"], 64).is_ok());
    }
}
