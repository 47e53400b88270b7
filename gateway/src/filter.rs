//! The response filter: what an upstream returns (a `tools/call` result,
//! a `resources/read` or `prompts/get` result, an error object) on its way
//! to the agent.
//!
//! Every string in the value, object keys included, first goes through
//! the vault redactor for the secrets that upstream holds (`secrets.rs`,
//! always on), then through the detectors the server's policy turned on
//! (`detect.rs`). The [`Outcome`] is the filtered value, or a block; both
//! carry the [`FilterAction`]s taken, which name a filter and a count and
//! never the matched text. Any error while filtering blocks (fail closed).

use std::collections::BTreeMap;
use std::sync::Arc;

use aivault_redact::Patterns;
use serde::Serialize;
use serde_json::Value;

use crate::detect::{Action, DetectorSet};
use crate::secrets::redact_str;
use crate::walk::map_strings;

/// One filter's effect on one result, for the audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilterAction {
    /// A detector's name, or `vault:NAME` for a vault secret.
    pub filter: String,
    pub action: Action,
    /// Occurrences found.
    pub count: u64,
}

/// Why a result was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum BlockReason {
    /// A detector whose action is `block` found something.
    Detector(String),
    /// Filtering failed; the result is refused rather than passed
    /// unfiltered. The message names no content.
    FilterError(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass {
        value: Value,
        actions: Vec<FilterAction>,
    },
    Block {
        reason: BlockReason,
        actions: Vec<FilterAction>,
    },
}

impl Outcome {
    pub fn actions(&self) -> &[FilterAction] {
        match self {
            Outcome::Pass { actions, .. } | Outcome::Block { actions, .. } => actions,
        }
    }
}

/// Filters one upstream value. `secrets`: the upstream's own secrets,
/// `None` when it holds none.
pub fn filter_response(
    value: &Value,
    secrets: Option<&Arc<Patterns>>,
    detectors: &DetectorSet,
) -> Outcome {
    let mut vault: BTreeMap<String, u64> = BTreeMap::new();
    let mut found: BTreeMap<&'static str, (Action, u64)> = BTreeMap::new();
    let mut step = |s: &str| -> Result<Option<String>, String> {
        let redacted = match secrets {
            Some(p) if !p.is_empty() => redact_str(p, s, &mut vault)?,
            _ => None,
        };
        if detectors.is_empty() {
            return Ok(redacted);
        }
        let text = redacted.as_deref().unwrap_or(s);
        let scan = detectors.scan(text);
        for (name, (action, n)) in scan.found {
            found.entry(name).or_insert((action, 0)).1 += n;
        }
        Ok(scan.redacted.or(redacted))
    };
    let result = map_strings(value, &mut step);

    let mut actions: Vec<FilterAction> = vault
        .into_iter()
        .map(|(name, count)| FilterAction {
            filter: format!("vault:{name}"),
            action: Action::Redact,
            count,
        })
        .collect();
    actions.extend(found.iter().map(|(name, (action, count))| FilterAction {
        filter: (*name).to_string(),
        action: *action,
        count: *count,
    }));
    match result {
        Err(e) => Outcome::Block {
            reason: BlockReason::FilterError(e.to_string()),
            actions,
        },
        Ok(value) => match found.iter().find(|(_, (a, _))| *a == Action::Block) {
            Some((name, _)) => Outcome::Block {
                reason: BlockReason::Detector((*name).to_string()),
                actions,
            },
            None => Outcome::Pass { value, actions },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::RawFilters;
    use aivault_redact::Secret;
    use serde_json::json;

    const TOKEN: &str = "tok-3f9a81c2d4e5";

    fn detectors(toml_text: &str) -> DetectorSet {
        toml::from_str::<RawFilters>(toml_text)
            .expect("decodes")
            .check()
            .expect("compiles")
    }

    fn vault() -> Arc<Patterns> {
        Arc::new(Patterns::new(&[Secret::new("API_TOKEN", TOKEN)]).expect("compiles"))
    }

    fn ghp() -> String {
        format!("{}_{}", "ghp", "k".repeat(36))
    }

    fn result(text: &str) -> Value {
        json!({"content": [{"type": "text", "text": text}],
               "structuredContent": {"deep": [{"also": text}]}, "isError": false})
    }

    #[test]
    fn the_upstreams_secret_is_redacted_in_content_and_structured_content() {
        let out = filter_response(
            &result(&format!("echo {TOKEN}")),
            Some(&vault()),
            &DetectorSet::default(),
        );
        let Outcome::Pass { value, actions } = out else {
            panic!("blocked: {out:?}")
        };
        assert!(!value.to_string().contains(TOKEN));
        assert_eq!(
            value["structuredContent"]["deep"][0]["also"],
            "echo [REDACTED:API_TOKEN]"
        );
        assert_eq!(
            actions,
            [FilterAction {
                filter: "vault:API_TOKEN".into(),
                action: Action::Redact,
                count: 2
            }]
        );
    }

    #[test]
    fn a_block_detector_refuses_the_whole_result() {
        let set = detectors("credentials = \"block\"");
        let out = filter_response(&result(&format!("here: {}", ghp())), None, &set);
        assert_eq!(
            out,
            Outcome::Block {
                reason: BlockReason::Detector("github_token".into()),
                actions: vec![FilterAction {
                    filter: "github_token".into(),
                    action: Action::Block,
                    count: 2
                }],
            }
        );
    }

    #[test]
    fn redact_and_audit_detectors_pass_with_their_counts() {
        let set = detectors("credentials = \"redact\"\npii = \"audit\"");
        let text = format!("{} mail bob@example.com", ghp());
        let Outcome::Pass { value, actions } = filter_response(&result(&text), None, &set) else {
            panic!("blocked")
        };
        let s = value.to_string();
        assert!(!s.contains(&ghp()) && s.contains("bob@example.com"), "{s}");
        assert!(s.contains("[REDACTED:github_token]"));
        assert_eq!(actions.len(), 2);
        assert!(actions.contains(&FilterAction {
            filter: "email".into(),
            action: Action::Audit,
            count: 2
        }));
    }

    #[test]
    fn no_matched_text_appears_in_the_actions_or_reason() {
        let set = detectors("credentials = \"block\"\npii = \"redact\"");
        let text = format!("{TOKEN} {} carol@example.net", ghp());
        let out = filter_response(&result(&text), Some(&vault()), &set);
        let shown = format!("{:?}", (out.actions(), &out));
        let actions = format!("{:?}", out.actions());
        assert!(matches!(out, Outcome::Block { .. }), "{shown}");
        for secret in [TOKEN, &ghp(), "carol@example.net"] {
            assert!(!actions.contains(secret), "{actions}");
        }
    }

    #[test]
    fn any_filter_error_blocks() {
        // Deeper than the walker accepts: never passed unfiltered.
        let mut deep = json!(format!("{TOKEN}"));
        for _ in 0..200 {
            deep = json!({ "a": deep });
        }
        let out = filter_response(&deep, Some(&vault()), &DetectorSet::default());
        assert!(
            matches!(
                out,
                Outcome::Block {
                    reason: BlockReason::FilterError(_),
                    ..
                }
            ),
            "{out:?}"
        );
        // Two keys that redact to the same label.
        let v = json!({ "tok-3f9a81c2d4e5": 1, "[REDACTED:API_TOKEN]": 2 });
        let out = filter_response(&v, Some(&vault()), &DetectorSet::default());
        assert!(
            matches!(
                out,
                Outcome::Block {
                    reason: BlockReason::FilterError(_),
                    ..
                }
            ),
            "{out:?}"
        );
    }

    #[test]
    fn actions_and_reasons_serialise_for_the_audit() {
        let a = FilterAction {
            filter: "vault:API_TOKEN".into(),
            action: Action::Redact,
            count: 2,
        };
        assert_eq!(
            serde_json::to_value(&a).expect("serialises"),
            json!({"filter": "vault:API_TOKEN", "action": "redact", "count": 2})
        );
        assert_eq!(
            serde_json::to_value(BlockReason::Detector("jwt".into())).expect("serialises"),
            json!({"kind": "detector", "detail": "jwt"})
        );
    }

    #[test]
    fn a_one_mebibyte_result_passes_filtered() {
        let set = detectors("credentials = \"redact\"\npii = \"redact\"");
        let mut text = "lorem ipsum dolor sit amet, ".repeat((1 << 20) / 28);
        text.push_str(TOKEN);
        text.push(' ');
        text.push_str(&ghp());
        let out = filter_response(&result(&text), Some(&vault()), &set);
        let Outcome::Pass { value, .. } = out else {
            panic!("blocked")
        };
        let s = value["content"][0]["text"].as_str().expect("text");
        assert!(s.len() > 1 << 20);
        assert!(
            s.ends_with("[REDACTED:API_TOKEN] [REDACTED:github_token]"),
            "{}",
            &s[s.len() - 80..]
        );
    }

    #[test]
    fn clean_results_pass_unchanged() {
        let set = detectors("credentials = \"block\"\npii = \"block\"");
        let v = result("all quiet");
        assert_eq!(
            filter_response(&v, Some(&vault()), &set),
            Outcome::Pass {
                value: v.clone(),
                actions: vec![]
            }
        );
    }
}
