//! The encoded forms of a secret that the redactor searches for.
//!
//! Every function here turns one secret value into the byte strings that a
//! command might print when it echoes, logs or serialises that value. The
//! forms are computed once, when [`Patterns`](crate::Patterns) is built; the
//! streaming side never encodes anything.
//!
//! All intermediate buffers are [`Zeroizing`], because every one of them is
//! secret material.

use base64::alphabet::Alphabet;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::MIN_ENCODED_LEN;

/// The family an encoded form belongs to; it names the suffix of the
/// replacement label (`[REDACTED:NAME:base64]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Encoding {
    /// The value's own bytes. The label carries no suffix.
    Raw,
    /// Standard base64 (`+`, `/`), padded or not, at any of the three
    /// alignments.
    Base64,
    /// URL-safe base64 (`-`, `_`), padded or not, at any alignment.
    Base64Url,
    /// Hexadecimal, lower or upper case.
    Hex,
    /// Percent-encoding, fully or minimally encoded, either hex case.
    Percent,
    /// JSON string escaping as serde_json, Python or Go would write it.
    Json,
    /// Shell quoting: backslash escapes, or escapes inside `'…'` / `"…"`.
    Shell,
}

impl Encoding {
    /// The label suffix, or `None` for raw bytes.
    pub fn suffix(self) -> Option<&'static str> {
        match self {
            Encoding::Raw => None,
            Encoding::Base64 => Some("base64"),
            Encoding::Base64Url => Some("base64url"),
            Encoding::Hex => Some("hex"),
            Encoding::Percent => Some("percent"),
            Encoding::Json => Some("json"),
            Encoding::Shell => Some("shell"),
        }
    }
}

/// One encoded form of a secret.
pub(crate) type Form = (Encoding, Zeroizing<Vec<u8>>);

/// Every form of `value` the redactor looks for, raw bytes first. None is
/// shorter than `value` (`Patterns::occurring_in` relies on it).
///
/// Values shorter than [`MIN_ENCODED_LEN`] yield only their raw bytes: their
/// encodings are short enough to occur by chance in ordinary output. Forms
/// may repeat (a value made only of unreserved characters is its own minimal
/// percent-encoding); the caller removes duplicates.
pub(crate) fn forms(value: &[u8]) -> Vec<Form> {
    let mut out: Vec<Form> = vec![(Encoding::Raw, Zeroizing::new(value.to_vec()))];
    if value.len() < MIN_ENCODED_LEN {
        return out;
    }
    base64_forms(
        value,
        &base64::alphabet::STANDARD,
        Encoding::Base64,
        &mut out,
    );
    base64_forms(
        value,
        &base64::alphabet::URL_SAFE,
        Encoding::Base64Url,
        &mut out,
    );
    for upper in [false, true] {
        out.push((Encoding::Hex, hex(value, upper)));
        out.push((Encoding::Percent, percent(value, upper, true)));
        out.push((Encoding::Percent, percent(value, upper, false)));
    }
    for json in json_forms(value) {
        out.push((Encoding::Json, json));
    }
    out.push((Encoding::Shell, shell_backslash(value)));
    out.push((Encoding::Shell, shell_single_quoted(value)));
    out.push((Encoding::Shell, shell_double_quoted(value)));
    out.retain(|(enc, bytes)| *enc == Encoding::Raw || bytes.as_slice() != value);
    out
}

/// Base64 forms at the three alignments.
///
/// For alignment `k` the value is encoded after `k` filler bytes. Only the
/// characters whose six bits all come from the value are kept (the *core*),
/// so the form matches whatever precedes the value (`user:` in HTTP Basic
/// auth) and whatever follows it. When the value ends the encoded data, the
/// encoder also writes one character mixing the value's last bits with zero
/// bits, then padding; those two longer forms are added as well so that not
/// even that character survives.
fn base64_forms(value: &[u8], alphabet: &Alphabet, enc: Encoding, out: &mut Vec<Form>) {
    let engine = GeneralPurpose::new(
        alphabet,
        GeneralPurposeConfig::new().with_encode_padding(false),
    );
    for k in 0..3usize {
        let mut input = Zeroizing::new(vec![0u8; k]);
        input.extend_from_slice(value);
        let encoded = Zeroizing::new(engine.encode(input.as_slice()).into_bytes());
        let first = (8 * k).div_ceil(6);
        let last = 8 * (k + value.len()) / 6;
        out.push((enc, Zeroizing::new(encoded[first..last].to_vec())));
        if last < encoded.len() {
            let mut tail = Zeroizing::new(encoded[first..].to_vec());
            out.push((enc, tail.clone()));
            let pad = (3 - (k + value.len()) % 3) % 3;
            tail.extend(std::iter::repeat_n(b'=', pad));
            out.push((enc, tail));
        }
    }
}

const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_digits(upper: bool) -> &'static [u8; 16] {
    if upper {
        HEX_UPPER
    } else {
        HEX_LOWER
    }
}

fn hex(value: &[u8], upper: bool) -> Zeroizing<Vec<u8>> {
    let digits = hex_digits(upper);
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 2));
    for &b in value {
        out.push(digits[usize::from(b >> 4)]);
        out.push(digits[usize::from(b & 15)]);
    }
    out
}

/// RFC 3986 unreserved characters, which minimal percent-encoding leaves as is.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn percent(value: &[u8], upper: bool, every_byte: bool) -> Zeroizing<Vec<u8>> {
    let digits = hex_digits(upper);
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() * 3));
    for &b in value {
        if every_byte || !unreserved(b) {
            out.extend_from_slice(&[
                b'%',
                digits[usize::from(b >> 4)],
                digits[usize::from(b & 15)],
            ]);
        } else {
            out.push(b);
        }
    }
    out
}

/// JSON string bodies (without the quotes).
///
/// The base form is serde_json's: `\"`, `\\`, the short escapes `\b \f \n
/// \r \t`, `\u00XX` (lower-case hex) for other control characters, and all
/// other bytes as they are. Variants add `\/` for `/` (PHP, some Java
/// encoders), `\uXXXX` for every non-ASCII character (Python's default
/// `ensure_ascii`) and `\u003c \u003e \u0026` for `< > &` (Go's default
/// HTML-safe encoding).
fn json_forms(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let text = std::str::from_utf8(value).ok();
    let mut out = Vec::new();
    for slash in [false, true] {
        out.push(json(value, slash, false));
        out.push(json(value, slash, true));
        if let Some(text) = text.filter(|t| !t.is_ascii()) {
            out.push(json_ascii(text, slash));
        }
    }
    out
}

fn json(value: &[u8], slash: bool, html: bool) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() + 8));
    for &b in value {
        push_json_byte(&mut out, b, slash, html);
    }
    out
}

fn push_json_byte(out: &mut Vec<u8>, b: u8, slash: bool, html: bool) {
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'/' if slash => out.extend_from_slice(b"\\/"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        b'<' | b'>' | b'&' if html => push_u_escape(out, u16::from(b)),
        0..=0x1f => push_u_escape(out, u16::from(b)),
        _ => out.push(b),
    }
}

fn push_u_escape(out: &mut Vec<u8>, unit: u16) {
    out.extend_from_slice(b"\\u");
    for shift in [12u16, 8, 4, 0] {
        out.push(HEX_LOWER[usize::from((unit >> shift) & 15)]);
    }
}

fn json_ascii(text: &str, slash: bool) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() * 2));
    let mut units = [0u16; 2];
    for c in text.chars() {
        if c.is_ascii() {
            push_json_byte(&mut out, c as u8, slash, false);
        } else {
            for &unit in c.encode_utf16(&mut units).iter() {
                push_u_escape(&mut out, unit);
            }
        }
    }
    units.fill(0);
    out
}

/// Bytes that `sh` treats specially outside quotes.
fn shell_meta(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t'
            | b'!'
            | b'"'
            | b'#'
            | b'$'
            | b'&'
            | b'\''
            | b'('
            | b')'
            | b'*'
            | b','
            | b';'
            | b'<'
            | b'>'
            | b'?'
            | b'['
            | b'\\'
            | b']'
            | b'^'
            | b'`'
            | b'{'
            | b'|'
            | b'}'
            | b'~'
    )
}

fn shell_backslash(value: &[u8]) -> Zeroizing<Vec<u8>> {
    escape_with(value, |b| {
        shell_meta(b).then_some(&[b'\\', b][..]).map(<[u8]>::to_vec)
    })
}

/// Inside `'…'`: each `'` becomes `'\''`.
fn shell_single_quoted(value: &[u8]) -> Zeroizing<Vec<u8>> {
    escape_with(value, |b| (b == b'\'').then(|| b"'\\''".to_vec()))
}

/// Inside `"…"`: backslash before `$`, `` ` ``, `"` and `\`.
fn shell_double_quoted(value: &[u8]) -> Zeroizing<Vec<u8>> {
    escape_with(value, |b| {
        matches!(b, b'$' | b'`' | b'"' | b'\\').then(|| vec![b'\\', b])
    })
}

fn escape_with(value: &[u8], f: impl Fn(u8) -> Option<Vec<u8>>) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(value.len() + 4));
    for &b in value {
        match f(b) {
            Some(escaped) => out.extend_from_slice(&escaped),
            None => out.push(b),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(forms: &[Form], enc: Encoding, s: &[u8]) -> bool {
        forms.iter().any(|(e, f)| *e == enc && f.as_slice() == s)
    }

    #[test]
    fn short_values_are_raw_only() {
        let f = forms(b"abcde");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, Encoding::Raw);
    }

    #[test]
    fn base64_alignments_cover_basic_auth() {
        let secret = b"s3cr3t-value";
        let f = forms(secret);
        let basic = base64::engine::general_purpose::STANDARD.encode(b"user:s3cr3t-value");
        // "user:" is 5 bytes, so the secret sits at alignment 2.
        let hit = f.iter().any(|(e, p)| {
            *e == Encoding::Base64 && basic.as_bytes().windows(p.len()).any(|w| w == p.as_slice())
        });
        assert!(hit, "no base64 form found inside {basic}");
        assert!(has(
            &f,
            Encoding::Base64,
            base64::engine::general_purpose::STANDARD
                .encode(secret)
                .as_bytes()
        ));
    }

    #[test]
    fn hex_percent_json_shell() {
        let f = forms(b"a/b\"c d\n\x01");
        assert!(has(
            &f,
            Encoding::Hex,
            b"612f6222632064 0a01"
                .iter()
                .copied()
                .filter(|&b| b != b' ')
                .collect::<Vec<_>>()
                .as_slice()
        ));
        assert!(has(&f, Encoding::Percent, b"a%2Fb%22c%20d%0A%01"));
        assert!(has(&f, Encoding::Percent, b"%61%2f%62%22%63%20%64%0a%01"));
        assert!(has(&f, Encoding::Json, b"a/b\\\"c d\\n\\u0001"));
        assert!(has(&f, Encoding::Json, b"a\\/b\\\"c d\\n\\u0001"));
        assert!(has(&f, Encoding::Shell, b"a/b\\\"c\\ d\n\x01"));
    }

    #[test]
    fn no_form_is_shorter_than_its_value() {
        let mut values: Vec<Vec<u8>> = Vec::new();
        for len in 1..=40usize {
            values.push((0..len).map(|i| b'a' + (i % 26) as u8).collect());
            values.push((0..len).map(|i| (i * 37 + 200) as u8).collect());
            values.push(vec![b'/'; len]);
        }
        for v in &values {
            for (enc, form) in forms(v) {
                assert!(form.len() >= v.len(), "{enc:?} of {v:?}: {form:?}");
            }
        }
    }

    #[test]
    fn json_ascii_uses_utf16_escapes() {
        let f = forms("pässwörd😀".as_bytes());
        assert!(has(
            &f,
            Encoding::Json,
            b"p\\u00e4ssw\\u00f6rd\\ud83d\\ude00"
        ));
    }
}
