//! `ListCapabilities` and `OpenCapabilityConnection`: the HTTP capability
//! broker (docs/broker.md) for D-Bus callers.
//!
//! The daemon never speaks HTTP here either. For a connection it makes a
//! Unix socket pair, hands one end to the caller's broker exactly as the
//! endpoint hands over an accepted connection (the same admission limits,
//! the same pool; the caller is who the bus says), and returns the other
//! end. The caller then speaks HTTP/1.1 to its broker on it; every request
//! is decided and audited as on `http.sock`.

use std::os::fd::OwnedFd;

use aivault_proto::{CapabilityInfo, CapabilityReport};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use zbus::zvariant::{self, SerializeDict, Type};

use super::error::{internal, VaultError};
use crate::broker::pool::{Refusal, Refused};
use crate::ops::{Caller, Daemon};

/// One capability, as `ListCapabilities` returns it (`a{sv}`).
#[derive(Debug, SerializeDict, Type)]
#[zvariant(signature = "a{sv}", rename_all = "snake_case")]
pub struct CapabilityMeta {
    name: String,
    provider: Option<String>,
    host: String,
    methods: Vec<String>,
    paths: Vec<String>,
    secret: String,
    secret_present: bool,
}

impl From<CapabilityInfo> for CapabilityMeta {
    fn from(c: CapabilityInfo) -> Self {
        CapabilityMeta {
            name: c.name,
            provider: c.provider,
            host: c.host,
            methods: c.methods,
            paths: c.paths,
            secret: c.secret,
            secret_present: c.secret_present,
        }
    }
}

/// `ListCapabilities`' reply: the capabilities, then where the endpoint
/// listens (`""` where it does not).
pub fn listing(report: CapabilityReport) -> (Vec<CapabilityMeta>, String, String) {
    (
        report
            .capabilities
            .into_iter()
            .map(CapabilityMeta::from)
            .collect(),
        report.http_socket.unwrap_or_default(),
        report.http_tcp.unwrap_or_default(),
    )
}

/// Hands one end of a new socket pair to `caller`'s broker and returns the
/// other, or the refusal (a caller with no capability gets no descriptor).
pub async fn open(daemon: &Daemon, caller: Caller) -> Result<zvariant::OwnedFd, VaultError> {
    let handover = daemon
        .broker_handover()
        .ok_or_else(|| VaultError::Busy("the broker is not running".into()))?
        .clone();
    let _ticket = handover
        .admit(caller.uid)
        .map_err(|why| VaultError::Busy(why.into()))?;
    let (ours, theirs) = pair()?;
    match handover.pool().dispatch(caller, theirs).await {
        Ok(()) => {
            tracing::debug!(
                uid = caller.uid,
                pid = caller.pid,
                "D-Bus broker connection handed over"
            );
            Ok(zvariant::OwnedFd::from(ours))
        }
        Err(Refusal { why, .. }) => {
            tracing::info!(uid = caller.uid, pid = caller.pid, error = %why, "D-Bus broker connection refused");
            Err(refusal(why))
        }
    }
}

/// A connected pair of blocking stream sockets (the broker sets what it
/// wants on its end, as on an accepted one).
fn pair() -> Result<(OwnedFd, OwnedFd), VaultError> {
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|_| internal("cannot create a socket pair"))
}

/// The D-Bus error for a connection the pool refused; why a start failed
/// is the daemon's log's, not the caller's.
fn refusal(why: Refused) -> VaultError {
    match why {
        Refused::NoCapability | Refused::RunUid => VaultError::PermissionDenied(why.to_string()),
        Refused::Start(_) => internal("the broker could not be started"),
        Refused::Stale | Refused::Gone | Refused::Stopping => VaultError::Busy(why.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_named_errors_without_start_details() {
        assert!(matches!(
            refusal(Refused::NoCapability),
            VaultError::PermissionDenied(m) if m.contains("no capability")
        ));
        assert!(matches!(
            refusal(Refused::RunUid),
            VaultError::PermissionDenied(_)
        ));
        assert!(matches!(
            refusal(Refused::Start("jail host said /secret/path".into())),
            VaultError::Internal(m) if !m.contains("/secret/path")
        ));
        for busy in [Refused::Stale, Refused::Gone, Refused::Stopping] {
            assert!(matches!(refusal(busy), VaultError::Busy(_)));
        }
    }

    #[test]
    fn the_pair_is_connected_both_ways() {
        use std::io::{Read, Write};
        let (a, b) = pair().unwrap();
        let (mut a, mut b) = (
            std::os::unix::net::UnixStream::from(a),
            std::os::unix::net::UnixStream::from(b),
        );
        a.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let mut got = [0u8; 16];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"GET / HTTP/1.1\r\n");
    }
}
