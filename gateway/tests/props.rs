//! Property tests for the gateway's pure policy functions.

use std::sync::Arc;

use aivault_gateway::args::normalise_path;
use aivault_gateway::detect::{DetectorSet, RawFilters};
use aivault_gateway::digest::canonical_json;
use aivault_gateway::filter::{filter_response, Outcome};
use aivault_gateway::glob::Glob;
use aivault_redact::{Patterns, Secret};
use proptest::prelude::*;
use serde_json::Value;

/// A slow, obviously right matcher to compare the glob against.
fn reference(p: &[char], t: &[char]) -> bool {
    match p {
        [] => t.is_empty(),
        ['*', '*', rest @ ..] => (0..=t.len()).any(|i| reference(rest, &t[i..])),
        ['*', rest @ ..] => (0..=t.len())
            .take_while(|&i| i == 0 || t[i - 1] != '/')
            .any(|i| reference(rest, &t[i..])),
        ['?', rest @ ..] => !t.is_empty() && t[0] != '/' && reference(rest, &t[1..]),
        [c, rest @ ..] => !t.is_empty() && t[0] == *c && reference(rest, &t[1..]),
    }
}

fn detectors(text: &str) -> DetectorSet {
    toml::from_str::<RawFilters>(text)
        .expect("decodes")
        .check()
        .expect("compiles")
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        "[a-z ]{0,10}tok-3f9a81c2d4e5[a-z ]{0,10}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn glob_agrees_with_the_reference(p in "(a|b|/|\\?|\\*|\\*\\*){1,8}", t in "[ab/]{0,10}") {
        // `***` is refused; skip those patterns rather than compare them.
        if let Ok(g) = Glob::new(&p) {
            let pc: Vec<char> = p.chars().collect();
            let tc: Vec<char> = t.chars().collect();
            prop_assert_eq!(g.matches(&t), reference(&pc, &tc), "{} vs {}", p, t);
        }
    }

    #[test]
    fn normalised_paths_never_climb(raw in "[a./]{0,30}") {
        if let Ok(p) = normalise_path(&raw) {
            prop_assert!(p.starts_with('/'));
            prop_assert!(p == "/" || !p.ends_with('/'));
            for seg in p.split('/').skip(1) {
                prop_assert!(seg != ".." && seg != ".");
                prop_assert!(!seg.is_empty() || p == "/");
            }
        } else {
            prop_assert!(!raw.starts_with('/') || raw.split('/').any(|s| s == ".."));
        }
    }

    #[test]
    fn a_redacted_token_never_survives(
        before in "[a-z ,.:]{0,40}",
        after in "[a-z ,.:]{0,40}",
        body in "[A-Za-z0-9]{36,60}",
    ) {
        let set = detectors("credentials = \"redact\"");
        let token = format!("ghp_{body}");
        let text = format!("{before} {token} {after}");
        let scan = set.scan(&text);
        let out = scan.redacted.unwrap_or_default();
        prop_assert!(!out.contains(&token), "{}", out);
        prop_assert!(scan.found.contains_key("github_token"));
    }

    #[test]
    fn canonical_json_reads_back_as_the_same_value(v in json_value()) {
        let text = canonical_json(&v);
        let back: Value = serde_json::from_str(&text).expect("canonical json parses");
        prop_assert_eq!(&back, &v);
        prop_assert_eq!(canonical_json(&back), text);
    }

    #[test]
    fn what_passes_never_holds_the_upstreams_secret(v in json_value()) {
        let vault = Arc::new(Patterns::new(&[Secret::new("API_TOKEN", "tok-3f9a81c2d4e5")]).expect("compiles"));
        let set = detectors("pii = \"redact\"");
        match filter_response(&v, Some(&vault), &set) {
            Outcome::Pass { value, actions } => {
                prop_assert!(!value.to_string().contains("tok-3f9a81c2d4e5"));
                let shown = format!("{actions:?}");
                prop_assert!(!shown.contains("tok-3f9a81c2d4e5"));
            }
            // Blocks only for a reason a filter gives (e.g. two keys
            // redacted alike); never a panic.
            Outcome::Block { .. } => {}
        }
    }
}
