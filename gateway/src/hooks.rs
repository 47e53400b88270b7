//! Where the policy of what passes plugs into the session: [`Policy`]
//! decides which tools are visible and under which name, whether a call may
//! go out, and what of its result may come back; [`Audit`] receives one
//! [`CallRecord`] for every `tools/call`, whatever became of it. The
//! session calls nothing else: it routes, the policy decides.
//!
//! [`PassThrough`] lets everything pass under `server__tool` (tests, and
//! the shape a real policy starts from); [`NoAudit`] drops the records.

use std::time::Duration;

use serde_json::Value;

/// The separator of a namespaced tool name: `server__tool`.
pub const NAMESPACE_SEPARATOR: &str = "__";

/// The namespaced name the agent sees when no rename applies.
pub fn namespaced(server: &str, tool: &str) -> String {
    format!("{server}{NAMESPACE_SEPARATOR}{tool}")
}

/// A tool as the agent sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct VisibleTool {
    /// The name the agent lists and calls; the only name that routes.
    pub name: String,
    /// The definition listed (its `name` field is set to `name`).
    pub definition: Value,
}

/// One routed call, as the policy and the audit see it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallInfo {
    pub caller: String,
    pub server: String,
    /// The tool's name at the upstream.
    pub tool: String,
    /// The name the agent called.
    pub exposed: String,
}

/// Why the policy refused; the reason is shown to the agent and audited,
/// so it must never carry an argument's or a result's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    pub reason: String,
}

impl Refusal {
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

/// A result the policy let through, and what it did to it on the way
/// (redactions, detector hits), named for the audit without the values.
#[derive(Debug, Clone, PartialEq)]
pub struct Filtered {
    pub result: Value,
    pub actions: Vec<String>,
}

impl Filtered {
    pub fn unchanged(result: Value) -> Self {
        Self {
            result,
            actions: Vec::new(),
        }
    }
}

/// The filtering half of the gateway. Any error must refuse (fail closed).
pub trait Policy: Send + Sync {
    /// Whether `tool` (an upstream's definition, as received) is listed,
    /// and how. `None` hides it: it is neither listed nor callable.
    fn visible(&self, server: &str, tool: &Value) -> Option<VisibleTool>;
    /// Whether the call may reach the upstream with these arguments, and
    /// the arguments it receives (the checked, normalised ones: what was
    /// judged is what goes out).
    fn check_call(&self, call: &CallInfo, arguments: &Value) -> Result<Value, Refusal>;
    /// What of the upstream's result reaches the agent (tool errors come
    /// as results with `isError`, so they are filtered too).
    fn filter_result(&self, call: &CallInfo, result: Value) -> Result<Filtered, Refusal>;
}

/// Lists every tool as `server__tool`, passes every call and result.
#[derive(Debug, Clone, Copy, Default)]
pub struct PassThrough;

impl Policy for PassThrough {
    fn visible(&self, server: &str, tool: &Value) -> Option<VisibleTool> {
        let name = namespaced(server, tool.get("name")?.as_str()?);
        let mut definition = tool.clone();
        definition["name"] = Value::String(name.clone());
        Some(VisibleTool { name, definition })
    }
    fn check_call(&self, _: &CallInfo, arguments: &Value) -> Result<Value, Refusal> {
        Ok(arguments.clone())
    }
    fn filter_result(&self, _: &CallInfo, result: Value) -> Result<Filtered, Refusal> {
        Ok(Filtered::unchanged(result))
    }
}

/// What became of a `tools/call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Routed, answered, and the result passed the policy.
    Allowed,
    /// The name is not a visible tool (hidden, renamed away, or unknown).
    UnknownTool,
    /// `check_call` refused it; the upstream never saw it.
    Refused(String),
    /// `filter_result` refused the result; the agent got an error.
    ResultRefused(String),
    /// The upstream answered with an error (passed on as a tool error).
    UpstreamError,
    /// The upstream could not be started or ended during the call.
    UpstreamUnavailable,
    /// The agent cancelled the call (or disconnected) before the answer.
    Cancelled,
}

/// One audit record per `tools/call`. Arguments appear only as the digest
/// the session's digest function made of them.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    pub caller: String,
    /// `None` when the name routed nowhere.
    pub server: Option<String>,
    /// The upstream's name for the tool (the called name when unrouted).
    pub tool: String,
    pub exposed: String,
    pub argument_digest: String,
    pub decision: Decision,
    /// What the policy's result filter did (empty when nothing).
    pub filter_actions: Vec<String>,
    pub duration: Duration,
    /// Bytes of the agent's `params` and of the answer sent back.
    pub request_bytes: usize,
    pub response_bytes: usize,
}

/// Receives every call's record; must not block for long (it runs on the
/// call's task).
pub trait Audit: Send + Sync {
    fn record(&self, record: CallRecord);
}

#[derive(Debug, Clone, Copy, Default)]
pub struct NoAudit;

impl Audit for NoAudit {
    fn record(&self, _: CallRecord) {}
}

/// Makes the audit's digest of a call's arguments (never their values).
pub type DigestFn = std::sync::Arc<dyn Fn(&Value) -> String + Send + Sync>;
