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
    /// overlapping ones included, in no particular order. `line` describes
    /// the line `buf` starts in.
    pub(crate) fn for_each_match(
        &self,
        buf: &[u8],
        line: LineState,
        scratch: &mut Scratch,
        mut f: impl FnMut(usize, usize, usize),
    ) {
        let pattern = |id: u32| self.pattern(id as usize);
        // Occurrences that do not span a transparent line break.
        self.finder
            .for_each_match(buf, pattern, |start, end, id| f(start, end, id as usize));
        if let Some(w) = &self.wrapped {
            wrapped::breaks(buf, line, &mut scratch.breaks);
            w.for_each_match(
                buf,
                &scratch.breaks,
                &mut scratch.norm,
                &mut scratch.map,
                pattern,
                &mut f,
            );
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
