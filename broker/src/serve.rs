//! The broker process's service: the capabilities of one caller, compiled
//! from [`BrokerInit`], and the loop over the control socket that serves
//! each handed-over connection ([`crate::endpoint_http`]) and routes the
//! daemon's answers to the requests waiting for them (by request number;
//! any number of requests may wait at once).
//!
//! [`Service::prepare`] does everything that reads files or may fail on
//! bad policy, before confinement and without a runtime;
//! [`Service::run`] serves until the daemon says [`ToBroker::Shutdown`]
//! (connections finish what is in flight) or closes its end (everything
//! stops at once).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use aivault_proto::broker::{BrokerInit, ToBroker};
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::capability::{Capability, CapabilityError, RawCapability};
use crate::control::Control;
use crate::registry::{Provider, Registry, RegistryError};
use crate::shared::{Answer, Shared};
use crate::tls::TlsError;
use crate::upstream::Upstream;

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("the capabilities are not valid TOML: {0}")]
    Syntax(String),
    #[error("{0}")]
    Registry(RegistryError),
    #[error("{0}")]
    Capability(CapabilityError),
    #[error("capability {0:?} is listed twice")]
    Duplicate(String),
    #[error("{0}")]
    Tls(TlsError),
    #[error("the control socket failed: {0}")]
    Control(std::io::Error),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CapabilityFile {
    #[serde(default)]
    provider: Vec<Provider>,
    #[serde(default)]
    capability: Vec<RawCapability>,
}

/// Compiles the `[[provider]]` and `[[capability]]` tables of an init.
pub fn compile(text: &str) -> Result<Vec<Capability>, ServeError> {
    let file: CapabilityFile =
        toml::from_str(text).map_err(|e| ServeError::Syntax(e.message().to_owned()))?;
    let registry = Registry::shipped()
        .and_then(|r| r.overridden_by(file.provider))
        .map_err(ServeError::Registry)?;
    let mut caps: Vec<Capability> = Vec::new();
    for raw in file.capability {
        let cap = Capability::compile(raw, &registry).map_err(ServeError::Capability)?;
        if caps.iter().any(|c| c.name == cap.name) {
            return Err(ServeError::Duplicate(cap.name));
        }
        caps.push(cap);
    }
    // Longest name first: the first whole-segment match is the longest.
    caps.sort_by_key(|c| std::cmp::Reverse(c.name.len()));
    Ok(caps)
}

/// A broker's service, prepared from its init.
#[derive(Debug)]
pub struct Service {
    caps: Vec<Capability>,
    upstream: Upstream,
}

impl Service {
    /// Compiles the capabilities and reads what the upstream side needs.
    pub fn prepare(init: &BrokerInit) -> Result<Service, ServeError> {
        let caps = compile(&init.capabilities)?;
        let upstream = Upstream::prepare(init.testing.as_ref()).map_err(ServeError::Tls)?;
        Ok(Service { caps, upstream })
    }

    /// The capabilities served, longest name first.
    pub fn capabilities(&self) -> &[Capability] {
        &self.caps
    }

    /// Serves the connections the daemon hands over on `control` (after
    /// init and confinement). Must run inside a tokio runtime.
    pub async fn run(self, control: OwnedFd) -> Result<(), ServeError> {
        let control = Control::new(control).map_err(ServeError::Control)?;
        let shared = Arc::new(Shared::new(self.caps, self.upstream, control));
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        loop {
            let received = tokio::select! {
                r = shared.control.recv() => r.map_err(ServeError::Control)?,
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            };
            let Some(received) = received else {
                // The daemon is gone: nothing may be authorized any more.
                conns.abort_all();
                return Ok(());
            };
            match received.msg {
                ToBroker::Connection { conn } => {
                    let Some(fd) = received.fds.into_iter().next() else {
                        tracing::warn!("connection {conn} came without its socket");
                        continue;
                    };
                    let shared = Arc::clone(&shared);
                    let stop = stop_rx.clone();
                    conns.spawn(async move {
                        crate::endpoint_http::serve_connection(shared, conn, fd, stop).await;
                    });
                }
                ToBroker::Grant { req, secret, extra } => {
                    shared.answer(req, Answer::Grant(secret, extra))
                }
                ToBroker::Deny {
                    req,
                    reason,
                    message,
                    retry_after_s,
                } => shared.answer(
                    req,
                    Answer::Deny {
                        reason,
                        message,
                        retry_after_s,
                    },
                ),
                ToBroker::Init(_) => tracing::warn!("a second init is ignored"),
                ToBroker::Shutdown => break,
            }
        }
        let _ = stop_tx.send(true);
        // Answers for requests in flight still arrive on the control socket.
        loop {
            tokio::select! {
                joined = conns.join_next() => if joined.is_none() { return Ok(()) },
                r = shared.control.recv() => match r.map_err(ServeError::Control)? {
                    None => { conns.abort_all(); return Ok(()) }
                    Some(received) => match received.msg {
                        ToBroker::Grant { req, secret, extra } => shared.answer(req, Answer::Grant(secret, extra)),
                        ToBroker::Deny { req, reason, message, retry_after_s } => shared.answer(
                            req,
                            Answer::Deny { reason, message, retry_after_s },
                        ),
                        _ => {}
                    },
                },
            }
        }
    }
}
