//! Reaching an upstream: resolve the pinned host (the test configuration's
//! overrides, else DNS), judge **every** resolved address with
//! [`crate::addr`] (one forbidden address refuses the host: a name that
//! answers with a public and a private address is not trusted with either),
//! connect to a judged address (never resolving again), TLS with the pinned
//! host as the server name, then an HTTP/1.1 handshake. Idle connections are
//! kept per host and reused.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use aivault_proto::broker::{BrokerTesting, ResolveOverride};
use bytes::Bytes;
use hickory_resolver::config::{ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::TokioResolver;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use tokio_rustls::TlsConnector;

use crate::addr::{self, Mode};
use crate::tls::{self, TlsError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_PER_HOST: usize = 8;

/// A connection ready for a request.
pub type Sender = SendRequest<Full<Bytes>>;

#[derive(Debug, Error)]
pub enum UpstreamError {
    #[error("the upstream host could not be resolved")]
    Resolve,
    #[error("the upstream host resolves to no address")]
    NoAddress,
    #[error("the upstream host resolves to {addr}, {why}")]
    Forbidden {
        addr: std::net::IpAddr,
        why: &'static str,
    },
    #[error("the upstream could not be reached: {0}")]
    Connect(io::Error),
    #[error("the upstream took too long to accept the connection")]
    ConnectTimeout,
    #[error("the upstream's TLS handshake failed: {0}")]
    Tls(io::Error),
    #[error("the upstream's HTTP handshake failed: {0}")]
    Http(hyper::Error),
}

/// Where upstream connections come from.
pub struct Upstream {
    tls: TlsConnector,
    mode: Mode,
    overrides: Vec<ResolveOverride>,
    dns: Option<(ResolverConfig, ResolverOpts)>,
    resolver: OnceCell<TokioResolver>,
    idle: Mutex<HashMap<String, Vec<Sender>>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("mode", &self.mode)
            .field("overrides", &self.overrides)
            .field("dns", &self.dns.is_some())
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Reads everything from the filesystem it needs (the system DNS
    /// configuration; its absence only makes DNS lookups fail), before
    /// confinement. Needs no runtime.
    pub fn prepare(testing: Option<&BrokerTesting>) -> Result<Upstream, TlsError> {
        let tls = tls::connector(testing.and_then(|t| t.extra_roots_pem.as_deref()))?;
        let mode = match testing {
            Some(t) if t.allow_loopback => Mode::LoopbackForTests,
            _ => Mode::Production,
        };
        let dns =
            hickory_resolver::system_conf::read_system_conf()
                .ok()
                .map(|(config, mut opts)| {
                    // /etc/hosts is not readable once confined.
                    opts.use_hosts_file = ResolveHosts::Never;
                    (config, opts)
                });
        Ok(Upstream {
            tls,
            mode,
            overrides: testing.map(|t| t.resolve.clone()).unwrap_or_default(),
            dns,
            resolver: OnceCell::new(),
            idle: Mutex::new(HashMap::new()),
        })
    }

    /// An idle connection to `host`, or a new one.
    pub async fn connect(&self, host: &str) -> Result<Sender, UpstreamError> {
        while let Some(mut sender) = self.take_idle(host) {
            // Readiness follows the end of the last body shortly after.
            if sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        let addrs = self.resolve(host).await?;
        let tcp = connect_any(&addrs).await?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(host.to_owned()).map_err(|_| UpstreamError::Resolve)?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(UpstreamError::Tls)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(UpstreamError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("upstream connection ended: {e}");
            }
        });
        Ok(sender)
    }

    /// Keeps a connection whose last response was read to its end.
    pub fn give_back(&self, host: &str, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let list = idle.entry(host.to_owned()).or_default();
        if list.len() < IDLE_PER_HOST {
            list.push(sender);
        }
    }

    fn take_idle(&self, host: &str) -> Option<Sender> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(host)?;
        while let Some(sender) = list.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// Every address of `host`, each judged.
    pub async fn resolve(&self, host: &str) -> Result<Vec<SocketAddr>, UpstreamError> {
        let addrs: Vec<SocketAddr> = match self.overrides.iter().find(|o| o.host == host) {
            Some(o) => o.addrs.clone(),
            None => {
                let resolver = self.resolver().await?;
                let found = resolver
                    .lookup_ip(host)
                    .await
                    .map_err(|_| UpstreamError::Resolve)?;
                found.iter().map(|ip| SocketAddr::new(ip, 443)).collect()
            }
        };
        if addrs.is_empty() {
            return Err(UpstreamError::NoAddress);
        }
        for a in &addrs {
            if let Some(why) = addr::forbidden(a.ip(), self.mode) {
                return Err(UpstreamError::Forbidden { addr: a.ip(), why });
            }
        }
        Ok(addrs)
    }

    async fn resolver(&self) -> Result<&TokioResolver, UpstreamError> {
        let (config, opts) = self.dns.clone().ok_or(UpstreamError::Resolve)?;
        Ok(self
            .resolver
            .get_or_init(|| async move {
                TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                    .with_options(opts)
                    .build()
            })
            .await)
    }
}

async fn connect_any(addrs: &[SocketAddr]) -> Result<TcpStream, UpstreamError> {
    let mut last = UpstreamError::NoAddress;
    for a in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(a)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = UpstreamError::Connect(e),
            Err(_) => last = UpstreamError::ConnectTimeout,
        }
    }
    Err(last)
}
