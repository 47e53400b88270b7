//! Named regression cases for the redactor.

use std::sync::Arc;
use std::time::Duration;

use aivault_redact::{
    redact_all, redaction_strength, Patterns, Redactor, Secret, Strength, IDLE_FLUSH_MAX,
    MIN_ENCODED_LEN,
};
use base64::Engine as _;

fn patterns(secrets: &[(&str, &[u8])]) -> Arc<Patterns> {
    let secrets: Vec<Secret> = secrets
        .iter()
        .map(|(n, v)| Secret::new(*n, v.to_vec()))
        .collect();
    Arc::new(Patterns::new(&secrets).expect("patterns"))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

const KEY: &[u8] = b"sk-live-9f8e7d6c5b4a";

#[test]
fn secret_wrapped_in_ansi_colour_codes() {
    let p = patterns(&[("API_KEY", KEY)]);
    let input = [b"\x1b[1;31m".as_slice(), KEY, b"\x1b[0m\r\n"].concat();
    let out = redact_all(&p, &input);
    assert_eq!(out, b"\x1b[1;31m[REDACTED:API_KEY]\x1b[0m\r\n");
}

#[test]
fn secret_split_across_two_writes_200ms_apart() {
    let p = patterns(&[("API_KEY", KEY)]);
    let mut r = Redactor::new(p);
    let mut out = Vec::new();
    let (first, second) = KEY.split_at(9);
    r.write(b"token=", &mut out);
    r.write(first, &mut out);
    std::thread::sleep(Duration::from_millis(200));
    r.flush_idle(&mut out);
    assert_eq!(
        out, b"token=",
        "nothing of the secret may be emitted after the first write"
    );
    assert_eq!(r.held(), first.len());
    r.write(second, &mut out);
    r.write(b" ok\n", &mut out);
    r.finish(&mut out);
    assert_eq!(out, b"token=[REDACTED:API_KEY] ok\n");
    assert_eq!(r.counts().get("API_KEY"), Some(&1));
}

#[test]
fn base64_of_user_colon_secret() {
    let p = patterns(&[("PASS", b"correct horse battery")]);
    let encoded = base64::engine::general_purpose::STANDARD.encode("user:correct horse battery");
    let header = format!("Authorization: Basic {encoded}\n");
    let out = redact_all(&p, header.as_bytes());
    let text = String::from_utf8(out).expect("utf8");
    // "user:" is 40 bits: 6 characters are the user's, the 7th mixes both,
    // everything after it (padding included) is the secret's.
    assert_eq!(
        text,
        format!(
            "Authorization: Basic {}[REDACTED:PASS:base64]\n",
            &encoded[..7]
        )
    );
}

#[test]
fn secret_at_very_start_and_very_end_of_stream() {
    let p = patterns(&[("K", KEY)]);
    let input = [KEY, b" middle ", KEY].concat();
    for cut in 0..=input.len() {
        let mut r = Redactor::new(Arc::clone(&p));
        let mut out = Vec::new();
        r.write(&input[..cut], &mut out);
        r.write(&input[cut..], &mut out);
        r.finish(&mut out);
        assert_eq!(out, b"[REDACTED:K] middle [REDACTED:K]", "cut at {cut}");
    }
}

#[test]
fn one_byte_and_three_byte_secrets() {
    assert_eq!(redaction_strength(b"x"), Strength::RawOnly);
    assert_eq!(redaction_strength(b"abcdef"), Strength::Full);
    assert_eq!(redaction_strength(b""), Strength::Empty);
    assert_eq!(MIN_ENCODED_LEN, 6);
    let p = patterns(&[("ONE", b"%"), ("THREE", b"q7z")]);
    let out = redact_all(&p, b"100% of q7z; hex of q7z is 71377a");
    assert_eq!(
        out,
        b"100[REDACTED:ONE] of [REDACTED:THREE]; hex of [REDACTED:THREE] is 71377a"
    );
}

#[test]
fn ten_thousand_secrets() {
    let secrets: Vec<Secret> = (0..10_000u32)
        .map(|i| {
            Secret::new(
                format!("S{i}"),
                format!("tok-{:08x}-{:04}", i.wrapping_mul(2_654_435_761), i),
            )
        })
        .collect();
    let p = Arc::new(Patterns::new(&secrets).expect("patterns"));
    let mut input = Vec::new();
    for i in [0u32, 4_999, 9_999] {
        let value = format!("tok-{:08x}-{:04}", i.wrapping_mul(2_654_435_761), i);
        input.extend_from_slice(format!("line {i}: {value} ").as_bytes());
        input.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(&value)
                .as_bytes(),
        );
        input.push(b'\n');
    }
    let out = redact_all(&p, &input);
    let text = String::from_utf8(out).expect("utf8");
    assert_eq!(text.matches("[REDACTED:S4999]").count(), 1, "{text}");
    assert_eq!(text.matches("[REDACTED:S9999:base64]").count(), 1, "{text}");
    assert!(!text.contains("tok-"), "{text}");
}

#[test]
fn overlapping_secrets_redact_the_union() {
    let p = patterns(&[("A", b"abcd"), ("B", b"cdef"), ("C", b"abcdefgh-long")]);
    let mut r = Redactor::new(Arc::clone(&p));
    let mut out = Vec::new();
    r.write(b"<abcdef> <abcdefgh-long>", &mut out);
    r.finish(&mut out);
    assert_eq!(out, b"<[REDACTED:A]> <[REDACTED:C]>");
    assert_eq!(r.counts().get("A"), Some(&2), "C's raw form contains A");
    assert_eq!(r.counts().get("B"), Some(&2));
    assert_eq!(r.counts().get("C"), Some(&1));
}

#[test]
fn prompt_without_partial_match_is_released_immediately() {
    let p = patterns(&[("K", KEY)]);
    let mut r = Redactor::new(p);
    let mut out = Vec::new();
    r.write(b"Password: ", &mut out);
    assert_eq!(out, b"Password: ");
    assert_eq!(r.held(), 0);
}

#[test]
fn idle_flush_releases_only_short_partial_matches() {
    let p = patterns(&[("K", KEY)]);
    let mut r = Redactor::new(Arc::clone(&p));
    let mut out = Vec::new();
    r.write(b"continue? sk-", &mut out);
    assert_eq!(out, b"continue? ");
    assert_eq!(r.held(), 3);
    r.flush_idle(&mut out);
    assert_eq!(
        out, b"continue? sk-",
        "a partial match of IDLE_FLUSH_MAX bytes is released"
    );
    assert_eq!(r.held(), 0);
    // The rest of the secret arrives later: its remainder is still redacted.
    r.write(&KEY[3..], &mut out);
    r.finish(&mut out);
    assert_eq!(out, b"continue? sk-[REDACTED:K]");

    let mut r = Redactor::new(p);
    let mut out = Vec::new();
    r.write(b"enter sk-l", &mut out);
    r.flush_idle(&mut out);
    assert_eq!(
        out, b"enter ",
        "more than IDLE_FLUSH_MAX bytes of a secret form stay held"
    );
    assert_eq!(r.held(), IDLE_FLUSH_MAX + 1);
    r.finish(&mut out);
    assert_eq!(out, b"enter sk-l");
}

#[test]
fn idle_flush_never_releases_a_complete_secret() {
    let p = patterns(&[("SHORT", b"ab"), ("LONG", b"abcdefgh")]);
    let mut r = Redactor::new(p);
    let mut out = Vec::new();
    r.write(b"x ab", &mut out);
    assert_eq!(out, b"x ", "`ab` might still become `abcdefgh`");
    r.flush_idle(&mut out);
    assert_eq!(out, b"x [REDACTED:SHORT]");
    r.write(b"cdefgh.", &mut out);
    r.finish(&mut out);
    assert_eq!(out, b"x [REDACTED:SHORT].");
}

#[test]
fn binary_and_invalid_utf8_are_redacted() {
    let secret = b"\xff\x00\xfesecret\x80";
    let p = patterns(&[("BIN", secret)]);
    let input = [
        b"\x00\x01\xc3(".as_slice(),
        secret,
        b"\r\n\xff",
        &hex_lower(secret),
    ]
    .concat();
    let out = redact_all(&p, &input);
    assert_eq!(
        out,
        b"\x00\x01\xc3([REDACTED:BIN]\r\n\xff[REDACTED:BIN:hex]"
    );
}

#[test]
fn debug_output_holds_no_secret() {
    let secret = Secret::new("K", KEY.to_vec());
    let p = Arc::new(Patterns::new(std::slice::from_ref(&secret)).expect("patterns"));
    let mut r = Redactor::new(p);
    let mut out = Vec::new();
    r.write(&KEY[..10], &mut out);
    let text = format!("{secret:?} {r:?} {:?}", r.patterns());
    assert!(!text.contains("sk-live"), "{text}");
}

#[test]
fn no_secrets_means_a_copy() {
    let p = Arc::new(Patterns::new(&[]).expect("patterns"));
    assert!(p.is_empty());
    assert_eq!(redact_all(&p, b"anything"), b"anything");
}

fn hex_lower(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .flat_map(|b| format!("{b:02x}").into_bytes())
        .collect()
}

#[test]
fn held_bytes_never_reach_the_longest_pattern() {
    let p = patterns(&[("K", KEY)]);
    let mut r = Redactor::new(Arc::clone(&p));
    let mut out = Vec::new();
    for &b in KEY.iter().take(KEY.len() - 1) {
        r.write(&[b], &mut out);
        assert!(r.held() < p.longest());
    }
    assert!(out.is_empty());
    assert!(!contains(&out, b"sk-"));
}

#[test]
fn pem_wrapped_base64_split_at_every_point() {
    let secret = b"-----pem-secret-material-0123456789abcdef-----";
    let p = patterns(&[("PEM", secret)]);
    let mut data = b"header bytes ".to_vec();
    data.extend_from_slice(secret);
    data.extend_from_slice(b" trailer bytes that continue for a while");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
    let mut input = b"-----BEGIN PRIVATE KEY-----\r\n".to_vec();
    for line in b64.as_bytes().chunks(64) {
        input.extend_from_slice(line);
        input.extend_from_slice(b"\r\n");
    }
    input.extend_from_slice(b"-----END PRIVATE KEY-----\r\n");
    let whole = redact_all(&p, &input);
    let text = String::from_utf8_lossy(&whole);
    assert!(text.contains("[REDACTED:PEM:base64]"), "{text}");
    for cut in 0..=input.len() {
        let mut r = Redactor::new(Arc::clone(&p));
        let mut out = Vec::new();
        r.write(&input[..cut], &mut out);
        assert!(r.held() <= p.max_held());
        r.write(&input[cut..], &mut out);
        r.finish(&mut out);
        assert_eq!(out, whole, "cut at {cut}");
    }
}

#[test]
fn patterns_are_shareable_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Patterns>();
    fn sendable<T: Send>() {}
    sendable::<Redactor>();
    let p = patterns(&[("K", KEY)]);
    let worker = {
        let p = Arc::clone(&p);
        std::thread::spawn(move || redact_all(&p, KEY))
    };
    assert_eq!(worker.join().expect("thread"), b"[REDACTED:K]");
}
