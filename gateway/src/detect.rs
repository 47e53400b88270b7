//! Pattern detectors for well-known credential formats and PII in what
//! upstreams return, each with the action policy gives it.
//!
//! `[mcp_server.filters]` sets an action for a whole category
//! (`credentials`, `pii`) and may override it per detector
//! (`detector.email = "audit"`, or `"off"`). Omitted: the detector is off.
//! `phone` belongs to no category (too many false positives) and is only
//! on when named.
//!
//! | detector | finds |
//! | --- | --- |
//! | `aws_access_key_id` | `AKIA…`/`ASIA…` and the other AWS key-id prefixes, 20 characters |
//! | `aws_secret_access_key` | 40 characters of base64 after an `aws…secret` keyword or within 100 characters after an access key id |
//! | `github_token` | `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_` |
//! | `slack_token` | `xoxa-`, `xoxb-`, `xoxp-`, `xoxr-`, `xoxs-` |
//! | `openai_key` | `sk-…`, `sk-proj-…` (not `sk-ant-`) |
//! | `anthropic_key` | `sk-ant-…` |
//! | `google_api_key` | `AIza` + 35 characters |
//! | `private_key` | a PEM `-----BEGIN … PRIVATE KEY-----` block (to its END line, or to the end of the text) |
//! | `jwt` | three base64url parts, the first two JSON objects (`eyJ`) |
//! | `email` | addresses |
//! | `us_ssn` | `123-45-6789` shapes that are valid SSNs (not area 000, 666 or 9xx) |
//! | `credit_card` | 13–19 digits, contiguous or in groups of four (or 4-6-5) split by spaces or dashes, passing the Luhn check |
//! | `phone` | North-American numbers such as `(555) 123-4567` |
//!
//! All matches are found in the original text first; then `redact`
//! replaces each (merged) match with `[REDACTED:detector]`, `audit` only
//! counts, and `block` makes the caller refuse the whole result. What is
//! reported is the detector's name and a count, never the matched text.

use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// What a filter does with what it finds.
#[derive(Deserialize, Serialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Count only.
    Audit,
    /// Replace with a label.
    Redact,
    /// Refuse the whole result.
    Block,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Audit => "audit",
            Action::Redact => "redact",
            Action::Block => "block",
        }
    }
}

/// A per-detector override.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawAction {
    Off,
    Audit,
    Redact,
    Block,
}

/// `[mcp_server.filters]`.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawFilters {
    pub credentials: Option<Action>,
    pub pii: Option<Action>,
    #[serde(default)]
    pub detector: BTreeMap<String, RawAction>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Credential,
    Pii,
    /// Only when named.
    Named,
}

struct Spec {
    name: &'static str,
    category: Category,
    /// Each regex's capture group 1 is the finding.
    patterns: &'static [&'static str],
    valid: fn(&str) -> bool,
}

fn any(_: &str) -> bool {
    true
}

fn not_anthropic(s: &str) -> bool {
    !s.starts_with("sk-ant-")
}

fn ssn(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    match parts[..] {
        [area, group, serial] => {
            area != "000"
                && area != "666"
                && !area.starts_with('9')
                && group != "00"
                && serial != "0000"
        }
        _ => false,
    }
}

/// Luhn over the digits; 13–19 of them.
pub fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

const SPECS: &[Spec] = &[
    Spec {
        name: "aws_access_key_id",
        category: Category::Credential,
        patterns: &[r"\b((?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|APKA)[A-Z0-9]{16})\b"],
        valid: any,
    },
    Spec {
        name: "aws_secret_access_key",
        category: Category::Credential,
        patterns: &[
            r#"(?i:aws.{0,20}?(?:secret|private).{0,20}?[=:"'\s]{1,6})([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"#,
            r"(?s)\b(?:AKIA|ASIA)[A-Z0-9]{16}\b.{0,100}?[^A-Za-z0-9/+]([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)",
        ],
        valid: any,
    },
    Spec {
        name: "github_token",
        category: Category::Credential,
        patterns: &[
            r"\b((?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255})\b",
            r"\b(github_pat_[A-Za-z0-9_]{22,255})\b",
        ],
        valid: any,
    },
    Spec {
        name: "slack_token",
        category: Category::Credential,
        patterns: &[r"\b(xox[abprs]-[A-Za-z0-9-]{10,250})"],
        valid: any,
    },
    Spec {
        name: "openai_key",
        category: Category::Credential,
        patterns: &[r"\b(sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,250})"],
        valid: not_anthropic,
    },
    Spec {
        name: "anthropic_key",
        category: Category::Credential,
        patterns: &[r"\b(sk-ant-[A-Za-z0-9_-]{20,250})"],
        valid: any,
    },
    Spec {
        name: "google_api_key",
        category: Category::Credential,
        patterns: &[r"\b(AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|$)"],
        valid: any,
    },
    Spec {
        name: "private_key",
        category: Category::Credential,
        patterns: &[
            r"(?s)(-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\z))",
        ],
        valid: any,
    },
    Spec {
        name: "jwt",
        category: Category::Credential,
        patterns: &[r"\b(eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,})"],
        valid: any,
    },
    Spec {
        name: "email",
        category: Category::Pii,
        patterns: &[
            r"\b([A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24})\b",
        ],
        valid: any,
    },
    Spec {
        name: "us_ssn",
        category: Category::Pii,
        patterns: &[r"\b(\d{3}-\d{2}-\d{4})\b"],
        valid: ssn,
    },
    Spec {
        name: "credit_card",
        category: Category::Pii,
        patterns: &[
            r"\b(\d{13,19}|\d{4}(?: \d{4}){2,3}(?: \d{1,3})?|\d{4}(?:-\d{4}){2,3}(?:-\d{1,3})?|\d{4}[ -]\d{6}[ -]\d{5})\b",
        ],
        valid: luhn,
    },
    Spec {
        name: "phone",
        category: Category::Named,
        patterns: &[r"(?:^|[^\w+])((?:\+?1[ .-]?)?(?:\(\d{3}\)|\d{3})[ .-]?\d{3}[ .-]\d{4})\b"],
        valid: any,
    },
];

/// Every detector's name.
pub fn detector_names() -> impl Iterator<Item = &'static str> {
    SPECS.iter().map(|s| s.name)
}

struct Active {
    spec: &'static Spec,
    regexes: Vec<Regex>,
    action: Action,
}

impl std::fmt::Debug for Active {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.spec.name, self.action.as_str())
    }
}

/// The detectors a server's policy turned on, compiled.
#[derive(Debug, Default)]
pub struct DetectorSet {
    active: Vec<Active>,
}

impl Clone for DetectorSet {
    fn clone(&self) -> Self {
        DetectorSet {
            active: self
                .active
                .iter()
                .map(|a| Active {
                    spec: a.spec,
                    regexes: a.regexes.clone(),
                    action: a.action,
                })
                .collect(),
        }
    }
}

/// What scanning one string found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// The text with redactions applied, if any were.
    pub redacted: Option<String>,
    /// Detector name → (action, findings).
    pub found: BTreeMap<&'static str, (Action, u64)>,
}

impl Scan {
    /// Whether a `block` detector found something.
    pub fn blocks(&self) -> bool {
        self.found.values().any(|(a, _)| *a == Action::Block)
    }
}

impl RawFilters {
    pub fn check(&self) -> Result<DetectorSet, String> {
        for name in self.detector.keys() {
            if !SPECS.iter().any(|s| s.name == name) {
                let known: Vec<&str> = detector_names().collect();
                return Err(format!(
                    "unknown detector {name:?} (known: {})",
                    known.join(", ")
                ));
            }
        }
        let mut active = Vec::new();
        for spec in SPECS {
            let by_category = match spec.category {
                Category::Credential => self.credentials,
                Category::Pii => self.pii,
                Category::Named => None,
            };
            let action = match self.detector.get(spec.name) {
                Some(RawAction::Off) => None,
                Some(RawAction::Audit) => Some(Action::Audit),
                Some(RawAction::Redact) => Some(Action::Redact),
                Some(RawAction::Block) => Some(Action::Block),
                None => by_category,
            };
            let Some(action) = action else { continue };
            let regexes = spec
                .patterns
                .iter()
                .map(|p| Regex::new(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("detector {}: {e}", spec.name))?;
            active.push(Active {
                spec,
                regexes,
                action,
            });
        }
        Ok(DetectorSet { active })
    }
}

impl DetectorSet {
    /// The action configured for a detector, if it is on.
    pub fn action_of(&self, name: &str) -> Option<Action> {
        self.active
            .iter()
            .find(|a| a.spec.name == name)
            .map(|a| a.action)
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Finds every detector's matches in `text` and applies `redact`.
    pub fn scan(&self, text: &str) -> Scan {
        let mut scan = Scan::default();
        // (start, end, label) of the ranges to redact.
        let mut ranges: Vec<(usize, usize, &'static str)> = Vec::new();
        for a in &self.active {
            let mut count = 0u64;
            for re in &a.regexes {
                for caps in re.captures_iter(text) {
                    let Some(m) = caps.get(1) else { continue };
                    if !(a.spec.valid)(m.as_str()) {
                        continue;
                    }
                    count += 1;
                    if a.action == Action::Redact {
                        ranges.push((m.start(), m.end(), a.spec.name));
                    }
                }
            }
            if count > 0 {
                scan.found.insert(a.spec.name, (a.action, count));
            }
        }
        if ranges.is_empty() {
            return scan;
        }
        ranges.sort();
        let mut out = String::with_capacity(text.len());
        let mut pos = 0;
        let mut i = 0;
        while i < ranges.len() {
            let (start, mut end, label) = ranges[i];
            while i + 1 < ranges.len() && ranges[i + 1].0 < end {
                end = end.max(ranges[i + 1].1);
                i += 1;
            }
            if start >= pos {
                out.push_str(&text[pos..start]);
                out.push_str("[REDACTED:");
                out.push_str(label);
                out.push(']');
                pos = end;
            } else if end > pos {
                pos = end;
            }
            i += 1;
        }
        out.push_str(&text[pos..]);
        scan.redacted = Some(out);
        scan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(action: Action) -> DetectorSet {
        let mut raw = RawFilters {
            credentials: Some(action),
            pii: Some(action),
            ..RawFilters::default()
        };
        raw.detector.insert("phone".into(), RawAction::Redact);
        if action != Action::Redact {
            raw.detector.insert(
                "phone".into(),
                match action {
                    Action::Audit => RawAction::Audit,
                    _ => RawAction::Block,
                },
            );
        }
        raw.check().expect("compiles")
    }

    /// One sample per detector, built at run time so no literal in the
    /// source looks like a live credential.
    fn samples() -> Vec<(&'static str, String)> {
        let a40 = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEYab";
        vec![
            (
                "aws_access_key_id",
                format!("key {}{}", "AKIA", "IOSFODNN7EXAMPLE"),
            ),
            (
                "aws_secret_access_key",
                format!("aws_secret_access_key = {a40}\n"),
            ),
            ("github_token", format!("t={}_{}", "ghp", "a".repeat(36))),
            (
                "github_token",
                format!("{}{}", "github_pat_", "B".repeat(40)),
            ),
            ("slack_token", format!("{}-1234567890-abcdef", "xoxb")),
            ("openai_key", format!("{}-proj-{}", "sk", "Z9".repeat(20))),
            (
                "anthropic_key",
                format!("{}-ant-api03-{}", "sk", "q".repeat(40)),
            ),
            ("google_api_key", format!("{}{}", "AIza", "S".repeat(35))),
            (
                "private_key",
                format!(
                    "x\n-----BEGIN {} PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\ny",
                    "RSA"
                ),
            ),
            (
                "jwt",
                format!(
                    "{}.{}.{}",
                    "eyJhbGciOiJIUzI1NiJ9",
                    "eyJzdWIiOiIxMjM0NTY3ODkwIn0",
                    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
                ),
            ),
            ("email", "mail alice.smith@example.org now".into()),
            ("us_ssn", "ssn 123-45-6789.".into()),
            ("credit_card", "card 4111 1111 1111 1111 ok".into()),
            ("credit_card", "card 5500-0000-0000-0004.".into()),
            ("credit_card", "card 378282246310005".into()),
            ("phone", "call (555) 123-4567".into()),
        ]
    }

    #[test]
    fn each_detector_finds_its_format() {
        let set = all(Action::Audit);
        for (name, text) in samples() {
            let scan = set.scan(&text);
            assert_eq!(
                scan.found.get(name),
                Some(&(Action::Audit, 1)),
                "{name} in {text:?}: {:?}",
                scan.found
            );
            assert_eq!(scan.redacted, None, "audit does not change the text");
        }
    }

    #[test]
    fn each_detector_redacts_without_leaving_the_match() {
        let set = all(Action::Redact);
        for (name, text) in samples() {
            let scan = set.scan(&text);
            let out = scan.redacted.expect("redacted");
            assert!(out.contains("[REDACTED:"), "{name}: {out}");
            assert!(scan.found.contains_key(name), "{name}");
            for word in [
                "IOSFODNN7",
                "aaaaaaaa",
                "BBBBBBBB",
                "1234567890-abcdef",
                "Z9Z9Z9",
                "qqqqqqqq",
                "SSSSSSSS",
                "MIIE",
                "dozjg",
                "alice.smith",
                "45-6789",
                "1111 1111",
                "123-4567",
                "wJalrXUtnFEMI",
            ] {
                assert!(!out.contains(word), "{name}: {word} left in {out}");
            }
        }
    }

    #[test]
    fn block_is_reported() {
        let set = all(Action::Block);
        for (name, text) in samples() {
            let scan = set.scan(&text);
            assert!(scan.blocks(), "{name}");
        }
        assert!(!set.scan("nothing to see here").blocks());
    }

    #[test]
    fn near_misses_are_not_findings() {
        let set = all(Action::Audit);
        for text in [
            "card 4111 1111 1111 1112",    // Luhn fails
            "ids 4111-1111 1111-1111",     // mixed separators
            "ssn 000-12-3456 666-12-3456", // invalid areas
            "ssn 900-12-3456",
            "sk-short",
            "AKIA123",
            "plain text with an at @ sign",
        ] {
            let scan = set.scan(text);
            assert!(scan.found.is_empty(), "{text}: {:?}", scan.found);
        }
        // An Anthropic key is not also an OpenAI key.
        let scan = set.scan(&format!("{}-ant-api03-{}", "sk", "q".repeat(40)));
        assert_eq!(
            scan.found.keys().copied().collect::<Vec<_>>(),
            ["anthropic_key"]
        );
    }

    #[test]
    fn the_aws_secret_next_to_its_key_id_is_found() {
        let set = all(Action::Redact);
        let text = format!(
            "{}{} / {}",
            "AKIA", "IOSFODNN7EXAMPLE", "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEYab"
        );
        let scan = set.scan(&text);
        assert_eq!(
            scan.redacted.as_deref(),
            Some("[REDACTED:aws_access_key_id] / [REDACTED:aws_secret_access_key]")
        );
    }

    #[test]
    fn off_and_category_overrides() {
        let raw: RawFilters = toml::from_str(
            "credentials = \"block\"\npii = \"audit\"\ndetector = { jwt = \"off\", email = \"redact\" }",
        )
        .expect("decodes");
        let set = raw.check().expect("compiles");
        assert_eq!(set.action_of("github_token"), Some(Action::Block));
        assert_eq!(set.action_of("jwt"), None);
        assert_eq!(set.action_of("email"), Some(Action::Redact));
        assert_eq!(set.action_of("us_ssn"), Some(Action::Audit));
        assert_eq!(set.action_of("phone"), None);
        let e = toml::from_str::<RawFilters>("detector = { jwt = \"maybe\" }");
        assert!(e.is_err());
        let raw: RawFilters = toml::from_str("detector = { aws = \"block\" }").expect("decodes");
        assert!(raw
            .check()
            .expect_err("unknown")
            .contains("unknown detector"));
        assert!(RawFilters::default().check().expect("empty").is_empty());
    }

    #[test]
    fn overlapping_redactions_merge_and_keep_the_text_around() {
        let set = all(Action::Redact);
        let text = format!("a {}-proj-{} b alice@example.org c", "sk", "x".repeat(30));
        let out = set.scan(&text).redacted.expect("redacted");
        assert_eq!(out, "a [REDACTED:openai_key] b [REDACTED:email] c");
    }
}
