//! The upstream servers of one agent session: each started on first use
//! through a [`Spawner`], restarted with exponential backoff after it ends
//! on its own, stopped when idle and when the session ends.
//!
//! The [`Spawner`] is how a process comes to exist: in production the jail
//! host starts the server under a fresh uid of its own and hands the
//! gateway its stdin and stdout; in tests it is a plain child process.
//! Either way the gateway holds the process's guard ([`Spawned::process`])
//! for as long as the connection lives, and dropping the guard stops it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::upstream::{Upstream, UpstreamConfig, UpstreamError};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A started upstream: its stdout, its stdin, and what keeps it alive.
pub struct Spawned {
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    pub writer: Box<dyn AsyncWrite + Send + Unpin>,
    /// Dropped when the gateway is done with the process: the guard's drop
    /// must stop it.
    pub process: Box<dyn Send>,
}

impl std::fmt::Debug for Spawned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spawned")
    }
}

/// Told the name of an upstream whose tool list changed.
pub type ToolsChangedFn = Arc<dyn Fn(&str) + Send + Sync>;

/// Starts the process of a named upstream server.
pub trait Spawner: Send + Sync {
    fn spawn<'a>(&'a self, server: &'a str) -> BoxFuture<'a, Result<Spawned, String>>;
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub max_message: usize,
    /// How long the handshake of a fresh upstream may take.
    pub start_timeout: Duration,
    /// First restart delay after an upstream ended on its own; doubled per
    /// further failure up to `backoff_max`, reset by a successful call.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// An upstream with no call in flight for this long is stopped.
    pub idle_timeout: Option<Duration>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_message: crate::jsonrpc::DEFAULT_MAX_MESSAGE,
            start_timeout: Duration::from_secs(30),
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(600)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no upstream server named {0:?}")]
    UnknownServer(String),
    #[error("upstream {server} could not be started: {reason}")]
    Spawn { server: String, reason: String },
    #[error("upstream {server} did not complete the handshake: {source}")]
    Handshake {
        server: String,
        source: UpstreamError,
    },
    #[error("upstream {0} did not complete the handshake in time")]
    StartTimeout(String),
    #[error("the session has ended")]
    ShutDown,
}

struct Live {
    up: Upstream,
    _process: Box<dyn Send>,
    tools: Option<(u64, Arc<Vec<Value>>)>,
}

#[derive(Default)]
struct Slot {
    live: tokio::sync::Mutex<Option<Live>>,
    failures: AtomicU32,
    in_flight: AtomicUsize,
    last_used: Mutex<Option<Instant>>,
    starts: AtomicU32,
}

/// The upstreams of one session, by server name.
pub struct Pool {
    spawner: Arc<dyn Spawner>,
    cfg: PoolConfig,
    slots: HashMap<String, Arc<Slot>>,
    /// The servers in the order policy gave them (the order of listing).
    order: Vec<String>,
    /// Set once the session ended: nothing starts after that.
    shut: std::sync::atomic::AtomicBool,
    on_tools_changed: Option<ToolsChangedFn>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("servers", &self.slots.keys())
            .finish()
    }
}

/// A connection in use; the upstream counts as busy (never idle-stopped)
/// while a lease on it is held.
#[derive(Debug)]
pub struct Lease {
    pub upstream: Upstream,
    busy: Busy,
}

/// Counts a user of a slot from the moment it asks for the upstream, so an
/// upstream being started is not idle either.
#[derive(Debug)]
struct Busy(Arc<Slot>);

impl Busy {
    fn new(slot: Arc<Slot>) -> Self {
        slot.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(slot)
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

impl Lease {
    /// The upstream answered: the next crash starts the backoff afresh.
    pub fn succeeded(&self) {
        self.busy.0.failures.store(0, Ordering::Relaxed);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    pub fn new(servers: &[String], spawner: Arc<dyn Spawner>, cfg: PoolConfig) -> Self {
        let slots = servers
            .iter()
            .map(|s| (s.clone(), Arc::default()))
            .collect();
        Self {
            spawner,
            cfg,
            slots,
            order: servers.to_vec(),
            shut: Default::default(),
            on_tools_changed: None,
        }
    }

    /// Calls `f` whenever a live upstream says its tool list changed.
    pub fn on_tools_changed(mut self, f: ToolsChangedFn) -> Self {
        self.on_tools_changed = Some(f);
        self
    }

    pub fn servers(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(String::as_str)
    }

    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    /// How many times `server`'s process has been started.
    pub fn starts(&self, server: &str) -> u32 {
        self.slots
            .get(server)
            .map_or(0, |s| s.starts.load(Ordering::Relaxed))
    }

    /// A live connection to `server`, starting (or restarting) it first.
    pub async fn get(&self, server: &str) -> Result<Lease, PoolError> {
        let slot = self
            .slots
            .get(server)
            .ok_or_else(|| PoolError::UnknownServer(server.to_string()))?
            .clone();
        let busy = Busy::new(slot.clone());
        let mut live = slot.live.lock().await;
        if let Some(l) = live.as_ref() {
            if !l.up.is_closed() {
                let upstream = l.up.clone();
                drop(live);
                return Ok(Lease { upstream, busy });
            }
            // It ended without being told to: a crash.
            *live = None;
            slot.failures.fetch_add(1, Ordering::Relaxed);
        }
        if self.shut.load(Ordering::Relaxed) {
            return Err(PoolError::ShutDown);
        }
        let failures = slot.failures.load(Ordering::Relaxed);
        if failures > 0 {
            tokio::time::sleep(backoff(&self.cfg, failures)).await;
        }
        match self.start(server, &slot).await {
            Ok(l) => {
                let upstream = l.up.clone();
                *live = Some(l);
                drop(live);
                Ok(Lease { upstream, busy })
            }
            Err(e) => {
                slot.failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    async fn start(&self, server: &str, slot: &Slot) -> Result<Live, PoolError> {
        slot.starts.fetch_add(1, Ordering::Relaxed);
        let spawned = self
            .spawner
            .spawn(server)
            .await
            .map_err(|reason| PoolError::Spawn {
                server: server.to_string(),
                reason,
            })?;
        let cfg = UpstreamConfig {
            name: server.to_string(),
            max_message: self.cfg.max_message,
        };
        let handshake = Upstream::connect(spawned.reader, spawned.writer, cfg);
        let up = tokio::time::timeout(self.cfg.start_timeout, handshake)
            .await
            .map_err(|_| PoolError::StartTimeout(server.to_string()))?
            .map_err(|source| PoolError::Handshake {
                server: server.to_string(),
                source,
            })?;
        if let Some(f) = self.on_tools_changed.clone() {
            let (watched, server) = (up.clone(), server.to_string());
            // Ends with the connection: its reader drops the sender.
            tokio::spawn(async move {
                let mut seen = watched.tools_generation();
                while watched.tools_changed_after(seen).await {
                    seen = watched.tools_generation();
                    f(&server);
                }
            });
        }
        Ok(Live {
            up,
            _process: spawned.process,
            tools: None,
        })
    }

    /// The tools `server` lists, cached per connection until the upstream
    /// says its list changed.
    pub async fn tools(&self, server: &str) -> Result<Arc<Vec<Value>>, ToolsError> {
        let lease = self.get(server).await?;
        let generation = lease.upstream.tools_generation();
        {
            let live = lease.busy.0.live.lock().await;
            let cached = live
                .as_ref()
                .filter(|l| l.up.same_connection(&lease.upstream))
                .and_then(|l| l.tools.as_ref());
            if let Some((g, tools)) = cached {
                if *g == generation {
                    return Ok(tools.clone());
                }
            }
        }
        let tools = Arc::new(lease.upstream.list_tools().await?);
        lease.succeeded();
        let mut live = lease.busy.0.live.lock().await;
        // Only for the connection that listed them, not a restart since.
        if let Some(l) = live
            .as_mut()
            .filter(|l| l.up.same_connection(&lease.upstream))
        {
            l.tools = Some((generation, tools.clone()));
        }
        Ok(tools)
    }

    /// Stops every upstream with nothing in flight that has been idle for
    /// the configured time; returns how many were stopped.
    pub fn stop_idle(&self) -> usize {
        let Some(idle) = self.cfg.idle_timeout else {
            return 0;
        };
        let mut stopped = 0;
        for slot in self.slots.values() {
            if slot.in_flight.load(Ordering::Relaxed) > 0 {
                continue;
            }
            let last = *slot.last_used.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() >= idle) {
                if let Ok(mut live) = slot.live.try_lock() {
                    if slot.in_flight.load(Ordering::Relaxed) == 0 && live.take().is_some() {
                        stopped += 1;
                    }
                }
            }
        }
        stopped
    }

    /// Stops every upstream (the session ended).
    pub async fn shutdown(&self) {
        self.shut.store(true, Ordering::Relaxed);
        for slot in self.slots.values() {
            slot.live.lock().await.take();
        }
    }
}

/// The wait before the start that follows `failures` failures in a row.
fn backoff(cfg: &PoolConfig, failures: u32) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    cfg.backoff_base.saturating_mul(factor).min(cfg.backoff_max)
}

#[derive(Debug, thiserror::Error)]
pub enum ToolsError {
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_per_failure_up_to_its_cap() {
        let cfg = PoolConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..PoolConfig::default()
        };
        let waits: Vec<_> = [1, 2, 3, 4, 5, 40]
            .iter()
            .map(|f| backoff(&cfg, *f).as_millis())
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
    }
}
