//! Visible names of upstream items (`server__tool`) and the allow/deny
//! filters over upstream names: shared by the policy schema (load-time
//! checks) and the visibility of each listing.

use crate::glob::Glob;

/// Between the server's name and the tool's.
pub const SEPARATOR: &str = "__";
/// Longest visible name (the limit common MCP hosts put on tool names).
pub const MAX_TOOL_NAME: usize = 64;

/// `[A-Za-z0-9_-]{1,64}`: accepted by every common MCP host.
pub fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOOL_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Allow and deny globs; deny wins, and no allow glob means nothing passes.
#[derive(Debug, Clone, Default)]
pub struct NameFilter {
    allow: Vec<Glob>,
    deny: Vec<Glob>,
}

impl NameFilter {
    pub fn new(allow: Vec<Glob>, deny: Vec<Glob>) -> NameFilter {
        NameFilter { allow, deny }
    }

    pub fn permits(&self, name: &str) -> bool {
        !self.deny.iter().any(|g| g.matches(name)) && self.allow.iter().any(|g| g.matches(name))
    }
}
