//! Life as a systemd service: readiness, human status lines, a watchdog that
//! proves the socket answers, policy reload on SIGHUP, and a bounded,
//! complete shutdown. Every function is a no-op without `NOTIFY_SOCKET`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::ops::Daemon;

/// How long active runs may finish after a stop request before they are killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long runs killed at shutdown may take to report their end.
const REPORT_GRACE: Duration = Duration::from_secs(3);

fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "cannot notify the service manager");
    }
}

/// The `STATUS=` line: what a person needs to know at a glance.
pub fn status_line(daemon: &Daemon) -> String {
    if daemon.is_sealed() {
        "sealed: waiting for `vaultctl unlock`".to_string()
    } else {
        let runs = daemon.runs().admission.active();
        format!(
            "ready: {runs} run{} active, {} connection{}",
            if runs == 1 { "" } else { "s" },
            daemon
                .connections
                .load(std::sync::atomic::Ordering::Relaxed),
            if daemon
                .connections
                .load(std::sync::atomic::Ordering::Relaxed)
                == 1
            {
                ""
            } else {
                "s"
            },
        )
    }
}

/// `READY=1` once the vault is open (or sealed and waiting), the audit log
/// is open and the socket listens — the caller guarantees all three.
pub fn ready(daemon: &Daemon) {
    let status = status_line(daemon);
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// Pings the service manager's watchdog only after a real round trip
/// through the socket: connect, handshake, `status`. A wedged event loop or
/// a dead accept loop stops the pings and systemd restarts us.
pub async fn watchdog(daemon: Arc<Daemon>, socket: PathBuf) {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = Duration::from_micros(usec / 2);
    loop {
        tokio::time::sleep(period).await;
        let path = socket.clone();
        let probe = tokio::task::spawn_blocking(move || {
            let mut c = aivault_client::Client::connect(&path).ok()?;
            c.set_timeout(Some(Duration::from_secs(2))).ok()?;
            c.call(aivault_proto::RequestBody::Status).ok()
        });
        match tokio::time::timeout(period, probe).await {
            Ok(Ok(Some(_))) => {
                let status = status_line(&daemon);
                notify(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
            }
            _ => tracing::error!("watchdog self-check failed: the socket did not answer"),
        }
    }
}

/// Re-reads the policy, telling systemd around it.
pub fn reload(daemon: &Daemon) {
    notify(&[
        NotifyState::Reloading,
        NotifyState::Status("reloading policy"),
    ]);
    match daemon.reload_policy() {
        Ok(n) => tracing::info!(
            message_id = crate::journal::POLICY_RELOADED,
            entries = n,
            "policy reloaded"
        ),
        Err(crate::ops::admin::ReloadRefused::Invalid(e)) => tracing::error!(
            message_id = crate::journal::POLICY_RELOAD_REFUSED,
            error = %e,
            "new policy is invalid; the previous one stays in force"
        ),
        Err(e) => tracing::warn!(message_id = crate::journal::POLICY_RELOAD_REFUSED, "{e}"),
    }
    ready(daemon);
}

/// Waits for SIGTERM or SIGINT, reloading the policy on each SIGHUP meanwhile.
pub async fn until_stop(daemon: Arc<Daemon>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let d = daemon.clone();
                let _ = tokio::task::spawn_blocking(move || reload(&d)).await;
            }
        }
    }
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: letting active runs finish"),
    ]);
    tracing::info!(message_id = crate::journal::STOPPING, "stopping");
}

/// Tears down the warm runners, lets active runs finish within
/// [`STOP_GRACE`], then kills what is left.
pub async fn drain_runs(daemon: &Arc<Daemon>) {
    crate::run::warm::WarmPool::close(&daemon.run_host()).await;
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while !daemon.runs().idle() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = daemon.runs().pool.leased_uids();
    let callers = daemon.runs().cgroups.active();
    if !left.is_empty() || !callers.is_empty() {
        tracing::warn!(
            runs = left.len() + callers.len(),
            "killing runs still active at shutdown"
        );
        daemon.runs().end_all();
        let dir = daemon.runs().settings.runs_dir.clone();
        let d = daemon.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for uid in left {
                crate::run::runner::kill_run_uid(&d.runs().jail, uid, None);
                let _ = std::fs::remove_dir_all(dir.join(uid.to_string()));
            }
            for cgroup in callers {
                crate::run::cgroup::end_path(&cgroup);
            }
            // Caller-mode runs' directories are named `caller-<n>`.
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if entry.file_name().to_string_lossy().starts_with("caller-") {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        })
        .await;
        // Their callers learn why before the daemon is gone.
        let deadline = tokio::time::Instant::now() + REPORT_GRACE;
        while daemon.runs().admission.active() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
