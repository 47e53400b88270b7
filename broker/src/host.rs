//! Host names as the broker takes them: from the registry, from policy
//! (capability hosts, token endpoints), never from a caller.

/// A DNS name of lower-case letters, digits and hyphens, in labels of at
/// most 63 characters that neither start nor end with a hyphen; no IP
/// literal, no trailing dot.
pub fn valid_host(h: &str) -> bool {
    h.len() <= 253
        && !h.is_empty()
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
        && !h
            .split('.')
            .next_back()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
}
