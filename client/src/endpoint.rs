//! Where the daemon is and how long `vaultctl` waits for it, and how a
//! scope argument reads on the wire: shared by every subcommand, importing
//! none of them.

use aivault_client::cli::{Cli, ScopeArg, DAEMON_TIMEOUT_ENV};
use aivault_client::{socket_path, Client, ClientError};
use aivault_proto::WireScope;

use crate::error::{usage, CtlError};

/// The wire scope a `--system` (or its absence) names.
pub(crate) fn scope(s: ScopeArg) -> WireScope {
    match s {
        ScopeArg::Own => WireScope::Own,
        ScopeArg::System => WireScope::System,
    }
}

/// Where the daemon is and how long to wait for it.
#[derive(Debug)]
pub struct Endpoint {
    pub path: std::path::PathBuf,
    pub timeout: Option<std::time::Duration>,
}

impl Endpoint {
    /// From `--socket`/`$AIVAULT_SOCKET` and `--daemon-timeout`/`$AIVAULT_DAEMON_TIMEOUT`.
    pub fn new(cli: &Cli) -> Result<Self, CtlError> {
        let from_env = std::env::var(DAEMON_TIMEOUT_ENV).ok();
        let timeout = match cli.daemon_timeout.as_deref().or(from_env.as_deref()) {
            None => Some(DEFAULT_DAEMON_TIMEOUT),
            Some("0") => None,
            Some(s) => Some(std::time::Duration::from_millis(
                crate::time::parse_duration_ms(s)
                    .map_err(|e| usage(format!("--daemon-timeout: {e}")))?,
            )),
        };
        Ok(Endpoint {
            path: socket_path(cli.socket.as_deref()),
            timeout,
        })
    }

    /// A connection, its handshake sent (see [`Client::open`]).
    pub fn open(&self) -> Result<Client, ClientError> {
        Client::open_with_timeout(&self.path, self.timeout)
    }
}

/// How long a daemon may take to answer unless told otherwise: far beyond
/// any request's normal time (a passphrase unlock, verifying a long audit
/// log), short enough that a hung daemon does not hang scripts.
const DEFAULT_DAEMON_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
