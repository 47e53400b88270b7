//! A strict `.env` parser for `vaultctl secrets import`.
//!
//! Accepts `NAME=value`, `export NAME=value`, blank lines and `#` comments.
//! Values may be bare (trailing whitespace trimmed, ` #` starts a comment),
//! single-quoted (literal) or double-quoted (`\n`, `\t`, `\\`, `\"`, `\$`
//! escapes). Errors name the line number, never its content: the content is
//! a secret.

use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DotenvError {
    #[error("line {0}: expected NAME=value")]
    MissingEquals(usize),
    #[error("line {0}: empty variable name")]
    EmptyName(usize),
    #[error("line {0}: unterminated quoted value")]
    Unterminated(usize),
    #[error("line {0}: unexpected text after the closing quote")]
    TrailingText(usize),
    #[error("line {0}: unknown escape in a double-quoted value")]
    BadEscape(usize),
    #[error("line {line}: {name} appears more than once (first on line {first})")]
    Duplicate {
        line: usize,
        first: usize,
        name: String,
    },
}

/// One parsed entry; the value is wiped on drop.
pub struct Entry {
    pub name: String,
    pub value: Zeroizing<Vec<u8>>,
    pub line: usize,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

/// Parses a whole file. A quoted value may span lines: its line breaks
/// are part of the value (a CR before each is dropped), as in the `.env`
/// files of docker compose and python-dotenv; `\n` escapes in double
/// quotes work too. An empty value is returned as such (the caller decides
/// what to do with it).
pub fn parse(text: &[u8]) -> Result<Vec<Entry>, DotenvError> {
    let mut out: Vec<Entry> = Vec::new();
    let mut pos = 0;
    let mut n = 0;
    while pos < text.len() {
        n += 1;
        let line_end = text[pos..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(text.len(), |k| pos + k);
        let raw = &text[pos..line_end];
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let lead = line.len() - trim_start(line).len();
        let line = &line[lead..];
        if line.is_empty() || line[0] == b'#' {
            pos = line_end + 1;
            continue;
        }
        let (line, lead) = match line.strip_prefix(b"export ") {
            Some(rest) => (trim_start(rest), lead + line.len() - trim_start(rest).len()),
            None => (line, lead),
        };
        let eq = line
            .iter()
            .position(|b| *b == b'=')
            .ok_or(DotenvError::MissingEquals(n))?;
        let name = String::from_utf8_lossy(trim_end(&line[..eq])).into_owned();
        if name.is_empty() {
            return Err(DotenvError::EmptyName(n));
        }
        let after_eq = &line[eq + 1..];
        let vstart = pos + lead + eq + 1 + (after_eq.len() - trim_start(after_eq).len());
        let first = n;
        let (value, end) = parse_value(text, vstart.min(line_end), line_end, &mut n)?;
        if let Some(prev) = out.iter().find(|e| e.name == name) {
            return Err(DotenvError::Duplicate {
                line: first,
                first: prev.line,
                name,
            });
        }
        out.push(Entry {
            name,
            value,
            line: first,
        });
        pos = end + 1;
    }
    Ok(out)
}

fn trim_start(s: &[u8]) -> &[u8] {
    let k = s
        .iter()
        .take_while(|b| b.is_ascii_whitespace() && **b != b'\n')
        .count();
    &s[k..]
}

fn trim_end(s: &[u8]) -> &[u8] {
    let k = s
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_whitespace())
        .count();
    &s[..s.len() - k]
}

/// The value starting at `text[v]` on a line that ends at `line_end`;
/// returns it and the index of the line break (or end of text) that ends
/// the entry. A quoted value may run past `line_end`: `n`, the line number,
/// advances by the line breaks it holds.
fn parse_value(
    text: &[u8],
    v: usize,
    line_end: usize,
    n: &mut usize,
) -> Result<(Zeroizing<Vec<u8>>, usize), DotenvError> {
    let opened = *n;
    let mut out = Zeroizing::new(Vec::new());
    let quote = text.get(v).copied().filter(|q| *q == b'\'' || *q == b'"');
    let after = match quote {
        Some(q) => {
            let mut i = v + 1;
            loop {
                match text.get(i) {
                    None => return Err(DotenvError::Unterminated(opened)),
                    Some(c) if *c == q => break,
                    Some(b'\\') if q == b'"' => {
                        let c = match text.get(i + 1) {
                            Some(b'n') => b'\n',
                            Some(b't') => b'\t',
                            Some(b'r') => b'\r',
                            Some(c @ (b'\\' | b'"' | b'$')) => *c,
                            None => return Err(DotenvError::Unterminated(opened)),
                            Some(_) => return Err(DotenvError::BadEscape(*n)),
                        };
                        out.push(c);
                        i += 2;
                    }
                    Some(b'\r') if text.get(i + 1) == Some(&b'\n') => i += 1,
                    Some(c) => {
                        if *c == b'\n' {
                            *n += 1;
                        }
                        out.push(*c);
                        i += 1;
                    }
                }
            }
            i + 1
        }
        None => {
            let bare = &text[v..line_end];
            let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
            let end = bare
                .windows(2)
                .position(|w| w[0].is_ascii_whitespace() && w[1] == b'#')
                .unwrap_or(bare.len());
            out.extend_from_slice(trim_end(&bare[..end]));
            line_end
        }
    };
    // The rest of the line the value ends on: nothing, or a comment.
    let end = text[after..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(text.len(), |k| after + k);
    let rest = trim_end(trim_start(&text[after..end]));
    if !rest.is_empty() && rest[0] != b'#' {
        return Err(DotenvError::TrailingText(*n));
    }
    Ok((out, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> (String, Vec<u8>) {
        let mut v = parse(text.as_bytes()).unwrap();
        assert_eq!(v.len(), 1);
        let e = v.remove(0);
        (e.name.clone(), e.value.to_vec())
    }

    #[test]
    fn forms() {
        assert_eq!(one("A=b c # note"), ("A".into(), b"b c".to_vec()));
        assert_eq!(one("export A='x\\ny'"), ("A".into(), b"x\\ny".to_vec()));
        assert_eq!(one("A=\"x\\ny\\\"\""), ("A".into(), b"x\ny\"".to_vec()));
        assert_eq!(one("  A = v\r\n# c\n\n"), ("A".into(), b"v".to_vec()));
        assert_eq!(one("A="), ("A".into(), b"".to_vec()));
        assert_eq!(one("A=''  # empty"), ("A".into(), b"".to_vec()));
    }

    #[test]
    fn quoted_values_may_span_lines() {
        let text =
            b"A=1\nKEY=\"-----BEGIN KEY-----\r\nabc\n-----END KEY-----\"\nB='x\ny' # c\nC=3\n";
        let v = parse(text).unwrap();
        let got: Vec<(&str, &[u8], usize)> = v
            .iter()
            .map(|e| (e.name.as_str(), &e.value[..], e.line))
            .collect();
        assert_eq!(
            got,
            [
                ("A", &b"1"[..], 1),
                (
                    "KEY",
                    &b"-----BEGIN KEY-----\nabc\n-----END KEY-----"[..],
                    2
                ),
                ("B", &b"x\ny"[..], 5),
                ("C", &b"3"[..], 7),
            ]
        );
        assert_eq!(
            parse(b"A=1\nB=\"open\nstill open").unwrap_err(),
            DotenvError::Unterminated(2)
        );
        assert_eq!(
            parse(b"A='x\ny' z").unwrap_err(),
            DotenvError::TrailingText(2)
        );
    }

    #[test]
    fn errors_name_lines_not_content() {
        let e = parse(b"A=1\nnot a pair with s3cret\n").unwrap_err();
        assert_eq!(e, DotenvError::MissingEquals(2));
        assert!(!e.to_string().contains("s3cret"));
        assert_eq!(
            parse(b"A=\"open").unwrap_err(),
            DotenvError::Unterminated(1)
        );
        assert_eq!(parse(b"A='x' y").unwrap_err(), DotenvError::TrailingText(1));
        assert!(matches!(
            parse(b"A=1\nA=2").unwrap_err(),
            DotenvError::Duplicate {
                line: 2,
                first: 1,
                ..
            }
        ));
    }
}
