//! The MCP gateway (issue: "MCP gateway"): upstream MCP servers, each a
//! jailed process under a fresh uid of its own with its own secrets, behind
//! one filtered and audited `vaultctl mcp`.
//!
//! Two halves, one idea per module:
//! * the **policy of what passes** as pure functions over JSON values:
//!   which tools are visible and under which name, pinned tool definitions
//!   (a changed definition hides the tool), argument constraints, and the
//!   response filters (the vault redactor for the upstream's secrets,
//!   credential and PII detectors);
//! * the **session**: JSON-RPC with upstreams over their stdio, the
//!   aggregated `tools/list`, calls routed by namespace, concurrency,
//!   cancellation and progress forwarded, `ping` always answered.
//!
//! The session half: [`jsonrpc`] (bounded newline framing, [`jsonrpc::Outbox`]),
//! [`upstream`] (the MCP client of one server, [`upstream::Upstream`]),
//! [`pool`] (lazy start, restart with backoff, idle stop through a
//! [`pool::Spawner`]), [`http`] and [`sse`] (streamable-HTTP upstreams,
//! reached through the broker, bridged to the same byte streams), [`session`] (the aggregating server,
//! [`session::serve`]), and [`hooks`] (the [`hooks::Policy`] and
//! [`hooks::Audit`] the other half plugs in).
//!
//! Nothing here is root: the gateway runs as a jailed process, never as
//! the caller and never inside the root daemon, which does not parse MCP.
#![forbid(unsafe_code)]

// The policy of what passes (`docs/mcp-gateway.md`).
pub mod args;
pub mod call;
pub mod config;
pub mod detect;
pub mod digest;
pub mod filter;
pub mod glob;
pub mod naming;
pub mod pin;
pub mod policy;
pub mod secrets;
pub mod visibility;
pub mod walk;

// The session (`docs/mcp-gateway.md`, "The session").
pub mod hooks;
pub mod http;
pub mod jsonrpc;
pub mod pool;
pub mod session;
pub mod sse;
pub mod upstream;
