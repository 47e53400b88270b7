//! The globs policy writes for tool names, prompt names, resource URIs and
//! path-like arguments.
//!
//! `?` matches one character other than `/`, `*` any run of characters
//! other than `/`, `**` any run at all (so `/srv/**` covers every path
//! under `/srv`). Everything else is literal. `[`, `]`, `{`, `}` and `\`
//! are refused rather than taken literally, so a pattern written for a
//! richer glob syntax cannot silently mean something else.

use std::fmt;

use thiserror::Error;

/// Longest pattern accepted (policy is written by hand).
pub const MAX_PATTERN: usize = 512;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum GlobError {
    #[error("glob is empty")]
    Empty,
    #[error("glob {0:?} is longer than {MAX_PATTERN} characters")]
    TooLong(String),
    #[error("glob {0:?} uses {1:?}, which is reserved (only ?, * and ** are special)")]
    Reserved(String, char),
    #[error("glob {0:?} has three or more * in a row")]
    Stars(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    Lit(char),
    One,
    Star,
    DoubleStar,
}

/// A compiled glob.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    toks: Vec<Tok>,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.text)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        if pattern.is_empty() {
            return Err(GlobError::Empty);
        }
        if pattern.chars().count() > MAX_PATTERN {
            return Err(GlobError::TooLong(pattern.into()));
        }
        let mut toks = Vec::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '[' | ']' | '{' | '}' | '\\' => {
                    return Err(GlobError::Reserved(pattern.into(), c));
                }
                '?' => toks.push(Tok::One),
                '*' => {
                    if chars.peek() == Some(&'*') {
                        chars.next();
                        if chars.peek() == Some(&'*') {
                            return Err(GlobError::Stars(pattern.into()));
                        }
                        toks.push(Tok::DoubleStar);
                    } else {
                        toks.push(Tok::Star);
                    }
                }
                c => toks.push(Tok::Lit(c)),
            }
        }
        Ok(Glob {
            text: pattern.into(),
            toks,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the whole of `text` matches. Linear in `text` times the
    /// pattern's length (no backtracking blow-up).
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        // row[j]: the pattern's first i tokens match text[..j].
        let mut row = vec![false; text.len() + 1];
        row[0] = true;
        for tok in &self.toks {
            let mut next = vec![false; text.len() + 1];
            match tok {
                Tok::Star | Tok::DoubleStar => {
                    let crosses = *tok == Tok::DoubleStar;
                    for j in 0..=text.len() {
                        next[j] =
                            row[j] || (j > 0 && next[j - 1] && (crosses || text[j - 1] != '/'));
                    }
                }
                Tok::One => {
                    for j in 1..=text.len() {
                        next[j] = row[j - 1] && text[j - 1] != '/';
                    }
                }
                Tok::Lit(c) => {
                    for j in 1..=text.len() {
                        next[j] = row[j - 1] && text[j - 1] == *c;
                    }
                }
            }
            row = next;
        }
        row[text.len()]
    }
}

/// Compiles a list of patterns, naming the first bad one.
pub fn compile_all(patterns: &[String]) -> Result<Vec<Glob>, GlobError> {
    patterns.iter().map(|p| Glob::new(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Glob::new(p).expect("valid glob").matches(t)
    }

    #[test]
    fn star_stays_within_a_segment_and_double_star_crosses() {
        assert!(m("get_*", "get_issue"));
        assert!(m("*", ""));
        assert!(!m("get_*", "list_issues"));
        assert!(m("/srv/*", "/srv/a"));
        assert!(!m("/srv/*", "/srv/a/b"));
        assert!(m("/srv/**", "/srv/a/b"));
        assert!(!m("/srv/**", "/srvx/a"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "a/c"));
        assert!(!m("abc", "abcd"));
        assert!(m("*delete*", "bulk_delete_all"));
    }

    #[test]
    fn reserved_and_malformed_patterns_are_refused() {
        assert_eq!(Glob::new(""), Err(GlobError::Empty));
        assert!(matches!(
            Glob::new("a[b]"),
            Err(GlobError::Reserved(_, '['))
        ));
        assert!(matches!(
            Glob::new("{a,b}"),
            Err(GlobError::Reserved(_, '{'))
        ));
        assert!(matches!(
            Glob::new("a\\*"),
            Err(GlobError::Reserved(_, '\\'))
        ));
        assert!(matches!(Glob::new("***"), Err(GlobError::Stars(_))));
        assert!(matches!(
            Glob::new(&"a".repeat(MAX_PATTERN + 1)),
            Err(GlobError::TooLong(_))
        ));
    }

    #[test]
    fn many_stars_against_a_long_text_finish() {
        let g = Glob::new(&"*a".repeat(40)).expect("valid glob");
        assert!(!g.matches(&"a".repeat(39)));
        assert!(g.matches(&"a".repeat(4000)));
    }
}
