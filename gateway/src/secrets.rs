//! The vault redactor (`aivault-redact`) applied to JSON: the secrets an
//! upstream was given, and their encodings, replaced in every string of
//! what it returns.
//!
//! Strings are redacted after JSON parsing, so a secret the upstream sent
//! with JSON escapes (`\u0041…`) is matched in its plain form; the session
//! must forward the re-serialised value, never the upstream's bytes.

use std::collections::BTreeMap;
use std::sync::Arc;

use aivault_redact::{Patterns, Redactor};
use serde_json::Value;

use crate::walk::{map_strings, WalkError};

/// Redacts one string; counts are added per secret name.
pub fn redact_str(
    patterns: &Arc<Patterns>,
    text: &str,
    counts: &mut BTreeMap<String, u64>,
) -> Result<Option<String>, String> {
    let mut r = Redactor::new(Arc::clone(patterns));
    let mut out = Vec::with_capacity(text.len());
    r.write(text.as_bytes(), &mut out);
    r.finish(&mut out);
    if r.counts().is_empty() {
        return Ok(None);
    }
    for (name, n) in r.counts() {
        *counts.entry(name.clone()).or_default() += n;
    }
    // A pattern that began or ended inside a multi-byte character would
    // leave invalid UTF-8; refuse rather than guess.
    String::from_utf8(out)
        .map(Some)
        .map_err(|_| "redaction split a character".to_string())
}

/// Every string (and key) of `value` redacted; counts per secret name.
pub fn redact_value(
    patterns: &Arc<Patterns>,
    value: &Value,
) -> Result<(Value, BTreeMap<String, u64>), WalkError> {
    let mut counts = BTreeMap::new();
    let out = map_strings(value, &mut |s| redact_str(patterns, s, &mut counts))?;
    Ok((out, counts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aivault_redact::Secret;
    use serde_json::json;

    fn patterns() -> Arc<Patterns> {
        Arc::new(Patterns::new(&[Secret::new("API_TOKEN", "tok-3f9a81c2d4e5")]).expect("compiles"))
    }

    #[test]
    fn the_secret_and_its_encodings_are_redacted_everywhere() {
        let p = patterns();
        let b64 = "dG9rLTNmOWE4MWMyZDRlNQ=="; // base64 of the token
        let v = json!({
            "content": [{"type": "text", "text": "token is tok-3f9a81c2d4e5!"}],
            "structuredContent": {"nested": [b64], "tok-3f9a81c2d4e5": 1},
        });
        let (out, counts) = redact_value(&p, &v).expect("redacts");
        let text = out.to_string();
        assert!(!text.contains("tok-3f9a81c2d4e5"), "{text}");
        assert!(!text.contains(b64), "{text}");
        assert_eq!(out["content"][0]["text"], "token is [REDACTED:API_TOKEN]!");
        assert_eq!(counts["API_TOKEN"], 3);
    }

    #[test]
    fn clean_values_are_unchanged() {
        let v = json!({"content": [{"type": "text", "text": "nothing here"}]});
        let (out, counts) = redact_value(&patterns(), &v).expect("redacts");
        assert_eq!(out, v);
        assert!(counts.is_empty());
    }
}
