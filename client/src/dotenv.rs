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

/// Parses a whole file. Multi-line values are only possible through `\n`
/// escapes in double quotes.
pub fn parse(text: &[u8]) -> Result<Vec<Entry>, DotenvError> {
    let mut out: Vec<Entry> = Vec::new();
    for (i, raw) in text.split(|b| *b == b'\n').enumerate() {
        let n = i + 1;
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = trim_start(line);
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        let line = line.strip_prefix(b"export ").map_or(line, trim_start);
        let eq = line
            .iter()
            .position(|b| *b == b'=')
            .ok_or(DotenvError::MissingEquals(n))?;
        let name = String::from_utf8_lossy(trim_end(&line[..eq])).into_owned();
        if name.is_empty() {
            return Err(DotenvError::EmptyName(n));
        }
        let value = parse_value(trim_start(&line[eq + 1..]), n)?;
        if let Some(prev) = out.iter().find(|e| e.name == name) {
            return Err(DotenvError::Duplicate {
                line: n,
                first: prev.line,
                name,
            });
        }
        out.push(Entry {
            name,
            value,
            line: n,
        });
    }
    Ok(out)
}

fn trim_start(s: &[u8]) -> &[u8] {
    let k = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
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

fn parse_value(v: &[u8], n: usize) -> Result<Zeroizing<Vec<u8>>, DotenvError> {
    let mut out = Zeroizing::new(Vec::with_capacity(v.len()));
    let rest = match v.first() {
        Some(b'\'') => {
            let end = v[1..]
                .iter()
                .position(|b| *b == b'\'')
                .ok_or(DotenvError::Unterminated(n))?;
            out.extend_from_slice(&v[1..1 + end]);
            &v[2 + end..]
        }
        Some(b'"') => {
            let mut i = 1;
            loop {
                match v.get(i) {
                    None => return Err(DotenvError::Unterminated(n)),
                    Some(b'"') => break,
                    Some(b'\\') => {
                        let c = match v.get(i + 1) {
                            Some(b'n') => b'\n',
                            Some(b't') => b'\t',
                            Some(b'r') => b'\r',
                            Some(c @ (b'\\' | b'"' | b'$')) => *c,
                            None => return Err(DotenvError::Unterminated(n)),
                            Some(_) => return Err(DotenvError::BadEscape(n)),
                        };
                        out.push(c);
                        i += 2;
                    }
                    Some(c) => {
                        out.push(*c);
                        i += 1;
                    }
                }
            }
            &v[i + 1..]
        }
        _ => {
            let end = v
                .windows(2)
                .position(|w| w[0].is_ascii_whitespace() && w[1] == b'#')
                .unwrap_or(v.len());
            out.extend_from_slice(trim_end(&v[..end]));
            &[][..]
        }
    };
    let rest = trim_start(rest);
    if !rest.is_empty() && rest[0] != b'#' {
        return Err(DotenvError::TrailingText(n));
    }
    Ok(out)
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
