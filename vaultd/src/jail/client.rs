//! The daemon's side: [`JailHost`] starts the jail host and asks it to
//! start and end jailed processes; [`Jailed`] follows one through its pidfd.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::wire::{self, Reply, Request, SpawnRequest};

/// How long [`JailHost::wait`] waits for a jailed process to end.
const END_WAIT: Duration = Duration::from_secs(10);

/// How long one request may take before the jail host counts as gone.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("cannot create the jail host's socket: {0}")]
    Socket(io::Error),
    #[error("cannot start the jail host {0}: {1}")]
    Start(PathBuf, io::Error),
    #[error("the jail host did not answer its first request: {0}")]
    Handshake(io::Error),
    #[error("the jail host is gone: {0}")]
    Gone(io::Error),
    #[error("the jail host gave an unexpected answer")]
    Protocol,
    #[error("the jail host refused: {0}")]
    Refused(String),
}

/// The running jail hosts: a few identical single-threaded processes, so
/// that one run's teardown never waits behind another's start. Each
/// answers its requests one at a time, in order, so a request holds that
/// host's socket for its round trip; a request goes to a host that is free
/// (else waits for one), and a jailed process's own requests (reap, kill
/// with reaping) go to the host that started it, its parent.
#[derive(Debug)]
pub struct JailHost {
    hosts: Vec<Host>,
    next: AtomicUsize,
}

/// One jail host process and the one socket to it. Once a round trip fails
/// it counts as gone for good: a late answer could otherwise be taken for
/// the next request's.
#[derive(Debug)]
struct Host {
    sock: Mutex<OwnedFd>,
    pid: i32,
    broken: AtomicBool,
    child: Mutex<std::process::Child>,
}

/// A process started by the jail host: its pid, and a pidfd that becomes
/// readable when it ends. Only the jail host can reap it
/// ([`JailHost::reap`]).
#[derive(Debug)]
pub struct Jailed {
    pid: i32,
    pidfd: OwnedFd,
    reaped: bool,
    /// Which jail host started it (and alone can reap it).
    host: usize,
}

impl Jailed {
    pub fn id(&self) -> i32 {
        self.pid
    }

    /// Whether the process has ended (it may still await reaping).
    pub fn has_ended(&self) -> bool {
        self.reaped || poll_readable(self.pidfd.as_fd(), 0)
    }

    /// Waits at most `limit` for the process to end; true if it has.
    pub fn wait_ended_for(&self, limit: Duration) -> bool {
        self.has_ended() || poll_readable(self.pidfd.as_fd(), limit.as_millis() as i32)
    }
}

fn poll_readable(fd: BorrowedFd<'_>, timeout_ms: i32) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(timeout_ms).unwrap_or(PollTimeout::NONE);
    matches!(poll(&mut fds, timeout), Ok(n) if n > 0)
}

/// The jail host's executable: next to the daemon's own, else the
/// packaged location.
pub fn locate() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("aivault-jail")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("/usr/libexec/aivault/aivault-jail"))
}

/// How many jail hosts the daemon starts: one per processor, at least two
/// (a start never waits behind a teardown) and at most eight.
pub fn host_count() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8))
}

impl JailHost {
    /// Starts `count` jail hosts (the `aivault-jail` binary, `program`),
    /// each with `runner` as the program of [`super::JailKind::Runner`] and
    /// `broker` as that of [`super::JailKind::Broker`].
    /// Call it before any key is loaded and before any other thread exists:
    /// a host's end of its socket is inheritable until that host has
    /// started.
    pub fn start(
        program: &Path,
        runner: &Path,
        broker: &Path,
        run_uids: std::ops::Range<u32>,
        count: usize,
    ) -> Result<Self, JailError> {
        Self::start_with_gateway(program, runner, broker, None, run_uids, count)
    }

    /// [`JailHost::start`], with `gateway` as the program of
    /// [`super::JailKind::Gateway`] if given.
    pub fn start_with_gateway(
        program: &Path,
        runner: &Path,
        broker: &Path,
        gateway: Option<&Path>,
        run_uids: std::ops::Range<u32>,
        count: usize,
    ) -> Result<Self, JailError> {
        let hosts = (0..count.max(1))
            .map(|_| Host::start(program, runner, broker, gateway, &run_uids))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(JailHost {
            hosts,
            next: AtomicUsize::new(0),
        })
    }

    /// The jail hosts' pids: every jailed process is a child of one.
    pub fn pids(&self) -> Vec<i32> {
        self.hosts.iter().map(|h| h.pid).collect()
    }

    /// Passes an answer on. When a host has just been found gone and no
    /// host is left, the daemon cannot start or end any run: it exits
    /// (non-zero), for the service manager to start it afresh with new
    /// jail hosts, rather than serve without them.
    fn check<T>(&self, answer: Result<T, JailError>) -> Result<T, JailError> {
        if let Err(JailError::Gone(_)) = &answer {
            if self.hosts.iter().all(|h| h.broken.load(Ordering::Acquire)) {
                tracing::error!("every jail host is gone; exiting so that the daemon is restarted");
                std::process::exit(70);
            }
        }
        answer
    }

    /// A host for a request that may go to any: the first free one, else
    /// the next in turn (waiting for it).
    fn any(&self) -> (usize, std::sync::MutexGuard<'_, OwnedFd>) {
        let n = self.hosts.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for k in 0..n {
            let i = (start + k) % n;
            if self.hosts[i].broken.load(Ordering::Acquire) {
                continue;
            }
            if let Ok(sock) = self.hosts[i].sock.try_lock() {
                return (i, sock);
            }
        }
        let i = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| !self.hosts[i].broken.load(Ordering::Acquire))
            .unwrap_or(start);
        (i, self.hosts[i].lock())
    }

    /// Starts a jailed process as `spec` says, joining the cgroup whose
    /// `cgroup.procs` is `cgroup` first if given, and given the working
    /// directory `workdir` (open, in the daemon's mount namespace) as
    /// `spec.workdir` says if given.
    pub fn spawn(
        &self,
        spec: SpawnRequest,
        cgroup: Option<BorrowedFd<'_>>,
        workdir: Option<BorrowedFd<'_>>,
    ) -> Result<Jailed, JailError> {
        self.spawn_attached(spec, cgroup, workdir, None)
    }

    /// Starts a jailed process of a kind with a control channel (the
    /// broker, the gateway) as `spec` says, with `control`, one end of a socket pair,
    /// as its descriptor 3.
    pub fn spawn_with_control(
        &self,
        spec: SpawnRequest,
        control: BorrowedFd<'_>,
    ) -> Result<Jailed, JailError> {
        self.spawn_attached(spec, None, None, Some(control))
    }

    fn spawn_attached(
        &self,
        spec: SpawnRequest,
        cgroup: Option<BorrowedFd<'_>>,
        workdir: Option<BorrowedFd<'_>>,
        control: Option<BorrowedFd<'_>>,
    ) -> Result<Jailed, JailError> {
        if spec.workdir.is_some() != workdir.is_some() {
            return Err(JailError::Protocol);
        }
        let spec = SpawnRequest {
            join_cgroup: cgroup.is_some(),
            control: control.is_some(),
            ..spec
        };
        let fds: Vec<BorrowedFd<'_>> = cgroup.into_iter().chain(workdir).chain(control).collect();
        let (host, sock) = self.any();
        let answer = self.hosts[host].call(sock, &Request::Spawn(spec), &fds);
        match self.check(answer)? {
            (Reply::Spawned { pid }, fds) if fds.len() == 1 => Ok(Jailed {
                pid,
                pidfd: fds.into_iter().next().ok_or(JailError::Protocol)?,
                reaped: false,
                host,
            }),
            _ => Err(JailError::Protocol),
        }
    }

    /// Sends SIGKILL to every process of `uid` (reaping `jailed`, the
    /// uid's jailed process, before and after if it has ended). True when
    /// no task of the uid is left at all.
    pub fn kill_uid(&self, uid: u32, jailed: Option<&mut Jailed>) -> Result<bool, JailError> {
        let reap = jailed.as_ref().filter(|j| !j.reaped).map(|j| j.pid);
        // Its own host reaps it; if that host is gone, any other kills the
        // uid (killing needs no parentage), and the zombie stays unreaped.
        let owner = jailed
            .as_ref()
            .filter(|j| !j.reaped)
            .map(|j| j.host)
            .filter(|&h| !self.hosts[h].broken.load(Ordering::Acquire));
        let (host, sock, reap) = match owner {
            Some(h) => (h, self.hosts[h].lock(), reap),
            None => {
                let (h, sock) = self.any();
                (h, sock, None)
            }
        };
        let answer = self.hosts[host].call(sock, &Request::Kill { uid, reap }, &[]);
        match self.check(answer)? {
            (Reply::Killed { none_left, reaped }, _) => {
                if let Some(j) = jailed {
                    j.reaped |= reaped;
                }
                Ok(none_left)
            }
            _ => Err(JailError::Protocol),
        }
    }

    /// Reaps `jailed` if it has ended; true once it is reaped.
    pub fn reap(&self, jailed: &mut Jailed) -> bool {
        if jailed.reaped {
            return true;
        }
        let host = &self.hosts[jailed.host];
        if let Ok((Reply::Reaped { reaped }, _)) =
            host.call(host.lock(), &Request::Reap { pid: jailed.pid }, &[])
        {
            jailed.reaped = reaped;
        }
        jailed.reaped
    }

    /// Waits (at most [`END_WAIT`]) until `jailed` has ended, and reaps
    /// it. One that outlives the wait — its uid's processes survived the
    /// kill, which the caller has already reported — is left to its host.
    pub fn wait(&self, jailed: &mut Jailed) {
        if !jailed.wait_ended_for(END_WAIT) {
            tracing::error!(pid = jailed.pid, "a jailed process outlives its teardown");
            return;
        }
        self.reap(jailed);
    }
}

impl Host {
    fn start(
        program: &Path,
        runner: &Path,
        broker: &Path,
        gateway: Option<&Path>,
        run_uids: &std::ops::Range<u32>,
    ) -> Result<Self, JailError> {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| JailError::Socket(e.into()))?;
        fcntl(theirs.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty()))
            .map_err(|e| JailError::Socket(e.into()))?;
        let mut command = std::process::Command::new(program);
        if let Some(gateway) = gateway {
            command.arg("--gateway").arg(gateway);
        }
        let child = command
            .arg("--fd")
            .arg(theirs.as_raw_fd().to_string())
            .arg("--daemon-pid")
            .arg(std::process::id().to_string())
            .arg("--runner")
            .arg(runner)
            .arg("--broker")
            .arg(broker)
            .arg("--run-uids")
            .arg(format!(
                "{}:{}",
                run_uids.start,
                run_uids.end - run_uids.start
            ))
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .current_dir("/")
            .spawn()
            .map_err(|e| JailError::Start(program.to_path_buf(), e))?;
        drop(theirs);
        let timeout = nix::sys::time::TimeVal::new(REPLY_TIMEOUT.as_secs() as i64, 0);
        nix::sys::socket::setsockopt(&ours, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| JailError::Socket(e.into()))?;
        let host = Host {
            sock: Mutex::new(ours),
            pid: child.id() as i32,
            broken: AtomicBool::new(false),
            child: Mutex::new(child),
        };
        let answer = host.call(host.lock(), &Request::Ping, &[]);
        match answer {
            Ok((Reply::Pong, _)) => Ok(host),
            Ok(_) => Err(JailError::Protocol),
            Err(JailError::Gone(e)) => Err(JailError::Handshake(e)),
            Err(e) => Err(e),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OwnedFd> {
        self.sock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One round trip on `sock`, this host's socket, held by the caller.
    fn call(
        &self,
        sock: std::sync::MutexGuard<'_, OwnedFd>,
        req: &Request,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(Reply, Vec<OwnedFd>), JailError> {
        let gone = || JailError::Gone(io::Error::other("an earlier request failed"));
        if self.broken.load(Ordering::Acquire) {
            return Err(gone());
        }
        let answer = wire::send(sock.as_fd(), req, fds).and_then(|()| {
            wire::recv::<Reply>(&*sock)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "it closed its socket"))
        });
        match answer {
            Ok((Reply::Failed { message }, _)) => Err(JailError::Refused(message)),
            Ok(ok) => Ok(ok),
            Err(e) => {
                self.broken.store(true, Ordering::Release);
                tracing::error!(error = %e, pid = self.pid, "a jail host is gone");
                // It may be stuck rather than dead: end it (same uid, no
                // capability needed), so it holds nothing and is reaped.
                let _ = self.child.lock().unwrap_or_else(|p| p.into_inner()).kill();
                Err(JailError::Gone(e))
            }
        }
    }
}

impl Drop for Host {
    /// Closing the socket ends the jail host; it is reaped here.
    fn drop(&mut self) {
        let sock = self.sock.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = nix::sys::socket::shutdown(sock.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = child.wait();
    }
}
