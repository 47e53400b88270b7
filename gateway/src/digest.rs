//! Canonical JSON and the digests taken over it: the argument digest in a
//! `tools/call` audit record (values never appear there) and the hash a
//! tool definition is pinned to (`pin.rs`).
//!
//! Canonical form: object keys sorted by their UTF-8 bytes, no whitespace,
//! strings escaped as `serde_json` escapes them (`"`, `\`, control
//! characters; everything else as UTF-8), numbers as `serde_json` prints
//! them. Two values that are equal as JSON values have the same form,
//! whatever order or spacing they arrived in.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The canonical serialisation of `value`.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {
            // Scalars: serde_json's compact form is already canonical.
            out.push_str(&value.to_string());
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    hex
}

/// The audit digest of a call's arguments: hex SHA-256 of their canonical
/// JSON. An absent `arguments` is digested as `{}` (what MCP means by it).
pub fn argument_digest(arguments: Option<&Value>) -> String {
    match arguments {
        Some(v) => sha256_hex(canonical_json(v).as_bytes()),
        None => sha256_hex(b"{}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_sorts_keys_and_drops_whitespace() {
        let a: Value = serde_json::from_str(r#"{ "b": [1, {"z": 1, "a": "x"}], "a": null }"#)
            .expect("valid json");
        assert_eq!(canonical_json(&a), r#"{"a":null,"b":[1,{"a":"x","z":1}]}"#);
        let b: Value =
            serde_json::from_str(r#"{"a":null,"b":[1,{"z":1,"a":"x"}]}"#).expect("valid json");
        assert_eq!(argument_digest(Some(&a)), argument_digest(Some(&b)));
    }

    #[test]
    fn strings_are_escaped_and_keys_sort_by_bytes() {
        let v = json!({"é": 1, "Z": "a\"b\\c\n", "a": 2});
        assert_eq!(
            canonical_json(&v),
            "{\"Z\":\"a\\\"b\\\\c\\n\",\"a\":2,\"é\":1}"
        );
    }

    #[test]
    fn digest_is_hex_sha256_and_never_the_value() {
        let v = json!({"token": "hunter2-very-secret"});
        let d = argument_digest(Some(&v));
        assert_eq!(d.len(), 64);
        assert!(d
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert!(!d.contains("hunter2"));
        // SHA-256 of "{}".
        assert_eq!(
            argument_digest(None),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_ne!(
            argument_digest(Some(&json!({"a": 1}))),
            argument_digest(None)
        );
    }
}
