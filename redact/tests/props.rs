//! Property tests: no occurrence survives, and the output does not depend
//! on how the stream is split.
//!
//! Encoded forms are produced here by independent encoders (the `base64`
//! crate at a random alignment, `format!` hex, serde_json, hand-written
//! percent and shell escaping) so that a mistake in the redactor's own
//! encoders is caught, not mirrored.

use std::sync::Arc;

use aivault_redact::fuzzing::{check, patterns_for, run_split, wrap};
use aivault_redact::redact_all;
use base64::Engine as _;
use proptest::prelude::*;

/// Secret values: arbitrary bytes, multibyte UTF-8, regex metacharacters,
/// runs of one character.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 1..24),
        "[a-zA-Zé😀ß.*+?()\\[\\]{}|^$\\\\/\"' %:\n\t]{1,20}".prop_map(String::into_bytes),
        (any::<u8>(), 1usize..12).prop_map(|(b, n)| vec![b; n]),
        "[A-Za-z0-9_-]{6,30}".prop_map(String::into_bytes),
    ]
}

/// One to four secrets, the second one possibly a prefix or an extension
/// of the first. Half the sets have only values of 5 bytes or more, so both
/// the skip-filter path and the full-scan path are exercised.
fn values() -> impl Strategy<Value = Vec<Vec<u8>>> {
    (
        prop::collection::vec(value(), 1..4),
        0usize..3,
        value(),
        any::<bool>(),
    )
        .prop_map(|(mut v, relation, extra, long)| {
            let first = v[0].clone();
            match relation {
                0 if first.len() > 1 => v.push(first[..first.len() / 2 + 1].to_vec()),
                1 => v.push([first.as_slice(), &extra].concat()),
                _ => {}
            }
            if long {
                for value in &mut v {
                    while value.len() < 5 {
                        value.extend_from_within(..);
                    }
                }
            }
            v.sort();
            v.dedup();
            v
        })
}

fn text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..24),
        "[ -~\r\n\u{1b}]{0,24}".prop_map(String::into_bytes),
    ]
}

fn hex(v: &[u8], upper: bool) -> String {
    v.iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

fn percent_all(v: &[u8]) -> String {
    v.iter().map(|b| format!("%{b:02X}")).collect()
}

fn percent_min(v: &[u8]) -> String {
    v.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

fn shell(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in v {
        if b" \t!\"#$&'()*,;<>?[\\]^`{|}~".contains(&b) {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

/// Encodes `value` in form `which`, with `context` around it where the
/// encoding mixes neighbours in (base64). Returns the embedded bytes and the
/// part of them that must not survive.
fn embed(value: &[u8], which: u8, context: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let b64 = |engine: &base64::engine::GeneralPurpose, k: usize| {
        let data = [&context[..k], value, context].concat();
        let encoded = engine.encode(&data).into_bytes();
        let first = (8 * k).div_ceil(6);
        let last = 8 * (k + value.len()) / 6;
        (encoded.clone(), encoded[first..last].to_vec())
    };
    let whole = |e: Vec<u8>| (e.clone(), e);
    match which % 10 {
        0 => b64(
            &base64::engine::general_purpose::STANDARD,
            usize::from(which / 10) % 3,
        ),
        1 => b64(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            usize::from(which / 10) % 3,
        ),
        2 => whole(hex(value, which > 100).into_bytes()),
        3 => whole(percent_all(value).into_bytes()),
        4 => whole(percent_min(value).into_bytes()),
        5 => match std::str::from_utf8(value) {
            Ok(s) => {
                let json = serde_json::to_string(s).expect("json");
                whole(json.as_bytes()[1..json.len() - 1].to_vec())
            }
            Err(_) => whole(value.to_vec()),
        },
        6 => whole(shell(value)),
        // PEM/MIME-wrapped base64 (shared helper: filler, width, CRLF
        // chosen by `which`); the core check is left to `check`.
        8 => (wrap(value, which.wrapping_mul(7)), Vec::new()),
        7 => {
            let encoded = base64::engine::general_purpose::STANDARD
                .encode(value)
                .into_bytes();
            whole(encoded)
        }
        _ => whole(value.to_vec()),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Raw and redactor-generated forms, every split point of a short input.
    #[test]
    fn every_split_point_matches_reference(
        values in values(),
        parts in prop::collection::vec((text(), 0usize..4, any::<u8>()), 1..5),
    ) {
        let mut input = Vec::new();
        for (t, which_secret, form) in &parts {
            input.extend_from_slice(t);
            let v = &values[which_secret % values.len()];
            input.extend_from_slice(&embed(v, *form, b"user:").0);
        }
        check(&values, &input, &[]).map_err(TestCaseError::fail)?;
        let patterns = Arc::new(patterns_for(&values));
        let whole = redact_all(&patterns, &input);
        for cut in 0..=input.len() {
            prop_assert_eq!(&run_split(&patterns, &input, &[cut]), &whole, "cut at {}", cut);
        }
    }

    /// Independently encoded secrets (at least MIN_ENCODED_LEN long) do not
    /// survive, fed in random pieces.
    #[test]
    fn independently_encoded_secrets_do_not_survive(
        value in "[a-zA-Z0-9é😀.*+?()\\[\\]{}|^$\\\\/\"' %:\n]{6,24}".prop_map(String::into_bytes),
        which in any::<u8>(),
        before in "[ -~]{0,12}",
        context in "[ -~]{3,6}",
        splits in prop::collection::vec(0usize..40, 0..8),
    ) {
        let (embedded, core) = embed(&value, which, context.as_bytes());
        let input = [before.as_bytes(), b" ", &embedded, b" end"].concat();
        let values = vec![value];
        check(&values, &input, &splits).map_err(TestCaseError::fail)?;
        let out = redact_all(&patterns_for(&values), &input);
        prop_assert!(!contains(&out, &core), "encoded form survived: {:?}", String::from_utf8_lossy(&out));
        prop_assert!(contains(&out, b"[REDACTED:S0"), "no label: {:?}", String::from_utf8_lossy(&out));
    }

    /// Long inputs with random splits.
    #[test]
    fn random_splits_of_long_inputs(
        values in values(),
        parts in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..300), 0usize..4, any::<u8>()), 1..12),
        splits in prop::collection::vec(0usize..200, 0..40),
    ) {
        let mut input = Vec::new();
        for (t, which_secret, form) in &parts {
            input.extend_from_slice(t);
            let v = &values[which_secret % values.len()];
            input.extend_from_slice(&embed(v, *form, b"ab:").0);
        }
        check(&values, &input, &splits).map_err(TestCaseError::fail)?;
    }

    /// Compiled only for the forms present in some texts, the patterns
    /// redact each of those texts exactly as the whole set does.
    #[test]
    fn the_forms_occurring_in_texts_redact_them_as_all_forms_do(
        values in values(),
        texts in prop::collection::vec(
            prop::collection::vec((text(), 0usize..4, any::<u8>(), any::<bool>()), 0..4),
            1..4,
        ),
    ) {
        let texts: Vec<Vec<u8>> = texts
            .iter()
            .map(|parts| {
                let mut t = Vec::new();
                for (plain, which_secret, form, with) in parts {
                    t.extend_from_slice(plain);
                    if *with {
                        let v = &values[which_secret % values.len()];
                        t.extend_from_slice(&embed(v, *form, b"user:").0);
                    }
                }
                t
            })
            .collect();
        let secrets: Vec<aivault_redact::Secret> = values
            .iter()
            .enumerate()
            .map(|(i, v)| aivault_redact::Secret::new(format!("S{i}"), v.clone()))
            .collect();
        let slices: Vec<&[u8]> = texts.iter().map(Vec::as_slice).collect();
        let some = aivault_redact::Patterns::occurring_in(&secrets, &slices).expect("patterns");
        let all = patterns_for(&values);
        prop_assert!(some.len() <= all.len());
        for t in &texts {
            prop_assert_eq!(redact_all(&some, t), redact_all(&all, t));
        }
    }
}
