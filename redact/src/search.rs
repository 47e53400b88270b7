//! Searching a buffer with [`Patterns`]: every occurrence, and how much of
//! the buffer's end must be held back because it may still become one.

use zeroize::Zeroizing;

use crate::patterns::{quad_bit, Patterns};
use crate::wrapped::{self, LineState};

/// Reusable buffers for the line-wrapped search.
#[derive(Default)]
pub(crate) struct Scratch {
    breaks: Vec<(usize, usize)>,
    /// Normalised copy of output bytes: may hold secret material.
    norm: Zeroizing<Vec<u8>>,
    map: Vec<usize>,
}

impl Patterns {
    /// Calls `f(start, end, pattern)` for every occurrence in `buf`,
    /// overlapping ones included, in increasing order of `end` (ties in any
    /// order). `line` describes the line `buf` starts in.
    pub(crate) fn for_each_match(
        &self,
        buf: &[u8],
        line: LineState,
        scratch: &mut Scratch,
        mut f: impl FnMut(usize, usize, usize),
    ) {
        self.for_each_plain_match(buf, &mut f);
        if let Some(w) = &self.wrapped {
            wrapped::breaks(buf, line, &mut scratch.breaks);
            w.for_each_match(
                buf,
                &scratch.breaks,
                &mut scratch.norm,
                &mut scratch.map,
                &mut f,
            );
        }
    }

    /// Occurrences that do not span a transparent line break.
    fn for_each_plain_match(&self, buf: &[u8], f: &mut impl FnMut(usize, usize, usize)) {
        let Some(skip) = &self.skip else {
            for m in self.automaton.find_overlapping_iter(buf) {
                f(m.start(), m.end(), m.pattern().as_usize());
            }
            return;
        };
        // Every occurrence starting at a candidate lies within `longest`
        // bytes of it; overlapping windows are merged so that no occurrence
        // is reported twice and the order by `end` is kept.
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        skip.candidates(buf, |start| {
            let end = (start + self.longest).min(buf.len());
            match ranges.last_mut() {
                Some(last) if start < last.1 => last.1 = last.1.max(end),
                _ => ranges.push((start, end)),
            }
        });
        for (from, to) in ranges {
            for m in self.automaton.find_overlapping_iter(&buf[from..to]) {
                f(from + m.start(), from + m.end(), m.pattern().as_usize());
            }
        }
    }

    /// True if `x` is a proper prefix of some pattern, i.e. more bytes could
    /// still turn it into a match.
    pub(crate) fn is_proper_prefix(&self, x: &[u8]) -> bool {
        let Some(&b0) = x.first() else { return false };
        if !self.first[usize::from(b0)] {
            return false;
        }
        if x.len() >= 4 {
            let bit = quad_bit(&x[..4]);
            if self.quads[bit / 64] & (1 << (bit % 64)) == 0 {
                return false;
            }
        }
        let at = self
            .sorted
            .partition_point(|&id| self.pattern(id as usize) < x);
        // Patterns starting with `x` are contiguous from `at`; `x` itself
        // may come first.
        self.sorted[at..]
            .iter()
            .take(2)
            .map(|&id| self.pattern(id as usize))
            .any(|p| p.len() > x.len() && p.starts_with(x))
    }

    /// Start of the longest suffix of `buf` that could still grow into a
    /// match, ignoring line wrapping. At most `longest() - 1` bytes; the work
    /// is bounded by that, not by the number of patterns.
    pub(crate) fn plain_holdback(&self, buf: &[u8]) -> usize {
        let from = buf.len().saturating_sub(self.longest.saturating_sub(1));
        (from..buf.len())
            .find(|&p| self.is_proper_prefix(&buf[p..]))
            .unwrap_or(buf.len())
    }

    /// Start of the bytes to hold back: every byte before it is final.
    pub(crate) fn holdback(&self, buf: &[u8], line: LineState, scratch: &mut Scratch) -> usize {
        let plain = self.plain_holdback(buf);
        if self.wrapped.is_none() {
            return plain;
        }
        // A partial base64 form may also run through line breaks near the end.
        let from = buf.len().saturating_sub(self.max_held());
        let tail = &buf[from..];
        wrapped::breaks(tail, line.after(&buf[..from]), &mut scratch.breaks);
        if scratch.breaks.is_empty() {
            return plain;
        }
        wrapped::normalise(
            tail,
            0..tail.len(),
            &scratch.breaks,
            &mut scratch.norm,
            &mut scratch.map,
        );
        let norm = scratch.norm.as_slice();
        let first = norm.len().saturating_sub(self.longest.saturating_sub(1));
        (first..norm.len())
            .map(|p| (p, from + scratch.map[p]))
            .take_while(|&(_, at)| at < plain)
            .find(|&(p, _)| self.is_proper_prefix(&norm[p..]))
            .map_or(plain, |(_, at)| at)
    }
}
