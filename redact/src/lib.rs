//! Streaming redaction of secrets and their encoded forms.
//!
//! A run's granted secrets are turned into a [`Secret`] each and compiled
//! once into [`Patterns`]: every secret's raw bytes plus its base64 (three
//! alignments, standard and URL-safe, padded or not, also wrapped at 64 or 76
//! columns), hex, percent, JSON and shell-escaped forms, found by one skip
//! filter (and a small Aho-Corasick automaton for the forms shorter than
//! five bytes, if any). Each output stream
//! of the command then gets its own [`Redactor`], which replaces every
//! occurrence with a label such as `[REDACTED:API_KEY]` or
//! `[REDACTED:API_KEY:base64]` in one pass, holding back only a possible
//! partial match. [`redact_all`] does the same for a whole buffer;
//! [`Patterns::occurring_in`] compiles only the forms present in a few
//! texts that are redacted once (a command's arguments).
//!
//! [`redaction_strength`] tells the CLI whether a value is long enough for
//! its encoded forms to be redacted too (see [`MIN_ENCODED_LEN`]).
//!
//! Redaction is defence in depth; see `docs/redaction.md` for what it covers
//! and what it cannot.

#![forbid(unsafe_code)]

mod encode;
mod find;
pub mod fuzzing;
mod occur;
mod patterns;
mod search;
mod skip;
mod stream;
mod wrapped;

use std::fmt;

use zeroize::Zeroizing;

pub use encode::Encoding;
pub use patterns::Patterns;
pub use stream::{redact_all, Redactor, IDLE_FLUSH_MAX};

/// Values shorter than this are redacted as raw bytes only: their encodings
/// (e.g. 8 hex digits for 4 bytes) would match ordinary output by chance.
pub const MIN_ENCODED_LEN: usize = 6;

/// A named secret value. The value is wiped on drop and never printed.
pub struct Secret {
    name: String,
    value: Zeroizing<Vec<u8>>,
}

impl Secret {
    /// `name` appears in labels; `value` is what gets redacted.
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Secret {
        Secret {
            name: name.into(),
            value: Zeroizing::new(value.into()),
        }
    }

    /// The name shown in labels and counts.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn value(&self) -> &[u8] {
        &self.value
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("value", &"<hidden>")
            .finish()
    }
}

/// How thoroughly a value can be redacted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strength {
    /// Empty: nothing to redact; [`Patterns::new`] refuses it.
    Empty,
    /// Shorter than [`MIN_ENCODED_LEN`]: raw bytes only. Also, every
    /// occurrence of these few bytes in ordinary output gets replaced.
    RawOnly,
    /// Raw bytes and every supported encoding.
    Full,
}

/// Classifies a value so the CLI can warn before storing a weak one.
pub fn redaction_strength(value: &[u8]) -> Strength {
    match value.len() {
        0 => Strength::Empty,
        n if n < MIN_ENCODED_LEN => Strength::RawOnly,
        _ => Strength::Full,
    }
}

/// Why a pattern set could not be built. Never carries a secret value.
#[derive(Debug)]
pub enum Error {
    /// A secret has an empty name.
    EmptyName,
    /// A name contains whitespace, control characters or brackets (shown
    /// escaped).
    InvalidName(String),
    /// Two secrets share a name, so labels and counts would be ambiguous.
    DuplicateName(String),
    /// A secret's value is empty.
    EmptyValue(String),
    /// The automaton could not be built (e.g. too large).
    Automaton(aho_corasick::BuildError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::EmptyName => write!(f, "secret name is empty"),
            Error::InvalidName(name) => write!(
                f,
                "secret name {name:?} contains a character not allowed in labels"
            ),
            Error::DuplicateName(name) => write!(f, "secret name {name:?} given twice"),
            Error::EmptyValue(name) => write!(f, "secret {name:?} has an empty value"),
            Error::Automaton(e) => write!(f, "cannot build the redaction automaton: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Automaton(e) => Some(e),
            _ => None,
        }
    }
}
