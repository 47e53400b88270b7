//! Typed, bounded method arguments.
//!
//! zbus decodes a method's arguments before the method runs, so their types
//! decide what a hostile message costs. A generic `a{sv}` decodes every byte
//! of an `ay` into a 64-byte `Value`; here each option has its own type
//! (an `ay` becomes a `Vec<u8>`), and string lists and maps stop decoding as
//! soon as they outgrow what the socket path would accept in one request.
//! Unknown option keys and wrong types are refused by the decoder (the
//! caller gets `org.freedesktop.DBus.Error.InvalidArgs`).

use std::fmt;

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use zbus::zvariant::{as_value, Signature, Type};

/// Most bytes of strings one list or map argument may carry (the socket
/// path's whole request is smaller: `MAX_FRAME`).
pub const MAX_STRINGS_BYTES: usize = aivault_proto::MAX_FRAME;
/// Most entries of one list or map argument.
pub const MAX_STRINGS: usize = 4096;
/// Most stdin one `Run` call may carry.
pub const MAX_STDIN: usize = 8 * 1024 * 1024;

fn too_big<E: serde::de::Error>() -> E {
    E::custom(format!(
        "argument too large (at most {MAX_STRINGS} entries and {MAX_STRINGS_BYTES} bytes)"
    ))
}

/// An `as` argument, bounded while it is decoded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Strings(pub Vec<String>);

impl Type for Strings {
    const SIGNATURE: &'static Signature = <Vec<String> as Type>::SIGNATURE;
}

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strings;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strings, A::Error> {
                let (mut out, mut bytes) = (Vec::new(), 0usize);
                while let Some(s) = seq.next_element::<String>()? {
                    bytes += s.len();
                    if out.len() >= MAX_STRINGS || bytes > MAX_STRINGS_BYTES {
                        return Err(too_big());
                    }
                    out.push(s);
                }
                Ok(Strings(out))
            }
        }
        d.deserialize_seq(V)
    }
}

/// An `a{ss}` argument, bounded while it is decoded; order kept.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StringMap(pub Vec<(String, String)>);

impl Type for StringMap {
    const SIGNATURE: &'static Signature =
        <std::collections::HashMap<String, String> as Type>::SIGNATURE;
}

impl<'de> Deserialize<'de> for StringMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of strings to strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StringMap, A::Error> {
                let (mut out, mut bytes) = (Vec::new(), 0usize);
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    bytes += k.len() + v.len();
                    if out.len() >= MAX_STRINGS || bytes > MAX_STRINGS_BYTES {
                        return Err(too_big());
                    }
                    out.push((k, v));
                }
                Ok(StringMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The `a{sv}` options of `Run` and `RunStreaming`. Each key has one type.
#[derive(Debug, Default, Deserialize, Type)]
#[zvariant(signature = "a{sv}")]
#[serde(default, deny_unknown_fields)]
pub struct RunOptions {
    /// `NAME` or `NAME=ENV`.
    #[serde(with = "as_value::optional")]
    pub secrets: Option<Strings>,
    #[serde(with = "as_value::optional")]
    pub timeout_ms: Option<u64>,
    /// Bytes for the command's stdin.
    #[serde(with = "as_value::optional")]
    pub stdin: Option<Vec<u8>>,
    /// The same, as text.
    #[serde(with = "as_value::optional")]
    pub stdin_text: Option<String>,
    #[serde(with = "as_value::optional")]
    pub cwd: Option<String>,
    #[serde(with = "as_value::optional")]
    pub cwd_readable: Option<bool>,
    #[serde(with = "as_value::optional")]
    pub env: Option<StringMap>,
    /// `Run` only: bytes of output returned per stream.
    #[serde(with = "as_value::optional")]
    pub max_output: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use zbus::zvariant::{serialized::Context, to_bytes, Value, LE};

    fn decode<T: for<'de> Deserialize<'de> + Type>(
        v: &(impl serde::Serialize + zbus::zvariant::DynamicType),
    ) -> zbus::zvariant::Result<T> {
        let bytes = to_bytes(Context::new_dbus(LE, 0), v)?;
        bytes.deserialize::<T>().map(|(t, _)| t)
    }

    #[test]
    fn options_decode_with_their_types_and_refuse_unknown_keys() {
        let mut m: HashMap<&str, Value<'_>> = HashMap::new();
        m.insert("stdin", Value::from(vec![1u8, 2, 3]));
        m.insert("timeout_ms", Value::from(5000u64));
        m.insert("secrets", Value::from(vec!["A", "B=C"]));
        let o: RunOptions = decode(&m).unwrap();
        assert_eq!(o.stdin.as_deref(), Some(&[1u8, 2, 3][..]));
        assert_eq!(o.timeout_ms, Some(5000));
        assert_eq!(o.secrets.unwrap().0, vec!["A", "B=C"]);

        let mut bad: HashMap<&str, Value<'_>> = HashMap::new();
        bad.insert("stdni", Value::from("x"));
        assert!(decode::<RunOptions>(&bad).is_err());
        let mut wrong: HashMap<&str, Value<'_>> = HashMap::new();
        wrong.insert("timeout_ms", Value::from("soon"));
        assert!(decode::<RunOptions>(&wrong).is_err());
    }

    #[test]
    fn string_lists_stop_at_their_bound() {
        let ok: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
        assert_eq!(decode::<Strings>(&ok).unwrap().0, ok);
        let many: Vec<&str> = vec!["x"; MAX_STRINGS + 1];
        assert!(decode::<Strings>(&many).is_err());
        let long = vec!["y".repeat(MAX_STRINGS_BYTES / 2 + 1); 2];
        assert!(decode::<Strings>(&long).is_err());
    }
}
