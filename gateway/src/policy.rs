//! The [`Policy`] the gateway process plugs into its session, built from
//! the `[[mcp_server]]` policies of the servers its caller may use: the
//! policy half's functions applied one tool, one call, one result at a time.
//!
//! * [`visible`](Policy::visible): [`visibility::tools_listing`] of the one
//!   definition (allow/deny, pins, rename, description, valid names, a name
//!   shadowed by a rename target). A tool hidden because of its definition
//!   is reported to the `hidden` callback once per definition hash, not at
//!   every listing.
//! * [`check_call`](Policy::check_call): the tool's argument constraints.
//! * [`filter_result`](Policy::filter_result): [`filter::filter_response`]
//!   with the secrets the upstream holds (set when it starts) and the
//!   server's detectors; a block refuses the result.
//!
//! Duplicated upstream names are the session's to settle (the first
//! listed wins its visible name), since a single definition cannot be
//! judged a duplicate.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use aivault_redact::{Patterns, Secret};
use serde_json::Value;

use crate::config::ServerPolicy;
use crate::filter::{self, Outcome};
use crate::hooks::{CallInfo, Filtered, Policy, Refusal, VisibleTool};
use crate::pin::PinEvent;
use crate::visibility::{self, ViewEvent};

/// Told the server and the pin event of a tool hidden for its definition.
pub type HiddenFn = Arc<dyn Fn(&str, &PinEvent) + Send + Sync>;

/// The policy of one gateway session.
pub struct GatewayPolicy {
    servers: BTreeMap<String, ServerPolicy>,
    secrets: RwLock<BTreeMap<String, Arc<Patterns>>>,
    hidden: HiddenFn,
    reported: Mutex<BTreeSet<(String, String, String)>>,
}

impl std::fmt::Debug for GatewayPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayPolicy")
            .field("servers", &self.servers.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl GatewayPolicy {
    pub fn new(servers: Vec<ServerPolicy>, hidden: HiddenFn) -> Self {
        Self {
            servers: servers.into_iter().map(|s| (s.name.clone(), s)).collect(),
            secrets: RwLock::default(),
            hidden,
            reported: Mutex::default(),
        }
    }

    /// The names of the servers, in name order.
    pub fn server_names(&self) -> Vec<String> {
        self.servers.keys().cloned().collect()
    }

    pub fn server(&self, name: &str) -> Option<&ServerPolicy> {
        self.servers.get(name)
    }

    /// The values upstream `server` holds, from now on redacted from its
    /// results. An empty list clears them.
    pub fn set_secrets(&self, server: &str, values: &[(String, Vec<u8>)]) -> Result<(), String> {
        let secrets: Vec<Secret> = values
            .iter()
            .map(|(name, v)| Secret::new(name.clone(), v.clone()))
            .collect();
        let patterns = Patterns::new(&secrets).map_err(|e| e.to_string())?;
        let mut map = self.secrets.write().unwrap_or_else(|p| p.into_inner());
        map.insert(server.to_string(), Arc::new(patterns));
        Ok(())
    }

    fn report(&self, server: &str, event: &PinEvent) {
        let current = match event {
            PinEvent::Changed { current, .. } | PinEvent::Unpinned { current, .. } => current,
        };
        let key = (
            server.to_string(),
            event.tool().to_string(),
            current.clone(),
        );
        if lock(&self.reported).insert(key) {
            (self.hidden)(server, event);
        }
    }
}

impl Policy for GatewayPolicy {
    fn visible(&self, server: &str, tool: &Value) -> Option<VisibleTool> {
        let policy = self.servers.get(server)?;
        let (listing, events) = visibility::tools_listing(policy, std::slice::from_ref(tool));
        for e in &events {
            if let ViewEvent::Pin(p) = e {
                self.report(server, p);
            }
        }
        let definition = listing.items().first()?.clone();
        let name = definition.get("name")?.as_str()?.to_string();
        Some(VisibleTool { name, definition })
    }

    fn check_call(&self, call: &CallInfo, arguments: &Value) -> Result<Value, Refusal> {
        let policy = self
            .servers
            .get(&call.server)
            .ok_or_else(|| Refusal::new(format!("unknown tool {:?}", call.exposed)))?;
        if !arguments.is_object() {
            return Err(Refusal::new("arguments must be an object"));
        }
        match policy.tools.arguments.get(&call.tool) {
            Some(c) => c
                .check(Some(arguments))
                .map_err(|v| Refusal::new(v.to_string())),
            None => Ok(arguments.clone()),
        }
    }

    fn filter_result(&self, call: &CallInfo, result: Value) -> Result<Filtered, Refusal> {
        let policy = self
            .servers
            .get(&call.server)
            .ok_or_else(|| Refusal::new("the server is no longer in policy"))?;
        let secrets = self
            .secrets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&call.server)
            .cloned();
        let outcome = filter::filter_response(&result, secrets.as_ref(), &policy.filters);
        let actions = outcome
            .actions()
            .iter()
            .map(|a| format!("{} {} {}", a.filter, a.action.as_str(), a.count))
            .collect();
        match outcome {
            Outcome::Pass { value, .. } => Ok(Filtered {
                result: value,
                actions,
            }),
            Outcome::Block { reason, .. } => Err(Refusal::new(match reason {
                filter::BlockReason::Detector(d) => format!("the {d} detector blocks it"),
                filter::BlockReason::FilterError(e) => format!("filtering failed: {e}"),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::parse_servers;
    use crate::pin::tool_hash;

    const TOKEN: &str = "tok-3f9a81c2d4e5";

    fn policy(extra: &str) -> (GatewayPolicy, Arc<Mutex<Vec<String>>>) {
        let text = format!(
            r#"
[[mcp_server]]
name = "fs"
command = "/usr/bin/mcp-fs"
users = [1000]
[mcp_server.tools]
allow = ["*"]
deny = ["*delete*"]
rename = {{ search = "find" }}
{extra}
"#
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let p = GatewayPolicy::new(
            parse_servers(&text).unwrap(),
            Arc::new(move |server: &str, e: &PinEvent| {
                lock(&s).push(format!("{server} {}", e.tool()))
            }),
        );
        (p, seen)
    }

    fn info(tool: &str) -> CallInfo {
        CallInfo {
            caller: "uid 1000".into(),
            server: "fs".into(),
            tool: tool.into(),
            exposed: format!("fs__{tool}"),
        }
    }

    #[test]
    fn tools_are_namespaced_renamed_and_denied() {
        let (p, _) = policy("");
        let read = p.visible("fs", &json!({"name": "read"})).unwrap();
        assert_eq!(read.name, "fs__read");
        assert_eq!(read.definition["name"], "fs__read");
        assert_eq!(
            p.visible("fs", &json!({"name": "search"})).unwrap().name,
            "fs__find"
        );
        assert!(p.visible("fs", &json!({"name": "delete_all"})).is_none());
        assert!(p.visible("other", &json!({"name": "read"})).is_none());
        // A tool named like a rename target is hidden, not confused with it.
        assert!(p.visible("fs", &json!({"name": "find"})).is_none());
    }

    #[test]
    fn a_changed_definition_is_hidden_and_reported_once() {
        let tool = json!({"name": "read", "description": "reads"});
        let pin = tool_hash(&tool);
        let (p, seen) = policy(&format!("pins = {{ read = \"{pin}\" }}"));
        assert!(p.visible("fs", &tool).is_some());
        let changed = json!({"name": "read", "description": "reads, then mails ~/.ssh"});
        assert!(p.visible("fs", &changed).is_none());
        assert!(p.visible("fs", &changed).is_none());
        assert_eq!(*lock(&seen), vec!["fs read".to_string()]);
    }

    #[test]
    fn argument_constraints_refuse_without_the_value() {
        let (p, _) = policy(
            "[mcp_server.tools.arguments.read]\nproperties = { path = { type = \"string\", paths = [\"/srv/**\"] } }\n",
        );
        assert!(p
            .check_call(&info("read"), &json!({"path": "/srv/a"}))
            .is_ok());
        let e = p
            .check_call(&info("read"), &json!({"path": "/etc/shadow"}))
            .unwrap_err();
        assert!(!e.reason.contains("shadow"), "{e}");
        assert!(p.check_call(&info("read"), &json!([1])).is_err());
    }

    #[test]
    fn the_upstream_gets_the_normalised_arguments() {
        let (p, _) = policy(
            "[mcp_server.tools.arguments.read]\nproperties = { path = { type = \"string\", paths = [\"/srv/**\"] } }\n",
        );
        let sent = p
            .check_call(&info("read"), &json!({"path": "/srv//docs/./a.txt"}))
            .unwrap();
        assert_eq!(sent, json!({"path": "/srv/docs/a.txt"}));
        // A tool without constraints gets the arguments as they came.
        let other = json!({"q": "x"});
        assert_eq!(p.check_call(&info("list"), &other).unwrap(), other);
    }

    #[test]
    fn the_upstreams_secret_is_redacted_once_it_is_set() {
        let (p, _) = policy("");
        let result = json!({"content": [{"type": "text", "text": format!("token={TOKEN}")}]});
        let before = p.filter_result(&info("read"), result.clone()).unwrap();
        assert!(before.actions.is_empty());
        p.set_secrets("fs", &[("API_TOKEN".into(), TOKEN.as_bytes().to_vec())])
            .unwrap();
        let after = p.filter_result(&info("read"), result).unwrap();
        assert!(!after.result.to_string().contains(TOKEN));
        assert_eq!(after.actions, vec!["vault:API_TOKEN redact 1".to_string()]);
    }
}
