//! Secret names, the patterns (globs) that select them, and the
//! environment variable a name goes to by default.
//!
//! A name is one or more components separated by `/` (`GITHUB_TOKEN`,
//! `aws/access_key`, `prod/db/password`): 1 to 128 bytes of
//! `[A-Za-z0-9_.-]` and `/`, starting with a letter or `_`, with no
//! leading or trailing `/`, no empty component (`a//b`) and no component
//! `.` or `..` — so a name never looks like an option or a path that
//! climbs.
//!
//! A [`Glob`] is written like a name, with `*` in it:
//! * `*` matches any characters within one component (never a `/`):
//!   `aws/*` matches `aws/access_key` but not `aws/prod/key`, and `aws/*_key`
//!   matches `aws/access_key`;
//! * `**` as a whole component matches one or more whole components:
//!   `aws/**` matches `aws/access_key` and `aws/prod/key` (never `aws`
//!   itself); at most one `**` per pattern.
//!
//! [`default_env`] maps a name to its variable: a name without `/` is its
//! own variable (as before hierarchical names), a hierarchical name is
//! upper-cased with each `/`, `.` and `-` turned into `_`
//! (`aws/access_key` → `AWS_ACCESS_KEY`).

/// Longest secret name (and pattern), in bytes.
pub const MAX_NAME_LEN: usize = 128;

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/')
}

/// The component rules shared by names and patterns.
fn check_components(s: &str) -> Result<(), &'static str> {
    if s.ends_with('/') {
        return Err("a secret name must not end with '/'");
    }
    for c in s.split('/') {
        if c.is_empty() {
            return Err("a secret name must not have an empty component ('//')");
        }
        if c == "." || c == ".." {
            return Err("no component of a secret name may be '.' or '..'");
        }
    }
    Ok(())
}

/// Accepts a secret name or says why not. Messages never echo the name.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    let bytes = name.as_bytes();
    let Some(&first) = bytes.first() else {
        return Err("a secret name must not be empty");
    };
    if bytes.len() > MAX_NAME_LEN {
        return Err("a secret name is at most 128 bytes long");
    }
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return Err("a secret name must start with a letter or '_'");
    }
    if !bytes.iter().copied().all(name_byte) {
        return Err(
            "a secret name may contain only letters, digits, '_', '.', '-' and '/' between components",
        );
    }
    check_components(name)
}

/// Whether a secret reference is meant as a pattern.
pub fn is_glob(s: &str) -> bool {
    s.contains('*')
}

/// The variable a secret goes to when no `env` is given: the name itself
/// without `/`; a hierarchical name upper-cased with `/`, `.` and `-` as
/// `_`. The result still has to pass the policy's variable checks.
pub fn default_env(name: &str) -> String {
    if !name.contains('/') {
        return name.to_owned();
    }
    name.bytes()
        .map(|b| match b {
            b'/' | b'.' | b'-' => '_',
            b => char::from(b.to_ascii_uppercase()),
        })
        .collect()
}

/// One component of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// `**`: one or more whole components.
    Deep,
    /// Literal text with `*` wildcards, within one component.
    Component(String),
}

/// A validated pattern over secret names (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    parts: Vec<Part>,
}

impl Glob {
    /// Parses a pattern, or says why it is not one.
    pub fn parse(s: &str) -> Result<Glob, &'static str> {
        let bytes = s.as_bytes();
        let Some(&first) = bytes.first() else {
            return Err("a secret pattern must not be empty");
        };
        if bytes.len() > MAX_NAME_LEN {
            return Err("a secret pattern is at most 128 bytes long");
        }
        if !is_glob(s) {
            return Err("a secret pattern needs a '*'");
        }
        if !(first.is_ascii_alphabetic() || first == b'_' || first == b'*') {
            return Err("a secret pattern must start with a letter, '_' or '*'");
        }
        if !bytes.iter().all(|&b| name_byte(b) || b == b'*') {
            return Err(
                "a secret pattern may contain only letters, digits, '_', '.', '-', '*' and '/' between components",
            );
        }
        check_components(s).map_err(|_| {
            "a secret pattern must not end with '/', have an empty component or a component '.' or '..'"
        })?;
        let mut parts = Vec::new();
        for c in s.split('/') {
            if c == "**" {
                parts.push(Part::Deep);
            } else if c.contains("**") {
                return Err("'**' in a secret pattern must be a whole component");
            } else {
                parts.push(Part::Component(c.to_owned()));
            }
        }
        if parts.iter().filter(|p| **p == Part::Deep).count() > 1 {
            return Err("a secret pattern has at most one '**'");
        }
        Ok(Glob {
            text: s.to_owned(),
            parts,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `name` is selected by this pattern.
    pub fn matches(&self, name: &str) -> bool {
        let comps: Vec<&str> = name.split('/').collect();
        match_parts(&self.parts, &comps)
    }
}

impl std::fmt::Display for Glob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn match_parts(parts: &[Part], comps: &[&str]) -> bool {
    match parts.split_first() {
        None => comps.is_empty(),
        Some((Part::Deep, rest)) => (1..=comps.len()).any(|k| match_parts(rest, &comps[k..])),
        Some((Part::Component(p), rest)) => match comps.split_first() {
            Some((c, more)) => wildcard(p.as_bytes(), c.as_bytes()) && match_parts(rest, more),
            None => false,
        },
    }
}

/// `*` matches any run of bytes (the text is one component, so no `/`).
/// Linear backtracking: a later `*` supersedes the last one's choice.
fn wildcard(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchical_names_follow_the_component_rules() {
        let long = "a/".repeat(63) + "bc";
        assert_eq!(long.len(), 128);
        for ok in [
            "A",
            "_",
            "GITHUB_TOKEN",
            "a.b-c_D9",
            "aws/access_key",
            "prod/db/pass.word",
            "a/.hidden",
            "a/9",
            "a/...",
            long.as_str(),
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        let too_long = "a/".repeat(64) + "b";
        for bad in [
            "",
            "/aws",
            "aws/",
            "aws//key",
            "aws/./key",
            "aws/../key",
            "aws/..",
            "a/.",
            "9abc",
            ".a",
            "-a",
            "a b",
            "a=b",
            "a\\b",
            "a*",
            "é",
            "a\0",
            too_long.as_str(),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn default_variables() {
        assert_eq!(default_env("GITHUB_TOKEN"), "GITHUB_TOKEN");
        assert_eq!(default_env("lower"), "lower", "flat names are unchanged");
        assert_eq!(default_env("aws/access_key"), "AWS_ACCESS_KEY");
        assert_eq!(default_env("aws/prod.key-1"), "AWS_PROD_KEY_1");
        assert_eq!(default_env("aws/a_b"), default_env("AWS_A/B"));
    }

    #[test]
    fn star_stays_within_one_component() {
        let g = Glob::parse("aws/*").unwrap();
        assert!(g.matches("aws/access_key"));
        assert!(g.matches("aws/x"));
        assert!(!g.matches("aws"));
        assert!(!g.matches("aws/prod/key"));
        assert!(!g.matches("awsx/key"));
        assert!(!g.matches("gcp/key"));
        let g = Glob::parse("aws/*_key").unwrap();
        assert!(g.matches("aws/access_key") && g.matches("aws/_key"));
        assert!(!g.matches("aws/access_keys"));
        let g = Glob::parse("*/token").unwrap();
        assert!(g.matches("gh/token") && !g.matches("a/b/token"));
        let g = Glob::parse("a*b*c").unwrap();
        assert!(g.matches("abc") && g.matches("aXbYbZc") && !g.matches("aXbYbZ"));
        assert!(!g.matches("a/b/c"));
    }

    #[test]
    fn double_star_spans_one_or_more_components() {
        let g = Glob::parse("aws/**").unwrap();
        assert!(g.matches("aws/k") && g.matches("aws/prod/k") && g.matches("aws/a/b/c"));
        assert!(!g.matches("aws") && !g.matches("gcp/k"));
        let g = Glob::parse("a/**/key").unwrap();
        assert!(g.matches("a/x/key") && g.matches("a/x/y/key"));
        assert!(!g.matches("a/key") && !g.matches("a/x/keys"));
        let g = Glob::parse("**").unwrap();
        assert!(g.matches("A") && g.matches("a/b"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "", "aws", "/aws/*", "aws/*/", "aws//*", "aws/../*", "aws/./*", "a**", "aws/x**",
            "**/a/**", "9*", "a *", "a/?",
        ] {
            assert!(Glob::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
