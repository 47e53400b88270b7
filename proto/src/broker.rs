//! The control channel between the daemon and a broker process.
//!
//! A broker process (`aivault-broker`, a kind of the jail host) serves the
//! HTTP capabilities of **one caller uid**, under a fresh uid of its own.
//! The daemon starts it with one end of a `SOCK_SEQPACKET` socketpair as
//! descriptor 3; each datagram is one postcard message, descriptors travel
//! as `SCM_RIGHTS` on the datagram that names them.
//!
//! 1. The daemon sends [`ToBroker::Init`]: the capabilities this caller may
//!    invoke (policy text the broker compiles with the same checks the
//!    daemon ran at load), the TCP ports it may connect to, its private
//!    directories and limits. The broker confines itself (landlock: no file
//!    outside its directories, TCP connect to those ports only; seccomp: no
//!    `exec`) and answers [`FromBroker::Confined`].
//! 2. The daemon hands it connections of the local endpoint, already
//!    identified as the caller's ([`ToBroker::Connection`], the accepted
//!    socket attached). The daemon never reads from them: the broker parses
//!    the HTTP.
//! 3. For each request the broker asks [`FromBroker::Authorize`]; the daemon
//!    checks policy and rate limits, writes the audit record, and only then
//!    answers [`ToBroker::Grant`] with the credential, or
//!    [`ToBroker::Deny`]. The broker never keeps a credential past its
//!    request.
//! 4. When the response has been sent (or failed), [`FromBroker::Done`]
//!    lets the daemon audit the outcome.
//!
//! Nothing the broker sends carries a credential but the tokens an OAuth2
//! endpoint issued ([`FromBroker::TokensRefreshed`]); the daemon treats every
//! field of [`FromBroker`] as untrusted input bounded by [`MAX_CONTROL`].

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Enforcement, Limits, SecretBytes};

/// The largest control datagram either side sends or accepts.
pub const MAX_CONTROL: usize = 256 * 1024;

/// The descriptor the control socket is on in a broker process.
pub const CONTROL_FD: i32 = 3;

/// A host name's addresses as the test configuration pins them (never
/// available in production configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveOverride {
    pub host: String,
    pub addrs: Vec<SocketAddr>,
}

/// Settings that exist only in a daemon started with its testing switch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerTesting {
    /// Extra trust anchors (PEM) besides the built-in web roots.
    pub extra_roots_pem: Option<Vec<u8>>,
    /// Host names resolved to these addresses (with their ports, so a
    /// loopback test server need not listen on 443) instead of by DNS.
    pub resolve: Vec<ResolveOverride>,
    /// Loopback upstreams are allowed (and `http` to them).
    pub allow_loopback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInit {
    /// `[[provider]]` and `[[capability]]` tables (TOML) of the capabilities
    /// this caller may invoke, as the policy files spell them.
    pub capabilities: String,
    /// TCP ports the broker may connect to.
    pub tcp_connect: Vec<u16>,
    /// Private directories (read-write), owned by the broker's uid, 0700.
    pub home: PathBuf,
    pub tmp: PathBuf,
    pub limits: Limits,
    /// Refuse to serve unless every landlock feature asked for is enforced.
    pub require_full_landlock: bool,
    pub testing: Option<BrokerTesting>,
}

/// Why the daemon refused a request; the broker answers the HTTP caller
/// with the status this maps to and the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DenyReason {
    /// 403: the caller may not invoke the capability (or it does not exist).
    Forbidden,
    /// 429: a rate limit; `retry_after_s` in [`ToBroker::Deny`].
    RateLimited,
    /// 503: the vault is sealed, the secret is missing, or the audit log
    /// cannot be written.
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToBroker {
    Init(BrokerInit),
    /// An accepted connection of the local endpoint (attached), already
    /// identified as the caller's. `conn` is the daemon's number for it.
    Connection {
        conn: u64,
    },
    /// The credential for request `req`, after its record is durable, and
    /// the further secrets its auth kind names (`aws-sigv4`: the access
    /// key id), each with its name.
    Grant {
        req: u64,
        secret: SecretBytes,
        /// Further named credentials of the grant. For an OAuth2
        /// capability whose stored access token is missing or expired,
        /// `secret` is empty and this holds the refresh material
        /// (`client_secret`, `refresh_token`): the broker asks the token
        /// endpoint itself and reports [`FromBroker::TokensRefreshed`]. For
        /// an `aws-sigv4` capability it holds the access key id.
        #[serde(default)]
        extra: Vec<(String, SecretBytes)>,
    },
    Deny {
        req: u64,
        reason: DenyReason,
        message: String,
        retry_after_s: Option<u32>,
    },
    /// Finish the requests in flight, then exit.
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromBroker {
    /// Confined as [`ToBroker::Init`] asked, with this enforcement; or why
    /// not (`Err`), after which the broker exits.
    Confined(Result<Enforcement, String>),
    /// May request `req` on connection `conn` go ahead? The path has its
    /// query values replaced by `*` (they are not audited).
    Authorize {
        req: u64,
        conn: u64,
        capability: String,
        method: String,
        path: String,
    },
    /// Request `req` ended: the upstream's status (`None`: no response, the
    /// broker answered `error` itself), bytes both ways, time taken.
    Done {
        req: u64,
        status: Option<u16>,
        request_bytes: u64,
        response_bytes: u64,
        duration_us: u64,
        error: Option<String>,
    },
    /// The token endpoint of granted OAuth2 request `req` issued these
    /// tokens (the only message that carries values to the daemon, which
    /// writes them to the vault and accepts them only for a granted
    /// request of an OAuth2 capability, once).
    TokensRefreshed {
        req: u64,
        access_token: SecretBytes,
        expires_in_s: Option<u64>,
        refresh_token: Option<SecretBytes>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_round_trips_and_hides_its_secret_in_debug() {
        let msg = ToBroker::Grant {
            req: 7,
            secret: SecretBytes::new(b"sk-test-123".to_vec()),
            extra: vec![
                ("AKID".into(), SecretBytes::new(b"AKIA-test-9".to_vec())),
                ("refresh_token".into(), SecretBytes::new(b"rt-1".to_vec())),
            ],
        };
        let bytes = postcard::to_stdvec(&msg).unwrap();
        let back: ToBroker = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, msg);
        assert!(!format!("{back:?}").contains("sk-test"));
        assert!(!format!("{back:?}").contains("AKIA-test"));
        assert!(!format!("{back:?}").contains("rt-1"));
    }
}
