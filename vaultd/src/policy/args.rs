//! Argument patterns: which argument lists (after `argv[0]`) a rule accepts.
//!
//! A rule's `args` is a list of alternatives; the argument list must match at
//! least one of them, or the run is denied. Without `args`, any argument list
//! is accepted (and `explain` warns). Each alternative is one of:
//!
//! * `{ exact = ["s3", "ls"] }` — the arguments are exactly these, in order;
//! * `{ prefix = ["api"] }` — the arguments start with these; any further
//!   arguments (including none) are accepted;
//! * `{ glob = ["api", "repos/*/issues"] }` — exactly as many arguments as
//!   patterns, each matching its pattern: `*` is any run of characters except
//!   `/`, `**` any run including `/`, `?` one character except `/`, and `\`
//!   makes the next character literal. Everything else matches itself.
//!
//! Patterns see arguments as strings; options such as `--config=x` are just
//! arguments, so `*` and `prefix` let the caller choose options too.

use serde::Deserialize;

/// One alternative as written in TOML.
#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum RawArgPattern {
    Exact(Vec<String>),
    Prefix(Vec<String>),
    Glob(Vec<String>),
}

/// One piece of a compiled glob.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `?`
    One,
    /// `*`
    Star,
    /// `**`
    DoubleStar,
}

/// A compiled glob for one argument.
#[derive(Debug, Clone)]
pub struct Glob {
    text: String,
    toks: Vec<Tok>,
}

impl Glob {
    pub fn new(text: &str) -> Result<Glob, String> {
        let mut toks = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(lit) => toks.push(Tok::Lit(lit)),
                    None => return Err(format!("glob {text:?} ends with a lone backslash")),
                },
                '?' => toks.push(Tok::One),
                '*' if chars.peek() == Some(&'*') => {
                    chars.next();
                    toks.push(Tok::DoubleStar);
                }
                '*' => toks.push(Tok::Star),
                _ => toks.push(Tok::Lit(c)),
            }
        }
        Ok(Glob {
            text: text.to_owned(),
            toks,
        })
    }

    /// Whole-string match; linear in `arg` for each pattern piece.
    pub fn matches(&self, arg: &str) -> bool {
        let s: Vec<char> = arg.chars().collect();
        // reach[i]: the pattern read so far can end right before s[i].
        let mut reach = vec![false; s.len() + 1];
        reach[0] = true;
        for tok in &self.toks {
            let mut next = vec![false; s.len() + 1];
            match tok {
                Tok::Lit(c) => {
                    for i in 0..s.len() {
                        next[i + 1] = reach[i] && s[i] == *c;
                    }
                }
                Tok::One => {
                    for i in 0..s.len() {
                        next[i + 1] = reach[i] && s[i] != '/';
                    }
                }
                Tok::Star | Tok::DoubleStar => {
                    let slash_ok = *tok == Tok::DoubleStar;
                    next[0] = reach[0];
                    for i in 0..s.len() {
                        next[i + 1] = reach[i + 1] || (next[i] && (slash_ok || s[i] != '/'));
                    }
                }
            }
            reach = next;
        }
        reach[s.len()]
    }
}

/// A compiled alternative.
#[derive(Debug, Clone)]
pub enum ArgPattern {
    Exact(Vec<String>),
    Prefix(Vec<String>),
    Glob(Vec<Glob>),
}

impl ArgPattern {
    pub fn compile(raw: &RawArgPattern) -> Result<ArgPattern, String> {
        Ok(match raw {
            RawArgPattern::Exact(v) => ArgPattern::Exact(v.clone()),
            RawArgPattern::Prefix(v) => ArgPattern::Prefix(v.clone()),
            RawArgPattern::Glob(v) => {
                ArgPattern::Glob(v.iter().map(|g| Glob::new(g)).collect::<Result<_, _>>()?)
            }
        })
    }

    pub fn matches(&self, args: &[String]) -> bool {
        match self {
            ArgPattern::Exact(want) => args == want.as_slice(),
            ArgPattern::Prefix(want) => args.starts_with(want),
            ArgPattern::Glob(globs) => {
                globs.len() == args.len() && globs.iter().zip(args).all(|(g, a)| g.matches(a))
            }
        }
    }

    /// `exact ["s3", "ls"]`, `prefix ["api"] + anything`, `glob ["repos/*"]`.
    pub fn describe(&self) -> String {
        let list = |v: Vec<&str>| format!("{v:?}");
        match self {
            ArgPattern::Exact(v) => {
                format!("exact {}", list(v.iter().map(String::as_str).collect()))
            }
            ArgPattern::Prefix(v) => format!(
                "prefix {} + anything",
                list(v.iter().map(String::as_str).collect())
            ),
            ArgPattern::Glob(v) => {
                format!("glob {}", list(v.iter().map(|g| g.text.as_str()).collect()))
            }
        }
    }
}

/// True if `patterns` is `None` (anything goes) or one alternative matches.
pub fn any_matches(patterns: Option<&[ArgPattern]>, args: &[String]) -> bool {
    patterns.is_none_or(|p| p.iter().any(|pat| pat.matches(args)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn glob(p: &str, s: &str) -> bool {
        Glob::new(p).expect("valid glob").matches(s)
    }

    #[test]
    fn globs() {
        assert!(glob("repos/*/issues", "repos/acme/issues"));
        assert!(!glob("repos/*/issues", "repos/a/b/issues"));
        assert!(glob("repos/**/issues", "repos/a/b/issues"));
        assert!(!glob("repos/*/issues", "repos/acme/issues/1"));
        assert!(glob("*", ""));
        assert!(glob("*", "anything-without-slash"));
        assert!(!glob("*", "a/b"));
        assert!(glob("v?", "v1"));
        assert!(!glob("v?", "v12"));
        assert!(!glob("v?", "v/"));
        assert!(glob(r"a\*b", "a*b"));
        assert!(!glob(r"a\*b", "axb"));
        assert!(glob("*.json", "x.y.json"));
        assert!(!glob("", "x"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(Glob::new("bad\\").is_err());
    }

    #[test]
    fn alternatives() {
        let pats = [
            ArgPattern::compile(&RawArgPattern::Exact(v(&["s3", "ls"]))),
            ArgPattern::compile(&RawArgPattern::Prefix(v(&["api"]))),
            ArgPattern::compile(&RawArgPattern::Glob(v(&["issue", "view", "?*"]))),
        ]
        .map(|p| p.expect("valid"));
        let ok = |a: &[&str]| any_matches(Some(&pats), &v(a));
        assert!(ok(&["s3", "ls"]));
        assert!(!ok(&["s3", "ls", "--profile", "x"]));
        assert!(!ok(&["s3"]));
        assert!(ok(&["api"]));
        assert!(ok(&["api", "user", "--jq", ".login"]));
        assert!(!ok(&["auth", "token"]));
        assert!(ok(&["issue", "view", "12"]));
        assert!(!ok(&["issue", "view", ""]));
        assert!(!ok(&["issue", "view", "12", "--web"]));
        assert!(!ok(&[]));
        assert!(any_matches(None, &v(&["whatever"])));
        assert!(!any_matches(Some(&[]), &v(&[])));
    }

    #[test]
    fn descriptions() {
        let p = ArgPattern::compile(&RawArgPattern::Prefix(v(&["api"]))).expect("valid");
        assert_eq!(p.describe(), r#"prefix ["api"] + anything"#);
    }
}
