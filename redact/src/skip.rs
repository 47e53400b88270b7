//! A Wu–Manber-style skip filter that finds the patterns itself.
//!
//! Stepping an Aho–Corasick automaton costs a few nanoseconds per byte
//! whatever the prefilter, because log text is full of bytes that begin some
//! base64 or hex form, and building one over thousands of patterns costs far
//! more than the rest of a pattern set. Most of the text contains no secret
//! at all, so the filter looks only at every few bytes:
//!
//! * Let `w` be the length of the shortest pattern (capped at
//!   [`MAX_WINDOW`]). Every pattern's first `w` bytes form its *window*.
//! * For each 4-byte block inside any window, `shift[block]` is how far the
//!   block sits from its window's end (the minimum over all windows; blocks
//!   seen nowhere get `w - 3`). Blocks are hashed into the table; a collision
//!   only lowers a shift, never raises it.
//! * Scanning, the filter reads the block ending at the current window end
//!   and jumps by its shift. A shift of 0 means a window may end here; the
//!   filter then looks the hash of the whole `w` bytes up in a sorted table
//!   of `(window hash, pattern)` and compares the bytes of each pattern
//!   listed there with the text (a hash collision costs a comparison, never
//!   a miss).
//!
//! No pattern occurrence is ever skipped (a jump of `s` is taken only if the
//! block read could not sit closer than `s` to any window's end). Building
//! the filter hashes each pattern's window once: no automaton. Patterns
//! shorter than [`MIN_WINDOW`] bytes cannot be filtered; the caller searches
//! them otherwise (`find.rs`).

const BLOCK: usize = 4;

/// Shortest pattern for which the filter is worth it.
pub(crate) const MIN_WINDOW: usize = BLOCK + 1;

/// Longer windows give longer jumps but fill the table faster. 32 and 2
/// slots per entry were the fastest of the settings measured (window 12–32,
/// 2–8 slots; see docs/bench-redaction.md): a small table that stays in
/// cache beats a sparse one.
const MAX_WINDOW: usize = 32;
const SLOTS_PER_ENTRY: usize = 2;

pub(crate) struct SkipFilter {
    window: usize,
    bits: u32,
    shift: Vec<u8>,
    /// `(hash of the window, pattern id)` for every pattern, sorted.
    windows: Vec<(u64, u32)>,
}

impl SkipFilter {
    /// A filter for `(id, pattern)`; `None` if there are none or some
    /// pattern is too short for the filter.
    pub(crate) fn new(patterns: &[(u32, &[u8])]) -> Option<SkipFilter> {
        let shortest = patterns.iter().map(|(_, p)| p.len()).min()?;
        if shortest < MIN_WINDOW {
            return None;
        }
        let window = shortest.min(MAX_WINDOW);
        let entries = patterns.len() * (window - BLOCK + 1);
        let bits = (entries * SLOTS_PER_ENTRY)
            .next_power_of_two()
            .trailing_zeros()
            .clamp(10, 22);
        let full = u8::try_from(window - BLOCK + 1).unwrap_or(u8::MAX);
        let mut shift = vec![full; 1 << bits];
        let mut windows = Vec::with_capacity(patterns.len());
        for &(id, p) in patterns {
            for j in 0..=window - BLOCK {
                let slot = block_slot(&p[j..j + BLOCK], bits);
                let s = u8::try_from(window - BLOCK - j).unwrap_or(u8::MAX);
                shift[slot] = shift[slot].min(s);
            }
            windows.push((window_hash(&p[..window]), id));
        }
        windows.sort_unstable();
        Some(SkipFilter {
            window,
            bits,
            shift,
            windows,
        })
    }

    pub(crate) fn memory_usage(&self) -> usize {
        self.shift.capacity() + self.windows.capacity() * 16
    }

    /// Calls `f(start, end, id)` for every occurrence in `hay` of every
    /// pattern, overlapping ones included, in increasing order of `start`;
    /// `pattern(id)` gives a pattern's bytes.
    pub(crate) fn for_each_match<'p>(
        &self,
        hay: &[u8],
        pattern: impl Fn(u32) -> &'p [u8],
        mut f: impl FnMut(usize, usize, u32),
    ) {
        self.candidates(hay, |start, listed| {
            for &(_, id) in listed {
                let p = pattern(id);
                if hay[start..].starts_with(p) {
                    f(start, start + p.len(), id);
                }
            }
        });
    }

    /// Calls `f(start, listed)` with every position of `hay` where a
    /// pattern may start, in increasing order, and the `(hash, id)` entries
    /// whose window hash is that of the bytes there. Positions closer than
    /// the window to the end are not reported: no pattern can be complete
    /// there.
    pub(crate) fn candidates(&self, hay: &[u8], mut f: impl FnMut(usize, &[(u64, u32)])) {
        let w = self.window;
        let mut end = w; // exclusive end of the current window
        while end <= hay.len() {
            let block = &hay[end - BLOCK..end];
            let s = self.shift[block_slot(block, self.bits)];
            if s != 0 {
                end += usize::from(s);
                continue;
            }
            let start = end - w;
            let hash = window_hash(&hay[start..end]);
            let from = self.windows.partition_point(|&(h, _)| h < hash);
            // A few entries share a hash (the forms of one secret that
            // begin alike); most candidates have none.
            let listed = self.windows[from..]
                .iter()
                .take_while(|&&(h, _)| h == hash)
                .count();
            if listed > 0 {
                f(start, &self.windows[from..from + listed]);
            }
            end += 1;
        }
    }
}

fn block_slot(block: &[u8], bits: u32) -> usize {
    let v = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
    (v.wrapping_mul(0x9E37_79B1) >> (32 - bits)) as usize
}

fn window_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    let mut chunks = bytes.chunks_exact(8);
    for c in chunks.by_ref() {
        let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h.rotate_left(23) ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    for &b in chunks.remainder() {
        h = (h.rotate_left(23) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    h ^ (h >> 29)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids<'a>(pats: &[&'a [u8]]) -> Vec<(u32, &'a [u8])> {
        (0u32..).zip(pats.iter().copied()).collect()
    }

    fn starts(f: &SkipFilter, hay: &[u8]) -> Vec<usize> {
        let mut v = Vec::new();
        f.candidates(hay, |s, _| v.push(s));
        v
    }

    #[test]
    fn finds_every_start_and_skips_text() {
        let pats: [&[u8]; 3] = [b"secret-one", b"another-secret", b"cr3t-value-x"];
        let f = SkipFilter::new(&ids(&pats)).expect("filter");
        let hay = b"xx secret-one yy another-secret zz cr3t-value-x secret-on".to_vec();
        assert_eq!(starts(&f, &hay), vec![3, 17, 35]);
        assert!(starts(&f, &[b'q'; 1000]).is_empty());
    }

    #[test]
    fn matches_are_confirmed_byte_for_byte() {
        // Same window (the first 10 bytes), different ends.
        let pats: [&[u8]; 3] = [b"secret-one", b"secret-one-two", b"secret-onX"];
        let f = SkipFilter::new(&ids(&pats)).expect("filter");
        let hay = b"a secret-one-tw secret-one-two secret-onX";
        let mut found = Vec::new();
        f.for_each_match(
            hay,
            |id| pats[id as usize],
            |s, e, id| found.push((s, e, id)),
        );
        assert_eq!(
            found,
            vec![(2, 12, 0), (16, 26, 0), (16, 30, 1), (31, 41, 2)]
        );
    }

    #[test]
    fn short_patterns_disable_the_filter() {
        let pats: [&[u8]; 2] = [b"abcd", b"long-enough"];
        assert!(SkipFilter::new(&ids(&pats)).is_none());
        assert!(SkipFilter::new(&[]).is_none());
    }
}
