//! An MCP gateway's upstream server, started as a runner job under a fresh
//! run uid of its own (never the caller's, never the gateway's): the
//! runner confines itself as for any run (the server's sandbox from its
//! `[[mcp_server]]`), gets the server's secrets in its environment and
//! nothing of the caller's, and executes the resolved command with one end
//! of a socket pair as its stdin and stdout (the job's second descriptor);
//! the other end is returned for the gateway. Only stderr is pumped, and
//! dropped. The runner's events are read until it exits or the upstream
//! is stopped ([`RunningUpstream`] dropped); then its uid is torn down as
//! a run's is.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use aivault_proto::{
    Isolation, Limits, RunnerEvent, RunnerJob, RunnerSecrets, SandboxSpec, SecretBytes,
};
use tokio::sync::oneshot;

use super::prepare::RUN_PATH;
use super::runner::{self, RunAs};
use super::RunHost;
use crate::sys::ChildIdentity;

/// What an upstream is started with.
pub struct UpstreamJob {
    /// The resolved (root-owned, hashed) executable.
    pub command: crate::policy::ResolvedCommand,
    pub args: Vec<String>,
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    pub tcp_connect: Vec<u16>,
    pub tcp_bind: Vec<u16>,
    pub memory: Option<u64>,
    pub processes: Option<u64>,
    pub file_size: Option<u64>,
    pub require_full_landlock: bool,
    /// (secret name, environment variable, value).
    pub secrets: Vec<(String, String, SecretBytes)>,
}

impl std::fmt::Debug for UpstreamJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamJob")
            .field("command", &self.command.path)
            .field("args", &self.args.len())
            .finish_non_exhaustive()
    }
}

/// A started upstream: dropping it stops it (its uid's processes killed,
/// its directories removed, the uid freed).
#[derive(Debug)]
pub struct RunningUpstream {
    pub uid: u32,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for RunningUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts `job`; returns it and the gateway's end of its stdio.
pub async fn start(
    daemon: Arc<dyn RunHost>,
    job: UpstreamJob,
) -> Result<(RunningUpstream, OwnedFd), String> {
    let d = Arc::clone(&daemon);
    let started = tokio::task::spawn_blocking(move || {
        let lease = d.runs().pool.acquire().map_err(|e| (e.to_string(), None))?;
        let uid = lease.uid();
        let who = ChildIdentity {
            uid,
            gid: uid,
            groups: Vec::new(),
            cgroup_procs: None,
        };
        runner::launch(&*d, RunAs::Lease(lease), &who, &uid.to_string(), None)
    })
    .await
    .unwrap_or_else(|_| Err(("internal error while starting the upstream".into(), None)));
    let mut ready = match runner::connect(started).await {
        Ok(r) => r,
        Err((why, leftovers)) => {
            if let Some(l) = leftovers {
                let d = Arc::clone(&daemon);
                let _ = tokio::task::spawn_blocking(move || runner::teardown(&*d, *l)).await;
            }
            return Err(why);
        }
    };
    let uid = ready.uid();
    match hand(&mut ready, job).await {
        Ok(gateway_end) => {
            let (stop, stopped) = oneshot::channel();
            tokio::spawn(supervise(daemon, ready, stopped));
            Ok((
                RunningUpstream {
                    uid,
                    stop: Some(stop),
                },
                gateway_end,
            ))
        }
        Err(why) => {
            let d = Arc::clone(&daemon);
            let _ = tokio::task::spawn_blocking(move || runner::discard(&*d, ready)).await;
            Err(why)
        }
    }
}

/// The job (executable and the runner's end of the socket pair attached),
/// the confinement report, the secrets.
async fn hand(ready: &mut runner::Ready, job: UpstreamJob) -> Result<OwnedFd, String> {
    let dirs = &ready.leftovers.dirs;
    let defaults = Limits::default();
    let spec = SandboxSpec {
        home: dirs.home.clone(),
        tmp: dirs.tmp.clone(),
        read: job.read,
        write: job.write,
        exec: vec![job.command.path.clone()],
        cwd: None,
        cwd_writable: false,
        tcp_connect: job.tcp_connect,
        tcp_bind: job.tcp_bind,
        limits: Limits {
            memory: job.memory.unwrap_or(defaults.memory),
            processes: job.processes.unwrap_or(defaults.processes),
            file_size: job.file_size.unwrap_or(defaults.file_size),
            // A long-lived server: no CPU-time limit of a one-shot run.
            cpu_seconds: u64::MAX,
            open_files: defaults.open_files,
        },
        require_full_landlock: job.require_full_landlock,
        isolation: Isolation::DynamicUid,
    };
    let mut argv = vec![job.command.path.display().to_string()];
    argv.extend(job.args);
    let runner_job = RunnerJob {
        argv,
        env: vec![
            ("PATH".into(), RUN_PATH.into()),
            ("HOME".into(), dirs.home.display().to_string()),
            ("TMPDIR".into(), dirs.tmp.display().to_string()),
            ("LANG".into(), "C.UTF-8".into()),
        ],
        sandbox: spec,
        // Only stderr is counted, and the server lives long.
        max_output: u64::MAX,
    };
    let (gateway_end, runner_end) = std::os::unix::net::UnixStream::pair()
        .map_err(|e| format!("cannot make the upstream's socket: {e}"))?;
    let handed = tokio::time::timeout(
        super::RUNNER_CONNECT_TIMEOUT,
        super::supervise::hand_job(
            &ready.stream,
            &runner_job,
            &[job.command.file.as_fd(), runner_end.as_fd()],
        ),
    )
    .await;
    drop(runner_end);
    match handed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("the runner did not take the job: {e}")),
        Err(_) => return Err("the runner did not take the job in time".into()),
    }
    match read_event(&mut ready.stream).await {
        Some(RunnerEvent::Confined { .. }) => {}
        Some(RunnerEvent::Exit { message, .. }) => {
            return Err(format!(
                "the upstream could not start: {}",
                message.unwrap_or_default()
            ))
        }
        _ => return Err("the runner broke the protocol".into()),
    }
    let secrets = RunnerSecrets {
        secrets: job.secrets,
    };
    crate::frames::send(&mut ready.stream, &secrets)
        .await
        .map_err(|e| format!("cannot send the upstream's go-ahead: {e}"))?;
    Ok(OwnedFd::from(gateway_end))
}

async fn read_event(stream: &mut tokio::net::UnixStream) -> Option<RunnerEvent> {
    let body = crate::frames::read(stream).await.ok()?;
    aivault_proto::decode(&body).ok()
}

/// Reads the runner's events (stderr dropped) until it exits or the
/// upstream is stopped; then tears it down.
async fn supervise(
    daemon: Arc<dyn RunHost>,
    mut ready: runner::Ready,
    mut stopped: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            event = read_event(&mut ready.stream) => match event {
                Some(RunnerEvent::Output { .. }) => {}
                _ => break,
            },
            _ = &mut stopped => break,
        }
    }
    let _ = tokio::task::spawn_blocking(move || runner::discard(&*daemon, ready)).await;
}
