//! One `tools/call` from the agent: which upstream tool it reaches, with
//! which arguments, or why it is refused; and the argument digest its audit
//! record carries either way.
//!
//! [`check_call`] is the whole decision before a call leaves the gateway:
//! the called name must be visible (`visibility.rs`), `arguments` must be
//! an object (or absent), and the tool's argument constraints must hold
//! (`args.rs`). The upstream receives [`CallPlan::upstream_params`]: its own
//! tool name, the checked arguments and the agent's `_meta` (progress
//! token), nothing else.

use serde_json::{Map, Value};
use thiserror::Error;

use crate::args::Violation;
use crate::config::ServerPolicy;
use crate::digest::argument_digest;
use crate::visibility::{Catalog, Refused};

/// Longest called name an audit record carries (the agent chooses it).
pub const MAX_AUDITED_NAME: usize = 128;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CallRefused {
    #[error("tools/call params must be an object with a string name")]
    Malformed,
    #[error(transparent)]
    Unknown(#[from] Refused),
    #[error("arguments must be an object")]
    ArgumentsNotObject,
    #[error(transparent)]
    Arguments(#[from] Violation),
}

/// Where an allowed call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallPlan {
    pub server: String,
    /// The name the upstream knows the tool by.
    pub upstream_tool: String,
    /// As checked (path arguments normalised).
    pub arguments: Value,
}

impl CallPlan {
    /// The `params` of the request sent upstream.
    pub fn upstream_params(&self, agent_params: &Value) -> Value {
        let mut p = Map::new();
        p.insert("name".into(), Value::String(self.upstream_tool.clone()));
        p.insert("arguments".into(), self.arguments.clone());
        if let Some(meta) = agent_params.get("_meta") {
            p.insert("_meta".into(), meta.clone());
        }
        Value::Object(p)
    }
}

/// The decision and what the audit record needs from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallCheck {
    /// The name as called, cut to [`MAX_AUDITED_NAME`] characters.
    pub called: String,
    /// Hex SHA-256 of the canonical arguments as the agent sent them.
    pub argument_digest: String,
    pub verdict: Result<CallPlan, CallRefused>,
}

/// Decides one `tools/call`; `policy_of` finds a server's policy by name.
pub fn check_call<'p>(
    catalog: &Catalog,
    policy_of: impl Fn(&str) -> Option<&'p ServerPolicy>,
    params: &Value,
) -> CallCheck {
    let name = params.get("name").and_then(Value::as_str);
    let arguments = params.get("arguments");
    let called = name
        .unwrap_or_default()
        .chars()
        .take(MAX_AUDITED_NAME)
        .collect();
    let verdict = decide(catalog, policy_of, name, arguments);
    CallCheck {
        called,
        argument_digest: argument_digest(arguments),
        verdict,
    }
}

fn decide<'p>(
    catalog: &Catalog,
    policy_of: impl Fn(&str) -> Option<&'p ServerPolicy>,
    name: Option<&str>,
    arguments: Option<&Value>,
) -> Result<CallPlan, CallRefused> {
    let name = name.ok_or(CallRefused::Malformed)?;
    let route = catalog.route(name)?;
    // A route whose server has no policy any more is as unknown as any.
    let policy = policy_of(&route.server).ok_or_else(|| Refused::Unknown(name.into()))?;
    if arguments.is_some_and(|a| !a.is_object()) {
        return Err(CallRefused::ArgumentsNotObject);
    }
    let arguments = match policy.tools.arguments.get(&route.upstream) {
        Some(c) => c.check(arguments)?,
        None => arguments
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new())),
    };
    Ok(CallPlan {
        server: route.server.clone(),
        upstream_tool: route.upstream.clone(),
        arguments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_servers;
    use crate::visibility::tools_listing;
    use serde_json::json;

    fn setup() -> (ServerPolicy, Catalog) {
        let p = parse_servers(
            r#"
[[mcp_server]]
name = "fs"
command = "/usr/bin/mcp-fs"
[mcp_server.tools]
allow = ["*"]
deny = ["write_*"]
rename = { read_text_file = "read" }
[mcp_server.tools.arguments.read_text_file]
type = "object"
required = ["path"]
properties = { path = { type = "string", paths = ["/srv/**"] } }
"#,
        )
        .expect("valid")
        .remove(0);
        let tools: Vec<Value> = ["read_text_file", "write_file", "list"]
            .iter()
            .map(|n| json!({"name": n, "inputSchema": {"type": "object"}}))
            .collect();
        let (l, _) = tools_listing(&p, &tools);
        (p, Catalog::new([l]))
    }

    fn call(params: Value) -> CallCheck {
        let (p, c) = setup();
        check_call(&c, |s| (s == "fs").then_some(&p), &params)
    }

    #[test]
    fn an_allowed_call_is_routed_with_checked_arguments_and_meta() {
        let params = json!({"name": "fs__read", "arguments": {"path": "/srv/./a"},
                            "_meta": {"progressToken": 7}, "extra": 1});
        let c = call(params.clone());
        let plan = c.verdict.expect("allowed");
        assert_eq!(plan.server, "fs");
        assert_eq!(
            plan.upstream_params(&params),
            json!({"name": "read_text_file", "arguments": {"path": "/srv/a"},
                   "_meta": {"progressToken": 7}})
        );
        assert_eq!(
            c.argument_digest,
            argument_digest(Some(&json!({"path": "/srv/./a"})))
        );
    }

    #[test]
    fn hidden_renamed_away_and_bare_names_are_refused() {
        for name in [
            "fs__write_file",
            "fs__read_text_file",
            "read_text_file",
            "read",
            "x__list",
        ] {
            let c = call(json!({"name": name, "arguments": {}}));
            assert!(matches!(c.verdict, Err(CallRefused::Unknown(_))), "{name}");
            assert_eq!(c.called, name);
        }
    }

    #[test]
    fn argument_violations_and_shapes_are_refused() {
        let c = call(json!({"name": "fs__read", "arguments": {"path": "/srv/../etc/shadow"}}));
        assert!(matches!(c.verdict, Err(CallRefused::Arguments(ref v)) if v.argument == "path"));
        assert!(!format!("{:?}", c.verdict).contains("shadow"));
        let c = call(json!({"name": "fs__list", "arguments": [1]}));
        assert_eq!(c.verdict, Err(CallRefused::ArgumentsNotObject));
        let c = call(json!({"arguments": {}}));
        assert_eq!(c.verdict, Err(CallRefused::Malformed));
        let c = call(json!({"name": "fs__list"}));
        assert_eq!(c.verdict.expect("allowed").arguments, json!({}));
    }

    #[test]
    fn a_route_without_a_policy_is_refused() {
        let (_, c) = setup();
        let r = check_call(&c, |_| None, &json!({"name": "fs__list"}));
        assert!(matches!(r.verdict, Err(CallRefused::Unknown(_))));
    }

    #[test]
    fn overlong_called_names_are_cut_for_the_audit() {
        let c = call(json!({"name": "n".repeat(1000)}));
        assert_eq!(c.called.len(), MAX_AUDITED_NAME);
    }
}
