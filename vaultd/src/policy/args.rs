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
//! [`ArgPattern::shapes`] and [`ArgShape`] answer what a pattern can let
//! through, for the option warnings of `policy/options.rs`.

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

/// One input to [`Glob::states_after`]: a known character, or any character
/// that can continue a bundle of short options (neither `-` nor `/`).
#[derive(Debug, Clone, Copy)]
enum Input {
    Char(char),
    BundleChar,
}

impl Glob {
    /// The pattern positions reachable after reading `input` from the
    /// positions `from` (an NFA over the tokens; `*` may also match nothing).
    fn step(&self, from: &[bool], input: Input) -> Vec<bool> {
        let mut next = vec![false; self.toks.len() + 1];
        for (i, tok) in self.toks.iter().enumerate().filter(|(i, _)| from[*i]) {
            let (advance, stay) = match (tok, input) {
                (Tok::Lit(c), Input::Char(x)) => (*c == x, false),
                (Tok::Lit(c), Input::BundleChar) => (*c != '-' && *c != '/', false),
                (Tok::One, Input::Char(x)) => (x != '/', false),
                (Tok::One, Input::BundleChar) => (true, false),
                (Tok::Star, Input::Char(x)) => (false, x != '/'),
                (Tok::Star, Input::BundleChar) | (Tok::DoubleStar, _) => (false, true),
            };
            next[i + 1] |= advance;
            next[i] |= stay;
        }
        self.close(next)
    }

    /// Adds the positions reachable by letting `*`/`**` match nothing.
    fn close(&self, mut set: Vec<bool>) -> Vec<bool> {
        for i in 0..self.toks.len() {
            if set[i] && matches!(self.toks[i], Tok::Star | Tok::DoubleStar) {
                set[i + 1] = true;
            }
        }
        set
    }

    fn start(&self) -> Vec<bool> {
        let mut set = vec![false; self.toks.len() + 1];
        set[0] = true;
        self.close(set)
    }

    fn read(&self, mut set: Vec<bool>, text: &str) -> Vec<bool> {
        for c in text.chars() {
            set = self.step(&set, Input::Char(c));
        }
        set
    }

    /// Whether some argument this glob matches starts with `prefix`. Every
    /// pattern position can still be completed (each token matches some
    /// character), so reaching any position after `prefix` is enough.
    pub fn can_start_with(&self, prefix: &str) -> bool {
        self.read(self.start(), prefix).contains(&true)
    }

    /// Whether some argument this glob matches is `lead`, then characters
    /// other than `-` and `/` (none included), then `c`: a bundle of short
    /// options that contains `-c` (`lead` is `"-"`; `""` for tar's old-style
    /// first argument).
    pub fn can_bundle(&self, lead: &str, c: char) -> bool {
        let mut set = self.read(self.start(), lead);
        loop {
            let more = self.step(&set, Input::BundleChar);
            let grown: Vec<bool> = set.iter().zip(&more).map(|(a, b)| *a || *b).collect();
            if grown == set {
                break;
            }
            set = grown;
        }
        self.step(&set, Input::Char(c)).contains(&true)
    }
}

/// What one position of a pattern accepts: a fixed string or a glob.
#[derive(Debug, Clone, Copy)]
pub enum ArgShape<'a> {
    Lit(&'a str),
    Glob(&'a Glob),
}

impl ArgShape<'_> {
    pub fn can_be(&self, s: &str) -> bool {
        match self {
            ArgShape::Lit(l) => *l == s,
            ArgShape::Glob(g) => g.matches(s),
        }
    }

    pub fn can_start_with(&self, prefix: &str) -> bool {
        match self {
            ArgShape::Lit(l) => l.starts_with(prefix),
            ArgShape::Glob(g) => g.can_start_with(prefix),
        }
    }

    /// See [`Glob::can_bundle`].
    pub fn can_bundle(&self, lead: &str, c: char) -> bool {
        match self {
            ArgShape::Lit(l) => l
                .strip_prefix(lead)
                .and_then(|rest| rest.split_once(c))
                .is_some_and(|(before, _)| !before.contains(['-', '/'])),
            ArgShape::Glob(g) => g.can_bundle(lead, c),
        }
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

    /// What each fixed position accepts, in order, and whether any further
    /// arguments may follow (`prefix`).
    pub fn shapes(&self) -> (Vec<ArgShape<'_>>, bool) {
        match self {
            ArgPattern::Exact(v) => (v.iter().map(|a| ArgShape::Lit(a)).collect(), false),
            ArgPattern::Prefix(v) => (v.iter().map(|a| ArgShape::Lit(a)).collect(), true),
            ArgPattern::Glob(v) => (v.iter().map(ArgShape::Glob).collect(), false),
        }
    }

    /// `exact ["s3", "ls"]`, `prefix ["api"] + anything`, `glob ["repos/*"]`.
    /// The pattern as data, for `policy show` and `vaultctl mcp`.
    pub fn summary(&self) -> super::ArgPatternSummary {
        let (kind, args) = match self {
            ArgPattern::Exact(v) => ("exact", v.clone()),
            ArgPattern::Prefix(v) => ("prefix", v.clone()),
            ArgPattern::Glob(v) => ("glob", v.iter().map(|g| g.text.clone()).collect()),
        };
        super::ArgPatternSummary { kind, args }
    }

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
    fn what_globs_can_produce() {
        let g = |p: &str| Glob::new(p).expect("valid glob");
        assert!(g("*").can_start_with("--to-command="));
        assert!(!g("*").can_start_with("a/b"));
        assert!(g("**").can_start_with("a/b"));
        assert!(g("--to-*").can_start_with("--to-command"));
        assert!(!g("--files").can_start_with("--to"));
        assert!(g("-?").can_start_with("-c"));
        assert!(g("-c*").can_start_with("-c"));
        assert!(!g("x*").can_start_with("-"));
        // Bundles of short options: -c somewhere after one dash.
        assert!(g("*").can_bundle("-", 'I'));
        assert!(g("-x*").can_bundle("-", 'I'));
        assert!(g("-xv?").can_bundle("-", 'I'));
        assert!(!g("-xvf").can_bundle("-", 'I'));
        assert!(!g("--*").can_bundle("-", 'I'), "a long option is no bundle");
        assert!(g("xIf").can_bundle("", 'I'));
        assert!(!g("xvf").can_bundle("", 'I'));
        let lit = ArgShape::Lit("-xIf");
        assert!(lit.can_bundle("-", 'I'));
        assert!(!lit.can_bundle("-", 'z'));
        assert!(!ArgShape::Lit("--Ignore").can_bundle("-", 'I'));
    }

    #[test]
    fn descriptions() {
        let p = ArgPattern::compile(&RawArgPattern::Prefix(v(&["api"]))).expect("valid");
        assert_eq!(p.describe(), r#"prefix ["api"] + anything"#);
    }
}
