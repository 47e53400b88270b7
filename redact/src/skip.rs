//! A Wu–Manber-style skip filter in front of the automaton.
//!
//! Stepping an Aho–Corasick automaton costs a few nanoseconds per byte
//! whatever the prefilter, because log text is full of bytes that begin some
//! base64 or hex form. Most of the text contains no secret at all, so the
//! filter looks only at every few bytes:
//!
//! * Let `w` be the length of the shortest pattern (capped at
//!   [`MAX_WINDOW`]). Every pattern's first `w` bytes form its *window*.
//! * For each 4-byte block inside any window, `shift[block]` is how far the
//!   block sits from its window's end (the minimum over all windows; blocks
//!   seen nowhere get `w - 3`). Blocks are hashed into the table; a collision
//!   only lowers a shift, never raises it.
//! * Scanning, the filter reads the block ending at the current window end
//!   and jumps by its shift. A shift of 0 means a window may end here; the
//!   filter then checks the whole `w` bytes against the set of window hashes
//!   and reports a candidate start only if they are known.
//!
//! No pattern occurrence is ever skipped (a jump of `s` is taken only if the
//! block read could not sit closer than `s` to any window's end). Only
//! candidates are then handed to the automaton. The filter is disabled when
//! the shortest pattern is under [`MIN_WINDOW`] bytes; the automaton then
//! scans every byte.

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
    /// Sorted hashes of every pattern's window.
    windows: Vec<u64>,
}

impl SkipFilter {
    /// `None` if some pattern is too short for the filter to help.
    pub(crate) fn new(patterns: &[&[u8]]) -> Option<SkipFilter> {
        let shortest = patterns.iter().map(|p| p.len()).min()?;
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
        for p in patterns {
            for j in 0..=window - BLOCK {
                let slot = block_slot(&p[j..j + BLOCK], bits);
                let s = u8::try_from(window - BLOCK - j).unwrap_or(u8::MAX);
                shift[slot] = shift[slot].min(s);
            }
            windows.push(window_hash(&p[..window]));
        }
        windows.sort_unstable();
        windows.dedup();
        Some(SkipFilter {
            window,
            bits,
            shift,
            windows,
        })
    }

    pub(crate) fn memory_usage(&self) -> usize {
        self.shift.capacity() + self.windows.capacity() * 8
    }

    /// Calls `f` with every position of `hay` where a pattern may start, in
    /// increasing order. Positions closer than the window to the end are not
    /// reported: no pattern can be complete there.
    pub(crate) fn candidates(&self, hay: &[u8], mut f: impl FnMut(usize)) {
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
            if self
                .windows
                .binary_search(&window_hash(&hay[start..end]))
                .is_ok()
            {
                f(start);
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

    fn starts(f: &SkipFilter, hay: &[u8]) -> Vec<usize> {
        let mut v = Vec::new();
        f.candidates(hay, |s| v.push(s));
        v
    }

    #[test]
    fn finds_every_start_and_skips_text() {
        let pats: [&[u8]; 3] = [b"secret-one", b"another-secret", b"cr3t-value-x"];
        let f = SkipFilter::new(&pats).expect("filter");
        let hay = b"xx secret-one yy another-secret zz cr3t-value-x secret-on".to_vec();
        assert_eq!(starts(&f, &hay), vec![3, 17, 35]);
        assert!(starts(&f, &[b'q'; 1000]).is_empty());
    }

    #[test]
    fn short_patterns_disable_the_filter() {
        let pats: [&[u8]; 2] = [b"abcd", b"long-enough"];
        assert!(SkipFilter::new(&pats).is_none());
        assert!(SkipFilter::new(&[]).is_none());
    }
}
