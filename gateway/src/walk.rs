//! Rebuilding a JSON value with every string (object keys included) passed
//! through a function: what the response filters use to reach content
//! text, `structuredContent` and anything nested.

use serde_json::{Map, Value};
use thiserror::Error;

/// Deeper values are refused (`serde_json` itself stops parsing at 128).
pub const MAX_DEPTH: usize = 128;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WalkError {
    #[error("value nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("two object keys became the same after filtering")]
    KeyCollision,
    #[error("{0}")]
    Filter(String),
}

/// `f` returns `Some(new)` to replace a string, `None` to keep it.
pub fn map_strings(
    value: &Value,
    f: &mut dyn FnMut(&str) -> Result<Option<String>, String>,
) -> Result<Value, WalkError> {
    walk(value, f, 0)
}

fn walk(
    value: &Value,
    f: &mut dyn FnMut(&str) -> Result<Option<String>, String>,
    depth: usize,
) -> Result<Value, WalkError> {
    if depth > MAX_DEPTH {
        return Err(WalkError::TooDeep);
    }
    Ok(match value {
        Value::String(s) => match f(s).map_err(WalkError::Filter)? {
            Some(new) => Value::String(new),
            None => value.clone(),
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| walk(v, f, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = f(k)
                    .map_err(WalkError::Filter)?
                    .unwrap_or_else(|| k.clone());
                let v = walk(v, f, depth + 1)?;
                if out.insert(key, v).is_some() {
                    return Err(WalkError::KeyCollision);
                }
            }
            Value::Object(out)
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => value.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn upper(s: &str) -> Result<Option<String>, String> {
        Ok(s.contains('x').then(|| s.to_uppercase()))
    }

    #[test]
    fn every_string_and_key_is_visited() {
        let v = json!({"x": ["ax", {"k": "x"}], "n": 1, "s": "keep"});
        let out = map_strings(&v, &mut upper).expect("walks");
        assert_eq!(out, json!({"X": ["AX", {"k": "X"}], "n": 1, "s": "keep"}));
    }

    #[test]
    fn depth_collisions_and_errors_fail() {
        let mut deep = json!("x");
        for _ in 0..=MAX_DEPTH {
            deep = json!([deep]);
        }
        assert_eq!(map_strings(&deep, &mut upper), Err(WalkError::TooDeep));
        let v = json!({"ax": 1, "AX": 2});
        assert_eq!(map_strings(&v, &mut upper), Err(WalkError::KeyCollision));
        let mut bad = |_: &str| Err("broken".to_string());
        assert!(matches!(
            map_strings(&json!(["a"]), &mut bad),
            Err(WalkError::Filter(_))
        ));
    }
}
