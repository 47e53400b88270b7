//! Checks shared by the fuzz target (`redact/fuzz`), the property tests and
//! unit tests. Not part of the stable API.
//!
//! [`check`] compares the streaming redactor with a brute-force reference
//! that knows nothing about automata or holdback: find every occurrence of
//! every pattern by trying every position, merge overlapping ones, label
//! each region after its leftmost (then longest) occurrence.

#![doc(hidden)]

use std::sync::Arc;

use crate::{encode, redact_all, Patterns, Redactor, Secret};

/// A decoded fuzz case.
#[derive(Debug, Default)]
pub struct Case {
    /// Secret values; they are named `S0`, `S1`, …
    pub values: Vec<Vec<u8>>,
    /// The stream.
    pub input: Vec<u8>,
    /// Lengths of the writes the stream is cut into (the rest is one write).
    pub splits: Vec<usize>,
}

/// Decodes arbitrary bytes into a case that is likely to contain secrets.
///
/// Layout: `n` (secrets, 1–4), then per secret a length byte (1–32) and the
/// value; then a split count and that many split lengths; then the stream,
/// where `0xFF i e` inserts form `e` of secret `i` instead of itself.
pub fn decode(data: &[u8]) -> Case {
    let mut it = data.iter().copied();
    let mut case = Case::default();
    let n = usize::from(it.next().unwrap_or(0) % 4) + 1;
    for _ in 0..n {
        let len = usize::from(it.next().unwrap_or(0) % 32) + 1;
        let value: Vec<u8> = it.by_ref().take(len).collect();
        if !value.is_empty() {
            case.values.push(value);
        }
    }
    if case.values.is_empty() {
        case.values.push(b"s".to_vec());
    }
    let splits = usize::from(it.next().unwrap_or(0) % 16);
    for _ in 0..splits {
        case.splits.push(usize::from(it.next().unwrap_or(1)));
    }
    while let Some(b) = it.next() {
        if b == 0xFF {
            let i = usize::from(it.next().unwrap_or(0)) % case.values.len();
            let forms = encode::forms(&case.values[i]);
            let form = &forms[usize::from(it.next().unwrap_or(0)) % forms.len()];
            case.input.extend_from_slice(&form.1);
        } else {
            case.input.push(b);
        }
    }
    case
}

/// Builds the pattern set for `values`, named `S0`, `S1`, …
pub fn patterns_for(values: &[Vec<u8>]) -> Patterns {
    let secrets: Vec<Secret> =
        values.iter().enumerate().map(|(i, v)| Secret::new(format!("S{i}"), v.clone())).collect();
    match Patterns::new(&secrets) {
        Ok(p) => p,
        Err(e) => panic!("fuzz secrets rejected: {e}"),
    }
}

/// Runs the stream cut at `splits` (write lengths, with idle-free writes)
/// and returns the concatenated output.
pub fn run_split(patterns: &Arc<Patterns>, input: &[u8], splits: &[usize]) -> Vec<u8> {
    let mut redactor = Redactor::new(Arc::clone(patterns));
    let mut out = Vec::new();
    let mut rest = input;
    for &len in splits {
        let (now, later) = rest.split_at(len.min(rest.len()));
        redactor.write(now, &mut out);
        assert!(redactor.held() < patterns.longest().max(1), "holdback exceeds the longest pattern");
        rest = later;
    }
    redactor.write(rest, &mut out);
    redactor.finish(&mut out);
    out
}

/// The two properties: the split stream equals the whole-buffer result,
/// and that result equals the brute-force reference, in which no pattern
/// occurs outside a label.
pub fn check(values: &[Vec<u8>], input: &[u8], splits: &[usize]) -> Result<(), String> {
    let patterns = Arc::new(patterns_for(values));
    let whole = redact_all(&patterns, input);
    let split = run_split(&patterns, input, splits);
    if split != whole {
        return Err(format!("split-variant output: splits {splits:?}\nwhole {whole:?}\nsplit {split:?}"));
    }
    let pieces = reference(&patterns, input);
    let mut expected = Vec::new();
    for piece in &pieces {
        match piece {
            Piece::Raw(range) => expected.extend_from_slice(&input[range.clone()]),
            Piece::Label(id) => expected.extend_from_slice(label(&patterns, *id)),
        }
    }
    if whole != expected {
        return Err(format!("differs from reference\nexpected {expected:?}\ngot      {whole:?}"));
    }
    for piece in &pieces {
        if let Piece::Raw(range) = piece {
            let raw = &input[range.clone()];
            if let Some(id) = (0..patterns.len()).find(|&id| contains(raw, patterns.pattern(id))) {
                return Err(format!("pattern {id} survives in {raw:?}"));
            }
        }
    }
    Ok(())
}

/// A piece of the reference output.
#[derive(Debug)]
enum Piece {
    Raw(std::ops::Range<usize>),
    Label(usize),
}

fn label(patterns: &Patterns, id: usize) -> &[u8] {
    &patterns.labels[patterns.info[id].label as usize]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Brute force: every occurrence, merged when overlapping.
fn reference(patterns: &Patterns, input: &[u8]) -> Vec<Piece> {
    // (start, end, pattern), sorted by start then longest first.
    let mut hits = Vec::new();
    for start in 0..input.len() {
        for id in 0..patterns.len() {
            if input[start..].starts_with(patterns.pattern(id)) {
                hits.push((start, start + patterns.pattern(id).len(), id));
            }
        }
    }
    hits.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut pieces = Vec::new();
    let mut pos = 0;
    let mut region_end = 0;
    for (start, end, id) in hits {
        if start < region_end {
            region_end = region_end.max(end);
            continue;
        }
        if start > pos.max(region_end) {
            pieces.push(Piece::Raw(pos.max(region_end)..start));
        }
        pieces.push(Piece::Label(id));
        region_end = end;
        pos = end;
    }
    let tail = pos.max(region_end);
    if tail < input.len() {
        pieces.push(Piece::Raw(tail..input.len()));
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_catches_nothing_on_plain_cases() {
        let values = vec![b"abc".to_vec(), b"abcdef".to_vec(), b"cdefgh".to_vec()];
        let input = b"xxabcdefghyy abc abcde cdefgh".to_vec();
        for cut in 0..=input.len() {
            check(&values, &input, &[cut]).expect("check");
        }
    }

    #[test]
    fn decode_inserts_forms() {
        let case = decode(&[0, 6, b's', b'e', b'c', b'r', b'e', b't', b'!', 0, b'a', 0xFF, 0, 0, b'b']);
        assert_eq!(case.values, vec![b"secret!".to_vec()]);
        assert_eq!(case.input, b"asecret!b".to_vec());
        check(&case.values, &case.input, &case.splits).expect("check");
    }

    #[test]
    fn reference_merges_overlaps() {
        let p = patterns_for(&[b"abcd".to_vec(), b"cdef".to_vec()]);
        let out = redact_all(&p, b"-abcdef-");
        assert_eq!(out, b"-[REDACTED:S0]-".to_vec());
    }
}
