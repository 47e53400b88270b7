//! The compiled pattern set: every encoded form of every secret, a finder
//! over all of them, and a prefix index for the holdback.

use std::collections::BTreeSet;
use std::fmt;

use zeroize::Zeroizing;

use crate::encode::{self, Encoding};
use crate::find::Finder;
use crate::occur::TextIndex;
use crate::wrapped::{self, Wrapped};
use crate::{Error, Secret};

/// Bits in the four-byte-prefix filter (32 KiB).
pub(crate) const QUAD_BITS: u32 = 18;

/// What one pattern stands for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PatternInfo {
    /// Index of the secret in the order given to [`Patterns::new`].
    pub(crate) secret: u32,
    /// Index into the label table.
    pub(crate) label: u32,
    pub(crate) encoding: Encoding,
}

/// Every form of every secret, compiled once and shared (`Arc<Patterns>`)
/// by the [`Redactor`](crate::Redactor)s of one run.
///
/// Holds copies of the secret material; they are wiped on drop. `Debug`
/// prints only counts.
pub struct Patterns {
    /// Finds the occurrences that span no line break.
    pub(crate) finder: Finder,
    /// All pattern bytes, back to back.
    arena: Zeroizing<Vec<u8>>,
    /// `(offset, len)` in `arena` for each pattern id.
    spans: Vec<(usize, usize)>,
    pub(crate) info: Vec<PatternInfo>,
    /// Replacement text per label: `[REDACTED:NAME]`, `[REDACTED:NAME:hex]`…
    pub(crate) labels: Vec<Box<[u8]>>,
    pub(crate) names: Vec<String>,
    /// Pattern ids sorted by their bytes, for prefix queries.
    pub(crate) sorted: Vec<u32>,
    /// Bytes that begin a pattern of two bytes or more.
    pub(crate) first: [bool; 256],
    /// Bloom-style filter of the first four bytes of patterns of five bytes
    /// or more.
    pub(crate) quads: Vec<u64>,
    pub(crate) longest: usize,
    /// Base64 forms for the line-wrapped search; `None` without any.
    pub(crate) wrapped: Option<Wrapped>,
}

impl Patterns {
    /// Compiles the forms of `secrets`.
    ///
    /// Fails on an empty or malformed name, a duplicate name or an empty
    /// value. Errors name the secret, never its value.
    pub fn new(secrets: &[Secret]) -> Result<Patterns, Error> {
        Patterns::build(secrets, |_| true, |_| true)
    }

    /// The pattern set of `secrets` reduced to the forms that occur in one
    /// of `texts`: for each of them [`redact_all`](crate::redact_all) gives
    /// the same output as with [`Patterns::new`]. For redacting a few short
    /// texts (a command's arguments) once: the forms are looked up in an
    /// index of the texts, so when none occurs nothing is compiled at all.
    ///
    /// Checks the secrets as [`Patterns::new`] does. Memory: the index is
    /// 16 bytes per byte of text, the forms are made one secret at a time.
    pub fn occurring_in(secrets: &[Secret], texts: &[&[u8]]) -> Result<Patterns, Error> {
        let index = TextIndex::new(texts);
        let longest = texts.iter().map(|t| t.len()).max().unwrap_or(0);
        // No form is shorter than its value (`encode::forms`): a value
        // longer than every text needs no forms made.
        Patterns::build(
            secrets,
            |value| value.len() <= longest,
            |form| index.contains(form),
        )
    }

    /// Compiles the forms that `keep` of the secrets whose value `may_occur`.
    fn build(
        secrets: &[Secret],
        may_occur: impl Fn(&[u8]) -> bool,
        mut keep: impl FnMut(&[u8]) -> bool,
    ) -> Result<Patterns, Error> {
        let mut seen = BTreeSet::new();
        let mut names = Vec::with_capacity(secrets.len());
        let mut labels: Vec<Box<[u8]>> = Vec::new();
        // (bytes, info) before deduplication.
        let mut candidates: Vec<(Zeroizing<Vec<u8>>, PatternInfo)> = Vec::new();
        for (index, secret) in secrets.iter().enumerate() {
            let name = secret.name();
            validate_name(name)?;
            if !seen.insert(name) {
                return Err(Error::DuplicateName(name.to_owned()));
            }
            if secret.value().is_empty() {
                return Err(Error::EmptyValue(name.to_owned()));
            }
            names.push(name.to_owned());
            if !may_occur(secret.value()) {
                continue;
            }
            let mut label_of = std::collections::BTreeMap::new();
            for (encoding, bytes) in encode::forms(secret.value()) {
                if !keep(&bytes) {
                    continue;
                }
                let label = *label_of.entry(encoding).or_insert_with(|| {
                    labels.push(label_text(name, encoding));
                    labels.len() - 1
                });
                let info = PatternInfo {
                    secret: to_u32(index),
                    label: to_u32(label),
                    encoding,
                };
                candidates.push((bytes, info));
            }
        }
        // Identical bytes from two secrets or two encodings keep the first.
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_by(|&a, &b| candidates[a].0.cmp(&candidates[b].0).then(a.cmp(&b)));
        order.dedup_by(|later, first| candidates[*later].0 == candidates[*first].0);
        order.sort_unstable();

        let total: usize = order.iter().map(|&i| candidates[i].0.len()).sum();
        let mut arena = Zeroizing::new(Vec::with_capacity(total));
        let mut spans = Vec::with_capacity(order.len());
        let mut info = Vec::with_capacity(order.len());
        for &i in &order {
            let (bytes, pattern_info) = &candidates[i];
            spans.push((arena.len(), bytes.len()));
            arena.extend_from_slice(bytes);
            info.push(*pattern_info);
        }
        drop(candidates);

        let slices: Vec<(u32, &[u8])> = spans
            .iter()
            .enumerate()
            .map(|(id, &(at, len))| (to_u32(id), &arena[at..at + len]))
            .collect();
        let finder = Finder::new(&slices).map_err(Error::Automaton)?;
        let mut sorted: Vec<u32> = (0..to_u32(slices.len())).collect();
        sorted.sort_unstable_by(|&a, &b| slices[a as usize].1.cmp(slices[b as usize].1));
        let mut first = [false; 256];
        let mut quads = vec![0u64; 1 << (QUAD_BITS - 6)];
        for (_, s) in &slices {
            if s.len() >= 2 {
                first[usize::from(s[0])] = true;
            }
            if s.len() >= 5 {
                let bit = quad_bit(&s[..4]);
                quads[bit / 64] |= 1 << (bit % 64);
            }
        }
        let longest = slices.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
        let base64: Vec<(u32, &[u8])> = slices
            .iter()
            .copied()
            .filter(|&(id, _)| {
                matches!(
                    info[id as usize].encoding,
                    Encoding::Base64 | Encoding::Base64Url
                )
            })
            .collect();
        let wrapped = Wrapped::new(&base64, longest)
            .transpose()
            .map_err(Error::Automaton)?;
        drop(base64);
        drop(slices);
        Ok(Patterns {
            finder,
            arena,
            spans,
            info,
            labels,
            names,
            sorted,
            first,
            quads,
            longest,
            wrapped,
        })
    }

    /// Length of the longest pattern; the holdback never reaches it.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// Number of distinct patterns (all forms of all secrets, deduplicated).
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when there are no secrets at all; redaction is then a copy.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Approximate heap bytes used by the pattern bytes and the tables.
    pub fn memory_usage(&self) -> usize {
        self.finder.memory_usage()
            + self.arena.capacity()
            + self.spans.capacity() * 16
            + self.info.capacity() * 8
            + self.sorted.capacity() * 4
            + self.quads.capacity() * 8
            + self.labels.iter().map(|l| l.len()).sum::<usize>()
            + self.wrapped.as_ref().map_or(0, Wrapped::memory_usage)
    }

    /// Most bytes a [`Redactor`](crate::Redactor) ever holds:
    /// `longest() - 1`, plus the line breaks a line-wrapped base64 form may
    /// contain (two bytes per 64 columns).
    pub fn max_held(&self) -> usize {
        let longest = self.longest.saturating_sub(1);
        if self.wrapped.is_some() {
            wrapped::max_span(longest)
        } else {
            longest
        }
    }

    pub(crate) fn pattern(&self, id: usize) -> &[u8] {
        let (at, len) = self.spans[id];
        &self.arena[at..at + len]
    }
}

impl fmt::Debug for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Patterns")
            .field("secrets", &self.names.len())
            .field("patterns", &self.spans.len())
            .field("longest", &self.longest)
            .field("search", &self.finder.kind())
            .field("wrapped_base64", &self.wrapped.is_some())
            .finish_non_exhaustive()
    }
}

pub(crate) fn quad_bit(four: &[u8]) -> usize {
    let v = u32::from_le_bytes([four[0], four[1], four[2], four[3]]);
    (v.wrapping_mul(0x9E37_79B1) >> (32 - QUAD_BITS)) as usize
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn label_text(name: &str, encoding: Encoding) -> Box<[u8]> {
    match encoding.suffix() {
        None => format!("[REDACTED:{name}]"),
        Some(suffix) => format!("[REDACTED:{name}:{suffix}]"),
    }
    .into_bytes()
    .into_boxed_slice()
}

/// Names appear in labels, so they must not be able to fake or break one.
fn validate_name(name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::EmptyName);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b']' && b != b'[')
    {
        return Err(Error::InvalidName(name.escape_default().to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(values: &[&[u8]]) -> Patterns {
        let secrets: Vec<Secret> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Secret::new(format!("S{i}"), v.to_vec()))
            .collect();
        Patterns::new(&secrets).expect("patterns")
    }

    #[test]
    fn prefix_queries() {
        // Below MIN_ENCODED_LEN, so raw forms only.
        let p = pats(&[b"abc", b"abcde"]);
        assert!(p.is_proper_prefix(b"a"));
        assert!(
            p.is_proper_prefix(b"abc"),
            "abc is a pattern and a prefix of a longer one"
        );
        assert!(p.is_proper_prefix(b"abcd"));
        assert!(!p.is_proper_prefix(b"abcde"));
        assert!(!p.is_proper_prefix(b"abd"));
        assert_eq!(p.plain_holdback(b"xxabcd"), 2);
        assert_eq!(p.plain_holdback(b"xxabcde"), 7);
        let long = pats(&[b"0123456789"]);
        assert!(long.is_proper_prefix(b"01234"));
        assert!(long.is_proper_prefix(b"3031"), "hex form");
        assert!(!long.is_proper_prefix(b"0124"));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            Patterns::new(&[Secret::new("", b"x".to_vec())]),
            Err(Error::EmptyName)
        ));
        assert!(matches!(
            Patterns::new(&[Secret::new("A]", b"x".to_vec())]),
            Err(Error::InvalidName(_))
        ));
        assert!(matches!(
            Patterns::new(&[Secret::new("A", Vec::new())]),
            Err(Error::EmptyValue(_))
        ));
        let dup = [
            Secret::new("A", b"x".to_vec()),
            Secret::new("A", b"y".to_vec()),
        ];
        assert!(matches!(Patterns::new(&dup), Err(Error::DuplicateName(_))));
    }

    #[test]
    fn debug_prints_no_secret() {
        let p = pats(&[b"hunter2-very-secret"]);
        let text = format!("{p:?}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
