//! The status line and headers of a response, read with limits: the head
//! is at most [`MAX_HEAD`] bytes and [`MAX_RESPONSE_HEADERS`] headers, every
//! line ends in CRLF (a bare LF is accepted, as RFC 9112 allows), and a
//! header line that is not `token ":" value` fails the response.

use std::io::{self, BufRead};

/// Largest response head read.
pub const MAX_HEAD: usize = 64 * 1024;

/// Most headers in a response head.
pub const MAX_RESPONSE_HEADERS: usize = 128;

/// A response's status line and headers, names as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The head as it came, for `--include`.
    pub fn to_text(&self) -> String {
        let mut s = format!("{} {} {}\r\n", self.version, self.status, self.reason);
        for (n, v) in &self.headers {
            s.push_str(&format!("{n}: {v}\r\n"));
        }
        s.push_str("\r\n");
        s
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// One line without its line end, counting its bytes against `budget`.
fn line(r: &mut impl BufRead, budget: &mut usize) -> io::Result<String> {
    let mut raw = Vec::new();
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed before the response head ended",
            ));
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if take > *budget {
            return Err(invalid("the response head is larger than 64 KiB"));
        }
        *budget -= take;
        raw.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            break;
        }
    }
    raw.pop();
    if raw.last() == Some(&b'\r') {
        raw.pop();
    }
    if raw.iter().any(|&b| b == b'\r' || b == 0) {
        return Err(invalid("a response head line holds CR or NUL"));
    }
    String::from_utf8(raw).map_err(|_| invalid("a response head line is not UTF-8"))
}

fn status_line(l: &str) -> io::Result<(String, u16, String)> {
    let (version, rest) = l.split_once(' ').ok_or_else(|| invalid("no status line"))?;
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(invalid("not an HTTP/1.x status line"));
    }
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    let status = match code.as_bytes() {
        [a, b, c] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => code
            .parse::<u16>()
            .map_err(|_| invalid("bad status code"))?,
        _ => return Err(invalid("the status code is not three digits")),
    };
    if !(100..=599).contains(&status) {
        return Err(invalid("the status code is out of range"));
    }
    Ok((version.to_string(), status, reason.to_string()))
}

/// Reads one response head.
pub fn read_head(r: &mut impl BufRead) -> io::Result<Head> {
    let mut budget = MAX_HEAD;
    let (version, status, reason) = status_line(&line(r, &mut budget)?)?;
    let mut headers = Vec::new();
    loop {
        let l = line(r, &mut budget)?;
        if l.is_empty() {
            break;
        }
        if l.starts_with([' ', '\t']) {
            return Err(invalid("obsolete header line folding"));
        }
        let (name, value) = l
            .split_once(':')
            .ok_or_else(|| invalid("a header line without ':'"))?;
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(invalid("a header name is not a token"));
        }
        if headers.len() == MAX_RESPONSE_HEADERS {
            return Err(invalid("more than 128 response headers"));
        }
        headers.push((
            name.to_string(),
            value.trim_matches(|c| c == ' ' || c == '\t').to_string(),
        ));
    }
    Ok(Head {
        version,
        status,
        reason,
        headers,
    })
}
