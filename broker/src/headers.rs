//! Headers in both directions. The broker alone puts a credential on a
//! request, so a caller's header that carries one is refused, not
//! overwritten (a caller who sends one is either confused or probing, and
//! both deserve an error). Hop-by-hop headers describe the caller's own
//! connection and are dropped. On the way back, headers through which an
//! upstream hands out or asks for credentials are stripped.

use thiserror::Error;

/// The most headers a caller may send, and the longest one (name and value).
pub const MAX_HEADERS: usize = 64;
pub const MAX_HEADER_BYTES: usize = 8192;

/// Request headers that carry a credential, whatever the capability.
const AUTH_CLASS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "cookie2",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-access-token",
    "x-goog-api-key",
    "x-amz-security-token",
    "private-token",
    "x-csrf-token",
];

/// RFC 9110 §7.6.1 and the older ones proxies still honour.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Request headers the broker sets itself from policy and the body.
const BROKER_OWNED: &[&str] = &[
    "host",
    "content-length",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-real-ip",
];

/// Response headers that hand out or ask for credentials.
const RESPONSE_CREDENTIALS: &[&str] = &[
    "set-cookie",
    "set-cookie2",
    "www-authenticate",
    "proxy-authenticate",
    "authentication-info",
    "proxy-authentication-info",
    "authorization",
    "x-api-key",
    "x-auth-token",
    "x-access-token",
];

/// Why a caller's headers were refused. Values are never repeated.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HeaderError {
    #[error("more than {MAX_HEADERS} headers")]
    TooMany,
    #[error("a header is longer than {MAX_HEADER_BYTES} bytes")]
    TooLong,
    #[error("header name {0:?} is not a valid token")]
    BadName(String),
    #[error("the value of header {0:?} holds a control character")]
    BadValue(String),
    #[error("header {0:?} carries a credential; the broker adds the capability's own")]
    Credential(String),
}

/// A caller's headers after [`check_request`]: names lower-cased, in order.
pub type Headers = Vec<(String, String)>;

/// Checks a caller's headers for a capability whose credential goes in
/// `own_header` (e.g. `x-api-key`, `anthropic-version` is not one), and
/// returns those the broker forwards.
pub fn check_request(
    headers: &[(String, String)],
    own_header: Option<&str>,
) -> Result<Headers, HeaderError> {
    if headers.len() > MAX_HEADERS {
        return Err(HeaderError::TooMany);
    }
    // Names listed in Connection are hop-by-hop for this message too.
    let mut dropped: Vec<String> = Vec::new();
    for (name, value) in headers {
        if name.len() + value.len() > MAX_HEADER_BYTES {
            return Err(HeaderError::TooLong);
        }
        if !is_token(name) {
            return Err(HeaderError::BadName(bounded(name)));
        }
        if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(HeaderError::BadValue(name.to_ascii_lowercase()));
        }
        if name.eq_ignore_ascii_case("connection") {
            dropped.extend(value.split(',').map(|t| t.trim().to_ascii_lowercase()));
        }
    }
    let mut out = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let own = own_header.is_some_and(|h| h.eq_ignore_ascii_case(&lower));
        if own || AUTH_CLASS.contains(&lower.as_str()) {
            return Err(HeaderError::Credential(lower));
        }
        if HOP_BY_HOP.contains(&lower.as_str())
            || BROKER_OWNED.contains(&lower.as_str())
            || dropped.contains(&lower)
        {
            continue;
        }
        out.push((lower, value.clone()));
    }
    Ok(out)
}

/// An upstream's response headers without credentials and hop-by-hop
/// headers (the broker frames the body to the caller itself).
pub fn strip_response(headers: &[(String, String)]) -> Headers {
    headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .filter(|(n, _)| {
            !RESPONSE_CREDENTIALS.contains(&n.as_str()) && !HOP_BY_HOP.contains(&n.as_str())
        })
        .collect()
}

/// RFC 9110 token characters.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// At most 64 characters of a caller's string, for an error message.
fn bounded(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn credentials_from_the_caller_are_refused_in_any_case() {
        for name in [
            "Authorization",
            "PROXY-AUTHORIZATION",
            "cookie",
            "X-Api-Key",
            "x-goog-api-key",
        ] {
            let got = check_request(&h(&[("accept", "*/*"), (name, "Bearer stolen")]), None);
            assert_eq!(
                got,
                Err(HeaderError::Credential(name.to_ascii_lowercase())),
                "{name}"
            );
        }
        // The capability's own header, whatever its name.
        let got = check_request(&h(&[("X-Custom-Auth", "t")]), Some("x-custom-auth"));
        assert_eq!(got, Err(HeaderError::Credential("x-custom-auth".into())));
        // The error never repeats the value.
        let e = check_request(&h(&[("authorization", "Bearer sk-live-123")]), None).unwrap_err();
        assert!(!e.to_string().contains("sk-live"), "{e}");
    }

    #[test]
    fn hop_by_hop_and_broker_owned_headers_are_dropped() {
        let got = check_request(
            &h(&[
                ("Connection", "keep-alive, X-Trace"),
                ("Keep-Alive", "timeout=5"),
                ("Transfer-Encoding", "chunked"),
                ("Upgrade", "h2c"),
                ("X-Trace", "1"),
                ("Host", "evil.example"),
                ("Content-Length", "999"),
                ("X-Forwarded-For", "10.0.0.1"),
                ("Accept", "application/json"),
                ("OpenAI-Beta", "assistants=v2"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(
            got,
            h(&[
                ("accept", "application/json"),
                ("openai-beta", "assistants=v2")
            ])
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert!(matches!(
            check_request(&h(&[("bad name", "x")]), None),
            Err(HeaderError::BadName(_))
        ));
        assert!(matches!(
            check_request(&h(&[("", "x")]), None),
            Err(HeaderError::BadName(_))
        ));
        assert!(matches!(
            check_request(&h(&[("x-a", "1\r\nAuthorization: Bearer x")]), None),
            Err(HeaderError::BadValue(_))
        ));
        assert!(matches!(
            check_request(&h(&[("x-a", "1\0")]), None),
            Err(HeaderError::BadValue(_))
        ));
        let many: Vec<_> = (0..=MAX_HEADERS)
            .map(|i| (format!("x-{i}"), "1".to_string()))
            .collect();
        assert_eq!(check_request(&many, None), Err(HeaderError::TooMany));
        let long = h(&[("x-a", &"v".repeat(MAX_HEADER_BYTES))]);
        assert_eq!(check_request(&long, None), Err(HeaderError::TooLong));
        // Tabs are allowed inside values.
        assert!(check_request(&h(&[("x-a", "a\tb")]), None).is_ok());
    }

    #[test]
    fn response_credentials_are_stripped() {
        let got = strip_response(&h(&[
            ("Set-Cookie", "session=abc"),
            (
                "WWW-Authenticate",
                "Bearer realm=x, error=\"invalid_token\"",
            ),
            ("Proxy-Authenticate", "Basic"),
            ("Authentication-Info", "nextnonce=x"),
            ("Transfer-Encoding", "chunked"),
            ("Content-Type", "application/json"),
            ("x-request-id", "req_1"),
        ]));
        assert_eq!(
            got,
            h(&[
                ("content-type", "application/json"),
                ("x-request-id", "req_1")
            ])
        );
    }
}
