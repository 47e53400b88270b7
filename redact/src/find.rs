//! Finding every occurrence of a set of patterns: the skip filter for
//! patterns of [`MIN_WINDOW`] bytes or more, a small Aho–Corasick automaton
//! for the shorter ones (the raw bytes of 1–4-byte secrets), if any.
//!
//! The automaton is the expensive part to build (0.1–0.7 s and 12 MiB for
//! the 13,000 forms of 1,000 secrets), so it never holds the long patterns:
//! a pattern set of ordinary secrets builds no automaton at all.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, BuildError, MatchKind};

use crate::skip::{SkipFilter, MIN_WINDOW};

/// Short patterns up to which the automaton is a DFA (see
/// `docs/bench-redaction.md`).
pub(crate) const DFA_MAX_PATTERN_BYTES: usize = 200_000;

pub(crate) struct Finder {
    /// Patterns of `MIN_WINDOW` bytes or more.
    skip: Option<SkipFilter>,
    /// Shorter patterns: the automaton and the id of each of its patterns.
    short: Option<(AhoCorasick, Vec<u32>)>,
}

impl Finder {
    /// A finder of the `(id, pattern)` given; none may be empty.
    pub(crate) fn new(patterns: &[(u32, &[u8])]) -> Result<Finder, BuildError> {
        let long: Vec<(u32, &[u8])> = patterns
            .iter()
            .copied()
            .filter(|(_, p)| p.len() >= MIN_WINDOW)
            .collect();
        let short: Vec<(u32, &[u8])> = patterns
            .iter()
            .copied()
            .filter(|(_, p)| p.len() < MIN_WINDOW)
            .collect();
        let skip = SkipFilter::new(&long);
        let short = if short.is_empty() {
            None
        } else {
            let slices: Vec<&[u8]> = short.iter().map(|(_, p)| *p).collect();
            let total: usize = slices.iter().map(|p| p.len()).sum();
            let kind = if total <= DFA_MAX_PATTERN_BYTES {
                AhoCorasickKind::DFA
            } else {
                AhoCorasickKind::ContiguousNFA
            };
            let automaton = AhoCorasickBuilder::new()
                .match_kind(MatchKind::Standard)
                .kind(Some(kind))
                .build(&slices)?;
            Some((automaton, short.iter().map(|(id, _)| *id).collect()))
        };
        Ok(Finder { skip, short })
    }

    /// Calls `f(start, end, id)` for every occurrence in `hay`, overlapping
    /// ones included, in no particular order; `pattern(id)` gives the bytes
    /// of a pattern.
    pub(crate) fn for_each_match<'p>(
        &self,
        hay: &[u8],
        pattern: impl Fn(u32) -> &'p [u8],
        mut f: impl FnMut(usize, usize, u32),
    ) {
        if let Some(skip) = &self.skip {
            skip.for_each_match(hay, pattern, &mut f);
        }
        if let Some((automaton, ids)) = &self.short {
            for m in automaton.find_overlapping_iter(hay) {
                f(m.start(), m.end(), ids[m.pattern().as_usize()]);
            }
        }
    }

    pub(crate) fn memory_usage(&self) -> usize {
        self.skip.as_ref().map_or(0, SkipFilter::memory_usage)
            + self
                .short
                .as_ref()
                .map_or(0, |(a, ids)| a.memory_usage() + ids.capacity() * 4)
    }

    /// What searches, for `Debug`: the skip filter, the automaton or both.
    pub(crate) fn kind(&self) -> &'static str {
        match (&self.skip, &self.short) {
            (Some(_), None) => "skip-filter",
            (None, Some(_)) => "automaton",
            (Some(_), Some(_)) => "skip-filter+automaton",
            (None, None) => "none",
        }
    }
}
