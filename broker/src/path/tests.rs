use super::*;
use proptest::prelude::*;

#[test]
fn ordinary_paths_pass_unchanged() {
    for p in [
        "/",
        "/v1/chat/completions",
        "/v1/models/",
        "/v1/files/file-abc123/content",
        "/repos/o/r/issues?state=open&per_page=100",
        "/search?q=a%2Fb%2E%2e",
        "/v1/models/gpt-4o%3Amini",
        "/a.b/c..d/.e/f.",
    ] {
        let got = check(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        let whole = match &got.query {
            Some(q) => format!("{}?{q}", got.path),
            None => got.path.clone(),
        };
        assert_eq!(whole, p);
    }
}

#[test]
fn traversal_in_every_disguise_is_refused() {
    for (p, want) in [
        ("/v1/chat/../../../etc/passwd", PathError::DotSegment),
        ("/v1/./chat", PathError::DotSegment),
        ("/v1/..", PathError::DotSegment),
        ("/v1/.", PathError::DotSegment),
        ("/v1/%2e%2e/admin", PathError::EncodedDelimiter),
        ("/v1/%2E%2E/admin", PathError::EncodedDelimiter),
        ("/v1/.%2e/admin", PathError::EncodedDelimiter),
        ("/v1/%2e/admin", PathError::EncodedDelimiter),
        ("/v1%2f..%2fadmin", PathError::EncodedDelimiter),
        ("/v1%2F..%2Fadmin", PathError::EncodedDelimiter),
        ("/v1/%252e%252e/admin", PathError::EncodedDelimiter),
        ("/v1/%25252e/admin", PathError::EncodedDelimiter),
        ("/v1/%5c..%5cadmin", PathError::EncodedDelimiter),
        ("/v1\\..\\admin", PathError::Backslash),
        ("/v1/..\\admin", PathError::Backslash),
        ("/v1//admin", PathError::EmptySegment),
        ("//evil.example/x", PathError::EmptySegment),
        ("v1/chat", PathError::NotAbsolute),
        ("", PathError::NotAbsolute),
        ("http://evil.example/", PathError::NotAbsolute),
        ("/v1/chat#frag", PathError::Fragment),
        ("/v1/chat%23frag", PathError::EncodedDelimiter),
        ("/v1/chat%3fx=1", PathError::EncodedDelimiter),
        ("/v1/ch at", PathError::BadByte),
        ("/v1/ch\tat", PathError::BadByte),
        ("/v1/ch\u{e9}at", PathError::BadByte),
        ("/v1/\r\nHost: evil", PathError::BadByte),
        ("/v1/%0d%0aHost:%20evil", PathError::EncodedDelimiter),
        ("/v1/%00", PathError::EncodedDelimiter),
        ("/v1/%zz", PathError::BadEscape),
        ("/v1/%2", PathError::BadEscape),
        ("/search?q=%252e", PathError::EncodedDelimiter),
        ("/search?q=%0a", PathError::EncodedDelimiter),
    ] {
        assert_eq!(check(p), Err(want), "{p:?}");
    }
    assert_eq!(
        check(&format!("/{}", "a".repeat(MAX_PATH))),
        Err(PathError::TooLong)
    );
}

fn pat(p: &str) -> PathPattern {
    PathPattern::parse(p).unwrap_or_else(|e| panic!("{e}"))
}

fn allows(pattern: &str, path: &str) -> bool {
    pat(pattern).matches(&check(path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

#[test]
fn patterns_match_whole_segments() {
    assert!(allows("/v1/chat/completions", "/v1/chat/completions"));
    assert!(allows(
        "/v1/chat/completions",
        "/v1/chat/completions?stream=true"
    ));
    assert!(!allows("/v1/chat/completions", "/v1/chat/completions/x"));
    assert!(!allows("/v1/chat/completions", "/v1/chat"));
    assert!(allows("/v1/models/*", "/v1/models/gpt-4o"));
    assert!(!allows("/v1/models/*", "/v1/models/"));
    assert!(!allows("/v1/models/*", "/v1/models/a/b"));
    assert!(allows("/v1/**", "/v1/a/b/c"));
    assert!(allows("/v1/**", "/v1/a"));
    assert!(!allows("/v1/**", "/v1"));
    assert!(!allows("/v1/**", "/v1/"));
    assert!(!allows("/v1/**", "/v10/a"));
    assert!(!allows("/v1/**", "/v2/v1/a"));
    assert!(allows("/", "/"));
    assert!(!allows("/", "/x"));
}

#[test]
fn bad_patterns_are_refused_at_load() {
    assert!(matches!(
        PathPattern::parse("v1/**"),
        Err(PatternError::NotAbsolute(_))
    ));
    assert!(matches!(
        PathPattern::parse("/**/x"),
        Err(PatternError::RestNotLast(_))
    ));
    assert!(matches!(
        PathPattern::parse("/v1/gpt-*"),
        Err(PatternError::PartialGlob(_))
    ));
    assert!(matches!(
        PathPattern::parse("/v1/../x"),
        Err(PatternError::Invalid(..))
    ));
    assert!(matches!(
        PathPattern::parse("/v1?x=1"),
        Err(PatternError::Invalid(..))
    ));
}

proptest! {
    /// Whatever passes the check has no segment a server could take for
    /// a step up or sideways, decoded once or twice.
    #[test]
    fn nothing_that_passes_can_climb(raw in "/[a-zA-Z0-9%./\\\\?#-]{0,40}") {
        if let Ok(p) = check(&raw) {
            for seg in p.path.split('/').skip(1) {
                let once = decode_unreserved(seg);
                let twice = decode_unreserved(&once);
                prop_assert!(once != "." && once != ".." && twice != "." && twice != "..");
                prop_assert!(!once.contains('/') && !once.contains('\\') && !once.contains('%'));
            }
        }
    }

    /// A pattern never admits a path outside its literal prefix.
    #[test]
    fn a_rest_pattern_keeps_its_prefix(tail in "[a-z0-9/._%-]{0,30}") {
        let path = format!("/v1/{tail}");
        if let Ok(p) = check(&path) {
            if pat("/v1/**").matches(&p) {
                prop_assert!(p.path.starts_with("/v1/"));
            }
        }
        let other = format!("/v2/{tail}");
        if let Ok(p) = check(&other) {
            prop_assert!(!pat("/v1/**").matches(&p));
        }
    }
}
