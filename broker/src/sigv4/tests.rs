//! Known answers from AWS's published SigV4 examples (the test suite's
//! `get-vanilla`, `post-vanilla` and `get-vanilla-query-order-key-case`,
//! and the IAM `ListUsers` example of the signing guide), all with the
//! example keys below at 2015-08-30 12:36:00 UTC.

use super::*;

const AKID: &[u8] = b"AKIDEXAMPLE";
const SECRET: &[u8] = b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const DATE: &str = "20150830T123600Z";
const EMPTY_HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn keys() -> Keys<'static> {
    Keys {
        access_key_id: AKID,
        secret: SECRET,
    }
}

/// The suite's requests carry only `host` and `x-amz-date` (no payload
/// header): the authorization for one of them.
fn suite(
    method: &str,
    target: &str,
    host: &str,
    scope: Scope<'_>,
    extra: &[(&str, &str)],
) -> String {
    let mut headers: Vec<(String, String)> = extra
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    headers.push(("x-amz-date".into(), DATE.into()));
    let req = Signable {
        method,
        host,
        target,
        headers: &headers,
        body: b"",
    };
    authorization(&keys(), scope, &req, &headers, DATE, EMPTY_HASH).unwrap()
}

const SUITE: Scope<'static> = Scope {
    region: "us-east-1",
    service: "service",
};

#[test]
fn get_vanilla() {
    assert_eq!(
        suite("GET", "/", "example.amazonaws.com", SUITE, &[]),
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
         SignedHeaders=host;x-amz-date, \
         Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    );
}

#[test]
fn post_vanilla() {
    let auth = suite("POST", "/", "example.amazonaws.com", SUITE, &[]);
    assert!(
        auth.ends_with(
            "Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        ),
        "{auth}"
    );
}

#[test]
fn get_vanilla_query_order_key_case() {
    let auth = suite(
        "GET",
        "/?Param2=value2&Param1=value1",
        "example.amazonaws.com",
        SUITE,
        &[],
    );
    assert!(
        auth.ends_with(
            "Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        ),
        "{auth}"
    );
}

#[test]
fn the_signing_guide_iam_example() {
    let iam = Scope {
        region: "us-east-1",
        service: "iam",
    };
    assert_eq!(
        hex(&signing_key(SECRET, "20150830", iam)),
        "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
    );
    let auth = suite(
        "GET",
        "/?Action=ListUsers&Version=2010-05-08",
        "iam.amazonaws.com",
        iam,
        &[(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )],
    );
    assert!(
        auth.contains("SignedHeaders=content-type;host;x-amz-date,"),
        "{auth}"
    );
    assert!(
        auth.ends_with(
            "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        ),
        "{auth}"
    );
}

#[test]
fn dates_are_utc_calendar_dates() {
    assert_eq!(amz_date(1_440_938_160), DATE);
    assert_eq!(amz_date(0), "19700101T000000Z");
    assert_eq!(amz_date(1_709_251_199), "20240229T235959Z");
    assert_eq!(amz_date(951_868_800), "20000301T000000Z");
}

#[test]
fn s3_paths_are_encoded_once_and_others_twice() {
    let headers = vec![("x-amz-date".to_owned(), DATE.to_owned())];
    let req = Signable {
        method: "GET",
        host: "h.amazonaws.com",
        target: "/a%20b/c:d?b=2&a=x%2Fy&a=1&flag",
        headers: &headers,
        body: b"",
    };
    let s3 = Scope {
        region: "us-east-1",
        service: "s3",
    };
    let (_, c) = canonical_request(s3, &req, &headers, EMPTY_HASH);
    let lines: Vec<&str> = c.lines().collect();
    assert_eq!(lines[1], "/a%20b/c%3Ad");
    assert_eq!(lines[2], "a=1&a=x%2Fy&b=2&flag=");
    let (_, c) = canonical_request(SUITE, &req, &headers, EMPTY_HASH);
    assert_eq!(c.lines().nth(1), Some("/a%2520b/c%253Ad"));
}

#[test]
fn sign_adds_the_date_the_payload_hash_and_a_signature_over_every_header() {
    let headers = vec![
        ("content-type".to_owned(), "text/plain".to_owned()),
        ("x-custom".to_owned(), "  a   b ".to_owned()),
    ];
    let req = Signable {
        method: "PUT",
        host: "bucket.s3.us-east-1.amazonaws.com",
        target: "/key",
        headers: &headers,
        body: b"hello",
    };
    let scope = Scope {
        region: "us-east-1",
        service: "s3",
    };
    let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160);
    let added = sign(&keys(), scope, &req, at).unwrap();
    assert_eq!(added[0], ("x-amz-date".into(), DATE.into()));
    assert_eq!(
        added[1],
        (
            "x-amz-content-sha256".into(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".into()
        )
    );
    let auth = &added[2].1;
    assert!(auth.starts_with(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/s3/aws4_request, \
         SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-custom, Signature="
    ));
    // A different body is a different signature.
    let other = sign(
        &keys(),
        scope,
        &Signable {
            body: b"hellp",
            ..req
        },
        at,
    )
    .unwrap();
    assert_ne!(other[2], added[2]);
}

#[test]
fn bad_keys_are_refused_without_showing_them() {
    let req = Signable {
        method: "GET",
        host: "h",
        target: "/",
        headers: &[],
        body: b"",
    };
    let now = SystemTime::now();
    for akid in [&b"AKID/x"[..], b"AKID X", b"", b"AKID\n"] {
        let k = Keys {
            access_key_id: akid,
            secret: SECRET,
        };
        let e = sign(&k, SUITE, &req, now).unwrap_err();
        assert_eq!(e, SignError::AccessKeyId);
    }
    let k = Keys {
        access_key_id: AKID,
        secret: b"",
    };
    assert_eq!(
        sign(&k, SUITE, &req, now).unwrap_err(),
        SignError::EmptySecret
    );
}
