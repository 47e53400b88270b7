//! Line-wrapped base64: PEM (64 columns) and MIME (76 columns).
//!
//! A base64 form may be cut by a line break anywhere. Instead of multiplying
//! the patterns, the redactor searches a *normalised view* in which some
//! line breaks are transparent:
//!
//! * A line break (`\n` or `\r\n`) is transparent when the line it ends is
//!   exactly [`WIDTHS`] (64 or 76) bytes long and all base64 characters.
//!   That is what PEM and MIME encoders write; ordinary text lines almost
//!   never qualify, so the view is built only around such breaks.
//! * Around each transparent break (a window of [`Wrapped::reach`] bytes each
//!   side) the bytes are copied without the breaks and searched for the
//!   base64 forms only (a finder of their own). A match that spans at least
//!   one break is mapped back to the original bytes (breaks included) and
//!   redacted like any other; matches spanning none are left to the main
//!   finder.
//!
//! Finding the breaks costs a probe every 64 bytes (any run of 64 or more
//! base64 characters contains a multiple of 64), usually settled by a few
//! samples 8 bytes apart.

use crate::find::Finder;

/// Line widths of wrapped base64.
pub const WIDTHS: [usize; 2] = [64, 76];

const WIDEST: usize = 76;

/// Characters of either base64 alphabet, padding included.
const BASE64: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_' | b'=');
        i += 1;
    }
    t
};

fn is_base64(b: u8) -> bool {
    BASE64[usize::from(b)]
}

/// The line the next byte belongs to: how long it is so far and whether it
/// is all base64. Lengths saturate past [`WIDEST`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct LineState {
    len: usize,
    base64: bool,
}

impl Default for LineState {
    fn default() -> LineState {
        LineState {
            len: 0,
            base64: true,
        }
    }
}

impl LineState {
    /// State after `bytes`; looks at no more than the last line's first
    /// `WIDEST + 2` bytes.
    pub(crate) fn after(self, bytes: &[u8]) -> LineState {
        let look = bytes.len().saturating_sub(WIDEST + 2);
        match bytes[look..].iter().rposition(|&b| b == b'\n') {
            Some(nl) => LineState::default().extend(&bytes[look + nl + 1..]),
            None if look > 0 => LineState {
                len: WIDEST + 2,
                base64: false,
            },
            None => self.extend(bytes),
        }
    }

    fn extend(self, bytes: &[u8]) -> LineState {
        LineState {
            len: (self.len + bytes.len()).min(WIDEST + 2),
            base64: self.base64 && bytes.iter().all(|&b| is_base64(b)),
        }
    }
}

/// Transparent breaks in `buf` as `(position, length)`, in order. A `\r`
/// that ends `buf` right after a qualifying line is included (it may be the
/// start of `\r\n`); only the holdback can care about it.
pub(crate) fn breaks(buf: &[u8], line: LineState, out: &mut Vec<(usize, usize)>) {
    out.clear();
    // The first line may have begun before `buf`.
    if line.len > 0 && line.len <= WIDEST {
        let run = buf
            .iter()
            .take(WIDEST + 1)
            .take_while(|&&b| is_base64(b))
            .count();
        if line.base64 && WIDTHS.contains(&(line.len + run)) {
            push_break(buf, run, out);
        }
    }
    let mut g = 0;
    while g < buf.len() {
        if !is_base64(buf[g]) || !long_run_possible(buf, g) {
            g += WIDTHS[0];
            continue;
        }
        // The line through `g` ends at the next `\n` or `\r`; it must start
        // exactly one width before, right after a line break, and be base64
        // all along. The break test rejects ordinary lines at once.
        let end = next_line_end(buf, g + 1, g + WIDEST + 1);
        if let Some(end) = end {
            for width in WIDTHS {
                let Some(start) = end.checked_sub(width) else {
                    continue;
                };
                let starts_line = if start == 0 {
                    line.len == 0
                } else {
                    buf[start - 1] == b'\n'
                };
                if start <= g && starts_line && buf[start..end].iter().all(|&b| is_base64(b)) {
                    push_break(buf, end, out);
                }
            }
        }
        let end = end.unwrap_or(g + WIDEST + 1);
        // The next multiple of 64 past this run.
        g = (end / WIDTHS[0] + 1) * WIDTHS[0];
    }
}

/// Cheap necessary condition for a run of 64 or more base64 characters
/// through `g` that lies inside `buf`: the run covers 8 consecutive points
/// of `g + 8k`, so those must all be base64.
fn long_run_possible(buf: &[u8], g: usize) -> bool {
    let mut seen = 1;
    let mut k = 8;
    while seen < 8 && k <= g && is_base64(buf[g - k]) {
        seen += 1;
        k += 8;
    }
    k = 8;
    while seen < 8 && g + k < buf.len() && is_base64(buf[g + k]) {
        seen += 1;
        k += 8;
    }
    seen == 8
}

/// First `\n` or `\r` in `buf[from..to]`, eight bytes at a time.
fn next_line_end(buf: &[u8], from: usize, to: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let to = to.min(buf.len());
    let mut at = from;
    while at + 8 <= to {
        let w = u64::from_le_bytes([
            buf[at],
            buf[at + 1],
            buf[at + 2],
            buf[at + 3],
            buf[at + 4],
            buf[at + 5],
            buf[at + 6],
            buf[at + 7],
        ]);
        let hits =
            zero_byte(w ^ (ONES * u64::from(b'\n'))) | zero_byte(w ^ (ONES * u64::from(b'\r')));
        if hits != 0 {
            // Bytes before the first real hit cannot be false positives.
            return (at..at + 8).find(|&i| matches!(buf[i], b'\n' | b'\r'));
        }
        at += 8;
    }
    (at..to).find(|&i| matches!(buf[i], b'\n' | b'\r'))
}

fn push_break(buf: &[u8], at: usize, out: &mut Vec<(usize, usize)>) {
    match buf.get(at..(at + 2).min(buf.len())) {
        Some([b'\n', ..]) => out.push((at, 1)),
        Some([b'\r', b'\n']) => out.push((at, 2)),
        Some([b'\r']) => out.push((at, 1)),
        _ => {}
    }
}

/// The base64 forms, searched in the normalised view.
pub(crate) struct Wrapped {
    /// Finds the base64 forms; ids are those of the main pattern set.
    finder: Finder,
    /// Bytes a match may reach on either side of a break.
    reach: usize,
}

impl Wrapped {
    /// `None` if there are no base64 forms. `forms` are `(main pattern
    /// id, bytes)`.
    pub(crate) fn new(
        forms: &[(u32, &[u8])],
        longest: usize,
    ) -> Option<Result<Wrapped, aho_corasick::BuildError>> {
        if forms.is_empty() {
            return None;
        }
        Some(Finder::new(forms).map(|finder| Wrapped {
            finder,
            reach: max_span(longest),
        }))
    }

    pub(crate) fn memory_usage(&self) -> usize {
        self.finder.memory_usage()
    }

    /// Calls `f(start, end, pattern)` for each match that spans a break;
    /// `pattern(id)` gives the bytes of a pattern.
    pub(crate) fn for_each_match<'p>(
        &self,
        buf: &[u8],
        breaks: &[(usize, usize)],
        norm: &mut Vec<u8>,
        map: &mut Vec<usize>,
        pattern: impl Fn(u32) -> &'p [u8] + Copy,
        mut f: impl FnMut(usize, usize, usize),
    ) {
        let mut i = 0;
        while i < breaks.len() {
            // A cluster of breaks whose windows overlap.
            let from = breaks[i].0.saturating_sub(self.reach);
            let mut to = (breaks[i].0 + breaks[i].1 + self.reach).min(buf.len());
            let first = i;
            while i + 1 < breaks.len() && breaks[i + 1].0 < to {
                i += 1;
                to = (breaks[i].0 + breaks[i].1 + self.reach).min(buf.len());
            }
            i += 1;
            normalise(buf, from..to, &breaks[first..i], norm, map);
            self.finder
                .for_each_match(norm.as_slice(), pattern, |start, end, id| {
                    let (s, e) = (map[start], map[end - 1] + 1);
                    if e - s > end - start {
                        f(s, e, id as usize);
                    }
                });
        }
    }
}

/// Most bytes a match of `longest` characters can cover, breaks included.
pub(crate) fn max_span(longest: usize) -> usize {
    longest + 2 * longest.div_ceil(WIDTHS[0])
}

/// Copies `range` of `buf` without the breaks into `norm`; `map[i]` is the
/// position in `buf` of `norm[i]`.
pub(crate) fn normalise(
    buf: &[u8],
    range: std::ops::Range<usize>,
    breaks: &[(usize, usize)],
    norm: &mut Vec<u8>,
    map: &mut Vec<usize>,
) {
    norm.clear();
    map.clear();
    let mut at = range.start;
    for &(pos, len) in breaks.iter().filter(|(pos, _)| range.contains(pos)) {
        norm.extend_from_slice(&buf[at..pos]);
        map.extend(at..pos);
        at = pos + len;
    }
    let end = range.end.max(at);
    norm.extend_from_slice(&buf[at.min(end)..end]);
    map.extend(at.min(end)..end);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(buf: &[u8], line: LineState) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        breaks(buf, line, &mut v);
        v
    }

    #[test]
    fn finds_pem_and_mime_breaks_only() {
        let l64 = [b'A'; 64];
        let l76 = [b'b'; 76];
        let buf = [
            b"x\n".as_slice(),
            &l64,
            b"\n",
            &l76,
            b"\r\n",
            &l64,
            b"!\n",
            &[b'c'; 63],
            b"\n",
        ]
        .concat();
        assert_eq!(found(&buf, LineState::default()), vec![(66, 1), (143, 2)]);
    }

    #[test]
    fn first_line_may_start_before_the_buffer() {
        let state = LineState::default().after(&[b'Q'; 40]);
        let buf = [[b'Q'; 24].as_slice(), b"\nrest"].concat();
        assert_eq!(found(&buf, state), vec![(24, 1)]);
        let state = LineState::default().after(b"no base64 here, ");
        assert!(found(&buf, state).is_empty());
    }

    #[test]
    fn trailing_cr_is_a_potential_break() {
        let buf = [[b'Z'; 64].as_slice(), b"\r"].concat();
        assert_eq!(found(&buf, LineState::default()), vec![(64, 1)]);
    }
}
