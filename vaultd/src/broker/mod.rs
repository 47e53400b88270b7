//! The daemon's side of the HTTP capability broker (docs/broker.md).
//!
//! The daemon never parses HTTP. It accepts connections on the local
//! endpoint (a Unix socket beside its own, and loopback TCP), learns the
//! caller's uid from the kernel (`SO_PEERCRED`; for TCP the kernel's socket
//! table), and hands each connection to the broker process serving that
//! uid: one `aivault-broker` per caller uid, a kind of the jail host under a
//! fresh uid, started on first use and stopped when idle or when the policy
//! changes. Over the control channel (`aivault_proto::broker`) the broker
//! asks before each request; the daemon decides, rate-limits and audits
//! here and only then hands over the credential.
//!
//! The process side sees the daemon only as a [`BrokerHost`]; the decision
//! side implements it on `ops::Daemon` with [`decide`] (policy, rate
//! limits, audit, credential) and [`rate_state`] (the rate-limit counters,
//! kept across restarts). The process side:
//!
//! * [`endpoint`]: `http.sock` and the loopback TCP listener, admission;
//! * [`peer`]: who is calling, from the kernel (`SO_PEERCRED`, the socket
//!   table for TCP);
//! * [`pool`]: one broker process per caller uid, its start, hand-overs,
//!   control task and end;
//! * [`control`]: the control channel's daemon end, and the bounds of what
//!   a broker may send.

pub mod control;
pub mod decide;
pub mod endpoint;
pub mod peer;
pub mod pool;
pub mod rate_state;

use aivault_proto::broker::{BrokerInit, DenyReason};
use aivault_proto::SecretBytes;

use crate::caller::Caller;

/// One request a broker asks to make, as the daemon records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask<'a> {
    pub capability: &'a str,
    pub method: &'a str,
    /// Query values already replaced by `*`.
    pub path: &'a str,
}

/// A request the daemon refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub reason: DenyReason,
    pub message: String,
    pub retry_after_s: Option<u32>,
}

/// How a request ended, as the broker reports it (untrusted: for the
/// audit record only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<'a> {
    pub capability: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: Option<u16>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub duration_us: u64,
    pub error: Option<&'a str>,
}

/// What a grant hands the broker: the capability's secret and the further
/// secrets its auth kind names, each with its name as in
/// `aivault_broker::auth` (`aws-sigv4`: the access key id; `oauth2`
/// without a usable stored access token: the refresh material, `secret`
/// then empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub secret: SecretBytes,
    pub extra: Vec<(String, SecretBytes)>,
    /// The broker was given refresh material: one `TokensRefreshed` for
    /// this request is accepted.
    pub refreshable: bool,
}

impl Granted {
    /// A grant of the credential alone.
    pub fn plain(secret: SecretBytes) -> Granted {
        Granted {
            secret,
            extra: Vec::new(),
            refreshable: false,
        }
    }
}

/// The tokens an OAuth2 token endpoint issued, as the broker reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub access_token: SecretBytes,
    pub expires_in_s: Option<u64>,
    pub refresh_token: Option<SecretBytes>,
}

/// What the broker's process side needs from the daemon.
pub trait BrokerHost: Send + Sync {
    /// The init message for a broker serving `caller` (its `home` and
    /// `tmp` are filled in by the pool), or `None` if the policy gives the
    /// caller no capability (its connections are then refused).
    fn broker_init(&self, caller: &Caller) -> Option<BrokerInit>;
    /// Decides one request: policy, rate limits, then the audit record
    /// (durable before this returns), then the credential(s).
    fn authorize(&self, caller: &Caller, ask: &Ask<'_>) -> Result<Granted, Denied>;
    /// Stores the tokens the broker obtained for a granted request of
    /// OAuth2 capability `capability`; an error ends the broker.
    fn tokens_refreshed(
        &self,
        _caller: &Caller,
        capability: &str,
        _tokens: Tokens,
    ) -> Result<(), String> {
        Err(format!("capability {capability} takes no tokens"))
    }
    /// Records how a granted request ended.
    fn finished(&self, caller: &Caller, outcome: &Outcome<'_>);
}
