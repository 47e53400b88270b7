//! Checks shared by the fuzz target (`redact/fuzz`), the property tests and
//! unit tests. Not part of the stable API.
//!
//! [`check`] compares the streaming redactor with a brute-force reference
//! that knows nothing about automata or holdback: find every occurrence of
//! every pattern by trying every position, merge overlapping ones, label
//! each region after its leftmost (then longest) occurrence.

#![doc(hidden)]

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::{encode, redact_all, Encoding, Patterns, Redactor, Secret};

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
/// where `0xFF i e` inserts form `e` of secret `i` instead of itself and
/// `0xFE i w` inserts secret `i` in line-wrapped base64 (see [`wrap`]).
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
        } else if b == 0xFE {
            let i = usize::from(it.next().unwrap_or(0)) % case.values.len();
            let how = it.next().unwrap_or(0);
            case.input.extend_from_slice(&wrap(&case.values[i], how));
        } else {
            case.input.push(b);
        }
    }
    case
}

/// `value` between filler bytes, base64-encoded and wrapped like PEM or
/// MIME, on lines of its own. `how` picks the filler length (0–47, so all
/// alignments and break positions occur), the width (64/76), `\r\n` and
/// the URL-safe alphabet.
pub fn wrap(value: &[u8], how: u8) -> Vec<u8> {
    use base64::Engine as _;
    let filler = usize::from(how % 48);
    let width = if how & 0x40 == 0 { 64 } else { 76 };
    let newline: &[u8] = if how & 0x80 == 0 { b"\n" } else { b"\r\n" };
    let data = [vec![b'F'; filler].as_slice(), value, &[b'G'; 40]].concat();
    let text = if how.is_multiple_of(3) {
        base64::engine::general_purpose::URL_SAFE.encode(&data)
    } else {
        base64::engine::general_purpose::STANDARD.encode(&data)
    };
    let mut out = newline.to_vec();
    for line in text.as_bytes().chunks(width) {
        out.extend_from_slice(line);
        out.extend_from_slice(newline);
    }
    out
}

/// Builds the pattern set for `values`, named `S0`, `S1`, …
pub fn patterns_for(values: &[Vec<u8>]) -> Patterns {
    let secrets: Vec<Secret> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Secret::new(format!("S{i}"), v.clone()))
        .collect();
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
        assert!(
            redactor.held() <= patterns.max_held(),
            "holdback exceeds the bound"
        );
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
        return Err(format!(
            "split-variant output: splits {splits:?}\nwhole {whole:?}\nsplit {split:?}"
        ));
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
        return Err(format!(
            "differs from reference\nexpected {expected:?}\ngot      {whole:?}"
        ));
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

/// Every pattern with its label, for baselines (the bench's naive
/// replace-each-pattern loop). The pattern bytes are wiped on drop.
pub fn pattern_list(patterns: &Patterns) -> Vec<(Zeroizing<Vec<u8>>, Vec<u8>)> {
    (0..patterns.len())
        .map(|id| {
            (
                Zeroizing::new(patterns.pattern(id).to_vec()),
                label(patterns, id).to_vec(),
            )
        })
        .collect()
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
    // Base64 forms across PEM/MIME line breaks: search the whole input with
    // the breaks removed, keep what spans one.
    let mut norm = Vec::new();
    let mut map = Vec::new();
    let mut line_start = 0;
    for (i, &b) in input.iter().enumerate() {
        norm.push(b);
        map.push(i);
        if b != b'\n' {
            continue;
        }
        let mut line = &input[line_start..i];
        let mut brk = 1;
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
            brk = 2;
        }
        let b64 = |c: &u8| c.is_ascii_alphanumeric() || b"+/-_=".contains(c);
        if (line.len() == 64 || line.len() == 76) && line.iter().all(b64) {
            norm.truncate(norm.len() - brk);
            map.truncate(map.len() - brk);
        }
        line_start = i + 1;
    }
    for start in 0..norm.len() {
        for id in 0..patterns.len() {
            let p = patterns.pattern(id);
            let base64 = matches!(
                patterns.info[id].encoding,
                Encoding::Base64 | Encoding::Base64Url
            );
            if base64 && norm[start..].starts_with(p) {
                let (s, e) = (map[start], map[start + p.len() - 1] + 1);
                if e - s > p.len() {
                    hits.push((s, e, id));
                }
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
    fn check_passes_with_the_skip_filter() {
        let values = vec![
            b"secret-one".to_vec(),
            b"secret-one-two".to_vec(),
            b"one-two-three".to_vec(),
        ];
        let input = b"a secret-one-two-three b secret-on".to_vec();
        for cut in 0..=input.len() {
            check(&values, &input, &[cut]).expect("check");
        }
    }

    #[test]
    fn wrapped_base64_is_redacted_across_breaks() {
        let values = vec![b"wrapped-secret-value-0123456789".to_vec()];
        for how in [0u8, 5, 17, 40, 0x40 | 9, 0x80 | 33, 0xC0 | 46] {
            let input = [
                b"-----BEGIN X-----".as_slice(),
                &wrap(&values[0], how),
                b"-----END X-----\n",
            ]
            .concat();
            check(&values, &input, &[40, 1, 70]).expect("check");
            let p = patterns_for(&values);
            let out = redact_all(&p, &input);
            assert!(
                String::from_utf8_lossy(&out).contains("[REDACTED:S0:base64"),
                "how {how}"
            );
        }
    }

    #[test]
    fn decode_inserts_forms() {
        let case = decode(&[
            0, 6, b's', b'e', b'c', b'r', b'e', b't', b'!', 0, b'a', 0xFF, 0, 0, b'b',
        ]);
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
