//! Constraints on a tool's arguments, checked before a call reaches the
//! upstream.
//!
//! Policy writes a JSON-schema subset per tool (`[mcp_server.tools.
//! arguments.<tool>]`): `type`, `enum`, `const`, `pattern` (a regular
//! expression searched in the string, as JSON Schema means it), `minLength`,
//! `maxLength`, `minimum`, `maximum`, `required`, `properties`,
//! `additionalProperties = false`, `items`, `maxItems`, plus one keyword of
//! its own: `paths`, globs a path-like string must match. A path is
//! normalised first (`.` and repeated `/` dropped), must be absolute, and
//! is refused if any segment is `..`; the normalised form is what the
//! upstream receives. Any other keyword is refused when the policy loads.
//!
//! A [`Violation`] names the argument (`path`, `files[2]`) and the rule it
//! broke, never the value.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::glob::{compile_all, Glob};

/// Compiled size limit for one `pattern`.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// `type = "string"` or `type = ["string", "null"]`.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum RawType {
    One(String),
    Many(Vec<String>),
}

/// A schema as policy writes it.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSchema {
    /// For the reader of the policy; not checked.
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub ty: Option<RawType>,
    #[serde(rename = "enum")]
    pub enum_values: Option<Vec<Value>>,
    #[serde(rename = "const")]
    pub const_value: Option<Value>,
    pub pattern: Option<String>,
    #[serde(rename = "minLength")]
    pub min_length: Option<u64>,
    #[serde(rename = "maxLength")]
    pub max_length: Option<u64>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    #[serde(default)]
    pub required: Vec<String>,
    #[serde(default)]
    pub properties: BTreeMap<String, RawSchema>,
    #[serde(rename = "additionalProperties")]
    pub additional_properties: Option<bool>,
    pub items: Option<Box<RawSchema>>,
    #[serde(rename = "maxItems")]
    pub max_items: Option<u64>,
    pub paths: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Number,
    Integer,
    Boolean,
    Object,
    Array,
    Null,
}

impl Kind {
    fn parse(s: &str) -> Result<Kind, String> {
        Ok(match s {
            "string" => Kind::String,
            "number" => Kind::Number,
            "integer" => Kind::Integer,
            "boolean" => Kind::Boolean,
            "object" => Kind::Object,
            "array" => Kind::Array,
            "null" => Kind::Null,
            _ => return Err(format!("unknown type {s:?}")),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Number => "number",
            Kind::Integer => "integer",
            Kind::Boolean => "boolean",
            Kind::Object => "object",
            Kind::Array => "array",
            Kind::Null => "null",
        }
    }

    fn admits(self, v: &Value) -> bool {
        match (self, v) {
            (Kind::String, Value::String(_))
            | (Kind::Number, Value::Number(_))
            | (Kind::Boolean, Value::Bool(_))
            | (Kind::Object, Value::Object(_))
            | (Kind::Array, Value::Array(_))
            | (Kind::Null, Value::Null) => true,
            (Kind::Integer, Value::Number(n)) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
struct Node {
    kinds: Option<Vec<Kind>>,
    enum_values: Option<Vec<Value>>,
    const_value: Option<Value>,
    pattern: Option<Regex>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    required: Vec<String>,
    properties: BTreeMap<String, Node>,
    closed: bool,
    items: Option<Box<Node>>,
    max_items: Option<u64>,
    paths: Option<Vec<Glob>>,
}

/// One tool's compiled constraints.
#[derive(Debug, Clone)]
pub struct ArgConstraints {
    root: Node,
}

/// An argument broke a constraint. Carries the argument's name, never its
/// value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `arguments` for the whole object, else e.g. `path` or `files[2]`.
    pub argument: String,
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "argument {}: {}", self.argument, self.reason)
    }
}

impl std::error::Error for Violation {}

fn compile(raw: &RawSchema, at: &str) -> Result<Node, String> {
    let err = |e: String| {
        if at.is_empty() {
            e
        } else {
            format!("{at}: {e}")
        }
    };
    let kinds = match &raw.ty {
        None => None,
        Some(RawType::One(t)) => Some(vec![Kind::parse(t).map_err(err)?]),
        Some(RawType::Many(ts)) => Some(
            ts.iter()
                .map(|t| Kind::parse(t))
                .collect::<Result<_, _>>()
                .map_err(err)?,
        ),
    };
    let pattern = match &raw.pattern {
        None => None,
        Some(p) => Some(
            RegexBuilder::new(p)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| err(format!("pattern: {e}")))?,
        ),
    };
    let paths = match &raw.paths {
        None => None,
        Some(ps) => {
            if ps.iter().any(|p| !p.starts_with('/')) {
                return Err(err("paths globs must be absolute".into()));
            }
            Some(compile_all(ps).map_err(|e| err(format!("paths: {e}")))?)
        }
    };
    if let (Some(lo), Some(hi)) = (raw.minimum, raw.maximum) {
        if lo > hi {
            return Err(err("minimum is above maximum".into()));
        }
    }
    let mut properties = BTreeMap::new();
    for (name, sub) in &raw.properties {
        let sub_at = if at.is_empty() {
            name.clone()
        } else {
            format!("{at}.{name}")
        };
        properties.insert(name.clone(), compile(sub, &sub_at)?);
    }
    let items = match &raw.items {
        None => None,
        Some(sub) => Some(Box::new(compile(sub, &format!("{at}[]"))?)),
    };
    Ok(Node {
        kinds,
        enum_values: raw.enum_values.clone(),
        const_value: raw.const_value.clone(),
        pattern,
        min_length: raw.min_length,
        max_length: raw.max_length,
        minimum: raw.minimum,
        maximum: raw.maximum,
        required: raw.required.clone(),
        properties,
        closed: raw.additional_properties == Some(false),
        items,
        max_items: raw.max_items,
        paths,
    })
}

/// `/a/./b//c` → `/a/b/c`; relative paths and `..` are refused.
pub fn normalise_path(p: &str) -> Result<String, &'static str> {
    if p.contains('\0') {
        return Err("must not contain a NUL byte");
    }
    if !p.starts_with('/') {
        return Err("must be an absolute path");
    }
    let mut segments = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err("must not contain .."),
            s => segments.push(s),
        }
    }
    Ok(format!("/{}", segments.join("/")))
}

impl ArgConstraints {
    pub fn compile(raw: &RawSchema) -> Result<ArgConstraints, String> {
        Ok(ArgConstraints {
            root: compile(raw, "")?,
        })
    }

    /// Checks a call's `arguments` (absent means `{}`) and returns them as
    /// the upstream should receive them (path arguments normalised).
    pub fn check(&self, arguments: Option<&Value>) -> Result<Value, Violation> {
        let mut value = arguments
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new()));
        check_node(&self.root, &mut value, "arguments")?;
        Ok(value)
    }
}

fn child(at: &str, name: &str) -> String {
    if at == "arguments" {
        name.to_string()
    } else {
        format!("{at}.{name}")
    }
}

fn check_node(node: &Node, v: &mut Value, at: &str) -> Result<(), Violation> {
    let fail = |reason: String| Violation {
        argument: at.to_string(),
        reason,
    };
    if let Some(kinds) = &node.kinds {
        if !kinds.iter().any(|k| k.admits(v)) {
            let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
            return Err(fail(format!("must be of type {}", names.join(" or "))));
        }
    }
    if let Some(c) = &node.const_value {
        if v != c {
            return Err(fail("is not the one allowed value".into()));
        }
    }
    if let Some(values) = &node.enum_values {
        if !values.contains(v) {
            return Err(fail("is not one of the allowed values".into()));
        }
    }
    match v {
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if node.max_length.is_some_and(|m| len > m) {
                return Err(fail(format!(
                    "is longer than {} characters",
                    node.max_length.unwrap_or_default()
                )));
            }
            if node.min_length.is_some_and(|m| len < m) {
                return Err(fail(format!(
                    "is shorter than {} characters",
                    node.min_length.unwrap_or_default()
                )));
            }
            if let Some(re) = &node.pattern {
                if !re.is_match(s) {
                    return Err(fail("does not match the required pattern".into()));
                }
            }
            if let Some(globs) = &node.paths {
                let norm = normalise_path(s).map_err(|r| fail(r.into()))?;
                if !globs.iter().any(|g| g.matches(&norm)) {
                    return Err(fail("is outside the allowed paths".into()));
                }
                *s = norm;
            }
        }
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            // NaN compares as neither: refused.
            if node
                .minimum
                .is_some_and(|m| matches!(f.partial_cmp(&m), None | Some(Ordering::Less)))
            {
                return Err(fail("is below the minimum".into()));
            }
            if node
                .maximum
                .is_some_and(|m| matches!(f.partial_cmp(&m), None | Some(Ordering::Greater)))
            {
                return Err(fail("is above the maximum".into()));
            }
        }
        Value::Object(map) => {
            for name in &node.required {
                if !map.contains_key(name) {
                    return Err(Violation {
                        argument: child(at, name),
                        reason: "is required".into(),
                    });
                }
            }
            for (name, sub) in map.iter_mut() {
                match node.properties.get(name) {
                    Some(n) => check_node(n, sub, &child(at, name))?,
                    None if node.closed => {
                        return Err(Violation {
                            argument: child(at, &format!("{name:?}")),
                            reason: "is not an accepted argument".into(),
                        })
                    }
                    None => {}
                }
            }
        }
        Value::Array(items) => {
            if node.max_items.is_some_and(|m| items.len() as u64 > m) {
                return Err(fail(format!(
                    "has more than {} items",
                    node.max_items.unwrap_or_default()
                )));
            }
            if let Some(n) = &node.items {
                for (i, item) in items.iter_mut().enumerate() {
                    check_node(n, item, &format!("{at}[{i}]"))?;
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn constraints(toml_text: &str) -> ArgConstraints {
        let raw: RawSchema = toml::from_str(toml_text).expect("valid schema");
        ArgConstraints::compile(&raw).expect("compiles")
    }

    fn fs() -> ArgConstraints {
        constraints(
            r#"
type = "object"
required = ["path"]
additionalProperties = false
[properties.path]
type = "string"
paths = ["/srv/docs/**"]
[properties.mode]
enum = ["text", "base64"]
[properties.lines]
type = "integer"
minimum = 1
maximum = 1000
[properties.files]
type = "array"
maxItems = 2
items = { type = "string", paths = ["/srv/docs/**"] }
[properties.query]
type = "string"
maxLength = 8
pattern = "^[a-z]+$"
"#,
        )
    }

    fn violation(c: &ArgConstraints, args: Value) -> Violation {
        c.check(Some(&args)).expect_err("violates")
    }

    #[test]
    fn accepted_arguments_pass_with_paths_normalised() {
        let out = fs()
            .check(Some(
                &json!({"path": "/srv//docs/./a.txt", "mode": "text", "lines": 10}),
            ))
            .expect("passes");
        assert_eq!(out["path"], "/srv/docs/a.txt");
    }

    #[test]
    fn path_traversal_and_relative_paths_are_refused() {
        let c = fs();
        for (p, why) in [
            ("/srv/docs/../../etc/passwd", "must not contain .."),
            ("/srv/docs/..", "must not contain .."),
            ("srv/docs/a", "must be an absolute path"),
            ("/etc/passwd", "is outside the allowed paths"),
            ("/srv/docsx/a", "is outside the allowed paths"),
            ("/srv/docs/a\0b", "must not contain a NUL byte"),
        ] {
            let v = violation(&c, json!({ "path": p }));
            assert_eq!(v.argument, "path", "{p}");
            assert_eq!(v.reason, why, "{p}");
        }
        let v = violation(
            &c,
            json!({"path": "/srv/docs/a", "files": ["/srv/docs/b", "/tmp/x"]}),
        );
        assert_eq!(v.argument, "files[1]");
    }

    #[test]
    fn each_schema_keyword_is_enforced() {
        let c = fs();
        let base = |extra: Value| {
            let mut v = json!({"path": "/srv/docs/a"});
            for (k, x) in extra.as_object().expect("object") {
                v[k] = x.clone();
            }
            v
        };
        let cases = [
            (json!({}), "path", "is required", true),
            (
                base(json!({"mode": "shell"})),
                "mode",
                "is not one of the allowed values",
                false,
            ),
            (
                base(json!({"lines": 0})),
                "lines",
                "is below the minimum",
                false,
            ),
            (
                base(json!({"lines": 1001})),
                "lines",
                "is above the maximum",
                false,
            ),
            (
                base(json!({"lines": 1.5})),
                "lines",
                "must be of type integer",
                false,
            ),
            (
                base(json!({"query": "abcdefghi"})),
                "query",
                "is longer than 8 characters",
                false,
            ),
            (
                base(json!({"query": "ABC"})),
                "query",
                "does not match the required pattern",
                false,
            ),
            (
                base(json!({"files": ["/srv/docs/a", "/srv/docs/b", "/srv/docs/c"]})),
                "files",
                "has more than 2 items",
                false,
            ),
            (
                base(json!({"extra": 1})),
                "\"extra\"",
                "is not an accepted argument",
                false,
            ),
        ];
        for (args, arg, reason, _) in cases {
            let v = violation(&c, args.clone());
            assert_eq!(
                (v.argument.as_str(), v.reason.as_str()),
                (arg, reason),
                "{args}"
            );
        }
        let v = c.check(Some(&json!("not an object"))).expect_err("type");
        assert_eq!(v.argument, "arguments");
        // Absent arguments are `{}`: the required one is missing.
        assert_eq!(c.check(None).expect_err("required").argument, "path");
    }

    #[test]
    fn const_and_nullable_types() {
        let c = constraints(
            "type = \"object\"\nproperties = { v = { const = 3 }, n = { type = [\"string\", \"null\"] } }",
        );
        assert!(c.check(Some(&json!({"v": 3, "n": null}))).is_ok());
        assert_eq!(
            violation(&c, json!({"v": 4})).reason,
            "is not the one allowed value"
        );
        assert_eq!(
            violation(&c, json!({"n": 1})).reason,
            "must be of type string or null"
        );
    }

    #[test]
    fn violations_never_carry_the_value() {
        let c = fs();
        let secret = "/srv/docs/../sk-live-0123456789abcdef";
        let v = violation(&c, json!({"path": secret}));
        assert!(!v.to_string().contains("sk-live"), "{v}");
        let v = violation(&c, json!({"path": "/srv/docs/a", "query": "sk-LIVE"}));
        assert!(!v.to_string().contains("LIVE"), "{v}");
    }

    #[test]
    fn bad_schemas_are_refused_at_load() {
        for (text, needle) in [
            ("type = \"str\"", "unknown type"),
            ("pattern = \"(\"", "pattern"),
            ("paths = [\"relative/**\"]", "absolute"),
            ("minimum = 5\nmaximum = 1", "minimum"),
            ("properties = { p = { paths = [\"/a[\"] } }", "p: paths"),
        ] {
            let raw: RawSchema = toml::from_str(text).expect("decodes");
            let e = ArgConstraints::compile(&raw).expect_err(text);
            assert!(e.contains(needle), "{text}: {e}");
        }
        assert!(toml::from_str::<RawSchema>("format = \"uri\"").is_err());
    }
}
