//! The control channel between the daemon and a gateway process.
//!
//! A gateway process (`aivault-gateway`, a kind of the jail host) serves
//! **one agent connection** (one `vaultctl mcp-gateway`), under a fresh uid
//! of its own, never the caller's. The daemon starts it with one end of a
//! `SOCK_SEQPACKET` socketpair as descriptor 3; each datagram is one
//! postcard message, descriptors travel as `SCM_RIGHTS` on the datagram
//! that names them. The daemon never reads MCP: it hands over the agent's
//! connection and the upstreams' stdio, and audits what the gateway reports.
//!
//! 1. The daemon sends [`ToGateway::Init`]: the `[[mcp_server]]` tables the
//!    caller may use (policy text the gateway compiles with the same checks
//!    the daemon ran at load), the caller's label for the audit, private
//!    directories and limits. The gateway confines itself (landlock: no
//!    file outside its directories, no TCP at all; seccomp: no `exec`) and
//!    answers [`FromGateway::Confined`].
//! 2. [`ToGateway::Agent`], the agent's connection attached: the gateway
//!    serves MCP on it until it ends, then exits.
//! 3. On first use of a server the gateway asks [`FromGateway::StartUpstream`];
//!    the daemon starts it as a runner job under another fresh uid and
//!    answers [`ToGateway::UpstreamStarted`] with one end of a socketpair
//!    attached (the upstream's stdin and stdout are the other end) and the
//!    secret values the upstream holds, for the gateway's redactor only;
//!    or [`ToGateway::UpstreamRefused`]. [`FromGateway::StopUpstream`]
//!    stops it (so does the end of the session).
//!    A url server is not started: for each HTTP request to it the gateway
//!    asks [`FromGateway::OpenHttp`], and the daemon hands one end of a
//!    fresh socket pair to the caller's broker, exactly as if the caller
//!    had connected to the broker's endpoint, and the other to the gateway
//!    in [`ToGateway::HttpOpened`]. The broker checks the capability the
//!    server names, adds the credential and redacts the answer: the gateway
//!    never holds it.
//! 4. Every `tools/call` ends in [`FromGateway::Call`], every tool hidden
//!    because of its definition in [`FromGateway::ToolHidden`]: names,
//!    digests, hashes and counts, never a value.
//!
//! The daemon treats every field of [`FromGateway`] as untrusted input
//! bounded by [`MAX_CONTROL`] and the `MAX_*` limits below.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Enforcement, Limits, SecretBytes};

/// The largest control datagram either side sends or accepts.
pub const MAX_CONTROL: usize = 256 * 1024;

/// The descriptor the control socket is on in a gateway process.
pub const CONTROL_FD: i32 = 3;

/// Longest server, tool or filter name the daemon audits; longer ones are
/// refused as a protocol violation.
pub const MAX_NAME: usize = 128;

/// Most filter actions one call record may carry.
pub const MAX_ACTIONS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayInit {
    /// Who the agent is, as the daemon established it (`uid 1000`), for
    /// the session's own records.
    pub caller: String,
    /// `[[mcp_server]]` tables (TOML) of the servers this caller may use,
    /// as the policy files spell them.
    pub servers: String,
    /// Private directories (read-write), owned by the gateway's uid, 0700.
    pub home: PathBuf,
    pub tmp: PathBuf,
    pub limits: Limits,
    /// Refuse to serve unless every landlock feature asked for is enforced.
    pub require_full_landlock: bool,
    /// Pin mode: start this server, answer [`FromGateway::Pins`] with the
    /// pins of its tools as it lists them, and exit (no agent connection).
    pub pin: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToGateway {
    Init(GatewayInit),
    /// The agent's connection (attached): serve it, exit at its end.
    Agent,
    /// Upstream `server` asked for by `req` runs: its stdio is the
    /// attached socket. `upstream` names it in [`FromGateway::StopUpstream`];
    /// `secrets` are the values it holds, for redaction only.
    UpstreamStarted {
        req: u64,
        upstream: u64,
        server: String,
        secrets: Vec<(String, SecretBytes)>,
    },
    /// A connection to the caller's broker for url server `server`,
    /// asked for by `req` ([`FromGateway::OpenHttp`]), is the attached
    /// socket: the broker serves it as a connection of the agent's caller.
    HttpOpened {
        req: u64,
        server: String,
    },
    /// Upstream `server` could not be started, or no connection to the
    /// broker opened for it; `reason` holds no value.
    UpstreamRefused {
        req: u64,
        server: String,
        reason: String,
    },
    /// Stop serving and exit.
    Shutdown,
}

/// What became of a `tools/call` (mirrors the session's decision).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallDecision {
    Allowed,
    UnknownTool,
    Refused(String),
    ResultRefused(String),
    UpstreamError,
    UpstreamUnavailable,
    Cancelled,
}

/// One `tools/call`, as the audit records it: never an argument or a
/// result value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallAudit {
    /// `None` when the called name routed nowhere.
    pub server: Option<String>,
    /// The upstream's name for the tool (the called name when unrouted).
    pub tool: String,
    /// The name the agent called.
    pub exposed: String,
    /// Hex SHA-256 of the canonical arguments.
    pub argument_digest: String,
    pub decision: CallDecision,
    /// What the result filters did (`vault:NAME redact 2`, …).
    pub filter_actions: Vec<String>,
    pub duration_us: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// A tool hidden because of its definition (a pin that no longer matches,
/// or a required pin missing): hashes, never the definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolHidden {
    pub server: String,
    pub tool: String,
    /// `changed` or `unpinned`.
    pub reason: String,
    pub pinned: Option<String>,
    pub current: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromGateway {
    /// Confined as [`ToGateway::Init`] asked, with this enforcement; or why
    /// not (`Err`), after which the gateway exits.
    Confined(Result<Enforcement, String>),
    /// Start upstream `server` for this session.
    StartUpstream {
        req: u64,
        server: String,
    },
    /// One connection to the broker for url server `server` (one HTTP
    /// exchange): answered [`ToGateway::HttpOpened`] or
    /// [`ToGateway::UpstreamRefused`].
    OpenHttp {
        req: u64,
        server: String,
    },
    /// The gateway is done with this upstream: stop it.
    StopUpstream {
        upstream: u64,
    },
    Call(CallAudit),
    ToolHidden(ToolHidden),
    /// Pin mode's answer: `pins = { … }` TOML of the server's tools (names
    /// and hashes only), or why not.
    Pins(Result<String, String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_started_round_trips_and_hides_its_secrets_in_debug() {
        let msg = ToGateway::UpstreamStarted {
            req: 1,
            upstream: 9,
            server: "fs".into(),
            secrets: vec![("API_TOKEN".into(), SecretBytes::new(b"tok-123456".to_vec()))],
        };
        let bytes = postcard::to_stdvec(&msg).unwrap();
        let back: ToGateway = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, msg);
        assert!(!format!("{back:?}").contains("tok-123456"));
    }

    #[test]
    fn a_call_record_round_trips() {
        let msg = FromGateway::Call(CallAudit {
            server: Some("fs".into()),
            tool: "read".into(),
            exposed: "fs__read".into(),
            argument_digest: "ab".repeat(32),
            decision: CallDecision::Refused("argument path outside /srv".into()),
            filter_actions: vec!["vault:API_TOKEN redact 1".into()],
            duration_us: 1500,
            request_bytes: 40,
            response_bytes: 120,
        });
        let bytes = postcard::to_stdvec(&msg).unwrap();
        assert!(bytes.len() < MAX_CONTROL);
        assert_eq!(postcard::from_bytes::<FromGateway>(&bytes).unwrap(), msg);
    }
}
