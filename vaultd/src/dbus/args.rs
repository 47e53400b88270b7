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

use serde::de::{Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use zbus::zvariant::{as_value, Signature, Type};

use crate::wire_error::excerpt;

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
#[derive(Debug, Default, Type)]
#[zvariant(signature = "a{sv}")]
pub struct RunOptions {
    /// `NAME` or `NAME=ENV`.
    pub secrets: Option<Strings>,
    pub timeout_ms: Option<u64>,
    /// Bytes for the command's stdin.
    pub stdin: Option<Vec<u8>>,
    /// The same, as text.
    pub stdin_text: Option<String>,
    pub cwd: Option<String>,
    pub cwd_readable: Option<bool>,
    pub env: Option<StringMap>,
    /// `Run` only: bytes of output returned per stream.
    pub max_output: Option<u64>,
}

const OPTION_KEYS: &str = "`secrets`, `timeout_ms`, `stdin`, `stdin_text`, `cwd`, \
                           `cwd_readable`, `env`, `max_output`";

/// Decodes one option's variant as its own type, once.
fn option<'de, A: MapAccess<'de>, T: Type + Deserialize<'de> + 'de>(
    map: &mut A,
    slot: &mut Option<T>,
    key: &str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(A::Error::custom(format!("duplicate field `{key}`")));
    }
    *slot = Some(map.next_value::<as_value::Deserialize<'de, T>>()?.0);
    Ok(())
}

// By hand rather than derived: the derived decoder's error for an unknown
// key repeats the key whole, however long the caller made it.
impl<'de> Deserialize<'de> for RunOptions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RunOptions;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a dictionary of run options")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RunOptions, A::Error> {
                let mut o = RunOptions::default();
                while let Some(key) = map.next_key::<String>()? {
                    let m = &mut map;
                    match key.as_str() {
                        "secrets" => option(m, &mut o.secrets, &key)?,
                        "timeout_ms" => option(m, &mut o.timeout_ms, &key)?,
                        "stdin" => option(m, &mut o.stdin, &key)?,
                        "stdin_text" => option(m, &mut o.stdin_text, &key)?,
                        "cwd" => option(m, &mut o.cwd, &key)?,
                        "cwd_readable" => option(m, &mut o.cwd_readable, &key)?,
                        "env" => option(m, &mut o.env, &key)?,
                        "max_output" => option(m, &mut o.max_output, &key)?,
                        other => {
                            return Err(A::Error::custom(format!(
                                "unknown field `{}`, expected one of {OPTION_KEYS}",
                                excerpt(other)
                            )))
                        }
                    }
                }
                Ok(o)
            }
        }
        d.deserialize_map(V)
    }
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
        let long = "k".repeat(1 << 20);
        let mut huge: HashMap<&str, Value<'_>> = HashMap::new();
        huge.insert(&long, Value::from("x"));
        let e = decode::<RunOptions>(&huge).unwrap_err().to_string();
        assert!(
            e.starts_with("unknown field `kkk") && e.len() < 1024,
            "{}",
            e.len()
        );
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
