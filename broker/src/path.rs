//! Request paths. The host of a capability comes from policy; the caller
//! chooses only the path (and query) below it, so the path is where a
//! caller tries to reach what the capability does not name: `..` segments,
//! their percent-encoded and double-encoded forms, encoded slashes that a
//! server decodes after routing, and backslashes that some servers take
//! for slashes. None is rewritten into something "safe": each is refused,
//! so what the upstream receives is byte for byte what was checked.

use thiserror::Error;

/// The longest request path (with its query) the broker forwards.
pub const MAX_PATH: usize = 8192;

/// Why a request path was refused. No variant repeats the path.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    #[error("the request path is empty or does not start with '/'")]
    NotAbsolute,
    #[error("the request path is longer than {MAX_PATH} bytes")]
    TooLong,
    #[error("the request path holds a control character, a space or a non-ASCII byte")]
    BadByte,
    #[error("the request path holds a backslash")]
    Backslash,
    #[error("the request path holds a fragment ('#')")]
    Fragment,
    #[error("the request path holds a malformed percent escape")]
    BadEscape,
    #[error("the request path encodes a character that changes its meaning ('/', '\\', '.', '%', '?', '#' or a control)")]
    EncodedDelimiter,
    #[error("the request path holds a '.' or '..' segment")]
    DotSegment,
    #[error("the request path holds an empty segment ('//')")]
    EmptySegment,
}

/// A request path that passed [`check`]: `path` starts with `/` and holds
/// no dot, empty or disguised segment; `query` is what followed `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath {
    pub path: String,
    pub query: Option<String>,
}

/// Checks a caller's request target (`/v1/chat/completions?stream=true`).
pub fn check(raw: &str) -> Result<RequestPath, PathError> {
    if raw.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    for b in raw.bytes() {
        match b {
            b'\\' => return Err(PathError::Backslash),
            b'#' => return Err(PathError::Fragment),
            0x21..=0x7e => {}
            _ => return Err(PathError::BadByte),
        }
    }
    let (path, query) = match raw.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (raw, None),
    };
    check_escapes(path)?;
    if let Some(q) = query {
        check_query_escapes(q)?;
    }
    // The first segment is the empty string before the leading '/'.
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        let decoded = decode_unreserved(seg);
        if decoded == "." || decoded == ".." {
            return Err(PathError::DotSegment);
        }
        // `/v1/models/` is a path; `/v1//models` is not.
        if seg.is_empty() && i != last {
            return Err(PathError::EmptySegment);
        }
    }
    Ok(RequestPath {
        path: path.to_owned(),
        query: query.map(str::to_owned),
    })
}

/// Refuses escapes that are malformed, or that encode a byte which would
/// change how the path is split or decoded a second time.
fn check_escapes(path: &str) -> Result<(), PathError> {
    each_escape(path, |byte| {
        if matches!(byte, b'/' | b'\\' | b'.' | b'%' | b'?' | b'#') || byte < 0x20 || byte == 0x7f {
            Err(PathError::EncodedDelimiter)
        } else {
            Ok(())
        }
    })
}

/// In a query, an encoded `/` or `.` is ordinary data (`q=a%2Fb`); only a
/// double encoding, a control byte or a malformed escape is refused.
fn check_query_escapes(query: &str) -> Result<(), PathError> {
    each_escape(query, |byte| {
        if byte == b'%' || byte < 0x20 || byte == 0x7f {
            Err(PathError::EncodedDelimiter)
        } else {
            Ok(())
        }
    })
}

fn each_escape(
    s: &str,
    mut judge: impl FnMut(u8) -> Result<(), PathError>,
) -> Result<(), PathError> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(&h), Some(&l)) = (b.get(i + 1), b.get(i + 2)) else {
                return Err(PathError::BadEscape);
            };
            let (Some(h), Some(l)) = (hex(h), hex(l)) else {
                return Err(PathError::BadEscape);
            };
            judge(h << 4 | l)?;
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A segment with its escapes decoded, for the dot-segment test only
/// (escapes of `.` are refused before, this is the second line of defence).
fn decode_unreserved(seg: &str) -> String {
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A capability's allowed paths: `/v1/chat/completions` (exactly),
/// `/v1/models/*` (one more segment), `/v1/**` (anything below).
/// Matching is by whole segments: `/v1/**` does not admit `/v10`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<Seg>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Literal(String),
    /// `*`: exactly one non-empty segment.
    One,
    /// `**`: the rest, at least one segment; only last.
    Rest,
}

/// Why a path pattern in policy was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PatternError {
    #[error("path pattern {0:?} does not start with '/'")]
    NotAbsolute(String),
    #[error("path pattern {0:?} has '**' before its end")]
    RestNotLast(String),
    #[error("path pattern {0:?} mixes '*' with other characters in a segment")]
    PartialGlob(String),
    #[error("path pattern {0:?} is not a valid request path: {1}")]
    Invalid(String, PathError),
}

impl PathPattern {
    pub fn parse(pattern: &str) -> Result<PathPattern, PatternError> {
        if !pattern.starts_with('/') {
            return Err(PatternError::NotAbsolute(pattern.to_owned()));
        }
        let plain = pattern.replace('*', "x");
        if let Err(e) = check(&plain) {
            return Err(PatternError::Invalid(pattern.to_owned(), e));
        }
        if plain.contains('?') {
            return Err(PatternError::Invalid(
                pattern.to_owned(),
                PathError::BadByte,
            ));
        }
        let raw: Vec<&str> = pattern.split('/').skip(1).collect();
        let mut segments = Vec::with_capacity(raw.len());
        for (i, s) in raw.iter().enumerate() {
            segments.push(match *s {
                "**" if i + 1 == raw.len() => Seg::Rest,
                "**" => return Err(PatternError::RestNotLast(pattern.to_owned())),
                "*" => Seg::One,
                s if s.contains('*') => return Err(PatternError::PartialGlob(pattern.to_owned())),
                s => Seg::Literal(s.to_owned()),
            });
        }
        Ok(PathPattern { segments })
    }

    /// Whether a path that passed [`check`] is one this pattern allows.
    pub fn matches(&self, path: &RequestPath) -> bool {
        let got: Vec<&str> = path.path.split('/').skip(1).collect();
        let mut i = 0;
        for seg in &self.segments {
            match seg {
                Seg::Rest => return got.len() > i && got[i..].iter().any(|s| !s.is_empty()),
                Seg::One => {
                    if got.get(i).is_none_or(|s| s.is_empty()) {
                        return false;
                    }
                }
                Seg::Literal(l) => {
                    if got.get(i) != Some(&l.as_str()) {
                        return false;
                    }
                }
            }
            i += 1;
        }
        i == got.len()
    }
}

#[cfg(test)]
mod tests;
