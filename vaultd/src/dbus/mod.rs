//! The D-Bus interface for desktop agents: `org.aivault.Vault1` at
//! `/org/aivault/Vault1`, served under the bus name `org.aivault.Vault1` on
//! the system bus (or a bus named by `--dbus` / `[dbus] bus`).
//!
//! Callers are identified by the bus (`GetConnectionCredentials`), never by
//! their arguments; each method then goes through the same
//! [`Daemon::handle`](crate::ops::Daemon::handle) and
//! [`run::prepare::prepare_run`](crate::run::prepare::prepare_run) code as the Unix
//! socket, so authorization and audit are the socket path's. Runs are driven
//! by the socket path's supervisor ([`runs`]). A bus connection that goes
//! away cancels its runs. The interface is described in
//! `docs/dbus.md` and `packaging/dbus/org.aivault.Vault1.xml`.

mod approvals;
mod args;
mod capability;
mod error;
mod iface;
mod runs;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

pub use error::VaultError;

use crate::config::BusChoice;
use crate::ops::Daemon;

pub const BUS_NAME: &str = "org.aivault.Vault1";
pub const OBJECT_PATH: &str = "/org/aivault/Vault1";
pub const INTERFACE: &str = "org.aivault.Vault1";

/// Longest wait between attempts to reach the bus.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Serves the interface until `stop` turns true: connects, owns the name,
/// and reconnects (with backoff) whenever the bus is unreachable or goes
/// away. Runs started over a lost connection are cancelled. On stop the
/// object is withdrawn and the name released, so no new call arrives while
/// the daemon lets active runs finish.
pub async fn serve(
    daemon: Arc<Daemon>,
    bus: BusChoice,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if bus == BusChoice::Off {
        return;
    }
    let mut delay = Duration::from_secs(1);
    loop {
        let registry = Arc::new(runs::Registry::default());
        let connected = tokio::select! {
            c = connect(&daemon, &bus, registry.clone()) => c,
            _ = stopped(&mut stop) => return,
        };
        match connected {
            Ok(conn) => {
                tracing::info!(bus = %bus, name = BUS_NAME, "D-Bus interface ready");
                delay = Duration::from_secs(1);
                let mut watcher = tokio::spawn(watch_disconnects(conn.clone(), registry.clone()));
                let announcer = tokio::spawn(approvals::announce(conn.clone(), daemon.clone()));
                tokio::select! {
                    _ = conn.closed() => {
                        tracing::warn!(bus = %bus, "D-Bus connection lost; its runs are cancelled");
                    }
                    _ = &mut watcher => {
                        // Without disconnect notices a vanished caller's
                        // run would go on: start over on a new connection.
                        tracing::error!(bus = %bus, "lost track of D-Bus disconnects; reconnecting");
                    }
                    _ = stopped(&mut stop) => {
                        withdraw(&conn).await;
                        watcher.abort();
                        announcer.abort();
                        return;
                    }
                }
                watcher.abort();
                announcer.abort();
                registry.cancel_all();
                withdraw(&conn).await;
            }
            Err(e) => {
                tracing::warn!(bus = %bus, error = %e, retry_in_s = delay.as_secs(), "D-Bus interface unavailable");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => return,
        }
        delay = (delay * 2).min(MAX_RETRY);
    }
}

/// Resolves once the daemon stops (or its stop switch is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Stops serving on `conn`: no new calls reach the interface.
async fn withdraw(conn: &zbus::Connection) {
    let _ = conn
        .object_server()
        .remove::<iface::Vault, _>(OBJECT_PATH)
        .await;
    let _ = conn
        .object_server()
        .remove::<approvals::Approvals, _>(OBJECT_PATH)
        .await;
    let _ = conn.release_name(BUS_NAME).await;
}

async fn connect(
    daemon: &Arc<Daemon>,
    bus: &BusChoice,
    registry: Arc<runs::Registry>,
) -> zbus::Result<zbus::Connection> {
    let builder = match bus {
        BusChoice::Address(a) => zbus::connection::Builder::address(a.as_str())?,
        _ => zbus::connection::Builder::system()?,
    };
    builder
        .serve_at(
            OBJECT_PATH,
            iface::Vault::new(daemon.clone(), registry.clone()),
        )?
        .serve_at(
            OBJECT_PATH,
            approvals::Approvals::new(daemon.clone(), iface::Vault::new(daemon.clone(), registry)),
        )?
        .name(BUS_NAME)?
        .build()
        .await
}

/// Cancels the runs of every bus connection that disappears. Returns only
/// if it cannot (any more).
async fn watch_disconnects(conn: zbus::Connection, registry: Arc<runs::Registry>) {
    let Ok(bus) = zbus::fdo::DBusProxy::new(&conn).await else {
        tracing::error!("cannot watch D-Bus disconnects");
        return;
    };
    let Ok(mut changes) = bus.receive_name_owner_changed().await else {
        tracing::error!("cannot watch D-Bus disconnects");
        return;
    };
    while let Some(change) = changes.next().await {
        let Ok(args) = change.args() else { continue };
        if args.new_owner().is_none() && args.name().starts_with(':') {
            registry.connection_gone(args.name());
        }
    }
}
