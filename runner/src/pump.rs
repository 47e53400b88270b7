//! The pump loop: one thread, one `poll` over the daemon socket, the
//! command's stdout and stderr, its stdin (only while bytes wait to be
//! written) and a pidfd of the command.
//!
//! * Output is read 64 KiB at a time through one [`Redactor`] per stream
//!   and sent as `Output` events; a stream quiet for [`IDLE_FLUSH`] gets
//!   `flush_idle` once so prompts appear.
//! * `Stdin` frames are buffered and written without blocking; `StdinEof`
//!   closes the pipe once the buffer is drained; `Signal` forwards SIGINT,
//!   SIGTERM and SIGHUP to the command and ignores anything else.
//! * When the command has been reaped and both output pipes reached end of
//!   file — or [`EOF_GRACE`] after reaping, if a background process keeps a
//!   pipe open — the redactors are finished and the outcome returned.
//! * If the daemon goes away, or anything else fails, every process of the
//!   run is killed and the command reaped before the error is returned.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aivault_proto::{FrameError, RunInput, Stream};
use aivault_redact::{Patterns, Redactor};
use aivault_runner::sys;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::exec::{reap, Started};
use crate::wire::{send_output, FrameReader};

/// A stream holding back bytes this long without new input gets `flush_idle`.
pub const IDLE_FLUSH: Duration = Duration::from_millis(20);
/// How long to wait for pipe end-of-file once the command was reaped.
pub const EOF_GRACE: Duration = Duration::from_millis(200);
/// Without a pidfd (kernels before 5.3), how often to check the command.
const REAP_POLL: Duration = Duration::from_millis(50);
/// Bytes read from an output pipe at a time.
const READ_SIZE: usize = 64 * 1024;
/// Stop reading the daemon socket while this much stdin waits for the command.
const STDIN_BACKLOG: usize = 1 << 20;

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Exit status, or 128 + signal number.
    pub code: i32,
    pub signaled: bool,
    /// Redacted regions on both streams.
    pub redactions: u64,
}

/// Why the loop stopped before the command ended; the run has been killed.
#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    #[error("the daemon closed the connection")]
    DaemonGone,
    #[error("daemon connection failed")]
    Socket(#[source] FrameError),
    #[error("unexpected message from the daemon")]
    Protocol,
    #[error("poll failed")]
    Poll(#[source] Errno),
    #[error("reading the command's output failed")]
    Output(#[source] io::Error),
    #[error("waiting for the command failed")]
    Wait(#[source] Errno),
}

/// Runs the loop until the command has ended and its output is sent.
/// `sweep_uid`: on failure, kill every process of the run's uid too — only
/// when the uid is the run's own (never in caller mode, where it would hit
/// the caller's other processes; the daemon kills that run's cgroup).
pub fn run(
    sock: &mut UnixStream,
    started: Started,
    patterns: &Arc<Patterns>,
    sweep_uid: bool,
) -> Result<Outcome, PumpError> {
    // Without a pidfd the loop polls waitpid instead.
    let pidfd = sys::pidfd_open(started.pid).ok();
    let mut pump = Pump {
        sock,
        reader: FrameReader::default(),
        child: started.pid,
        sweep_uid,
        pidfd,
        status: None,
        reaped_at: None,
        outputs: [
            Output::new(Stream::Stdout, started.stdout, patterns),
            Output::new(Stream::Stderr, started.stderr, patterns),
        ],
        input: Input {
            file: Some(started.stdin),
            pending: Vec::new(),
            eof: false,
        },
        read_buf: vec![0; READ_SIZE],
    };
    let result = pump.run();
    if result.is_err() {
        pump.terminate();
    }
    result
}

struct Output {
    stream: Stream,
    file: Option<File>,
    redactor: Redactor,
    last_data: Instant,
    /// Input arrived since the last idle flush.
    idle_pending: bool,
    scratch: Vec<u8>,
}

impl Output {
    fn new(stream: Stream, file: File, patterns: &Arc<Patterns>) -> Output {
        Output {
            stream,
            file: Some(file),
            redactor: Redactor::new(Arc::clone(patterns)),
            last_data: Instant::now(),
            idle_pending: false,
            scratch: Vec::new(),
        }
    }

    fn idle_deadline(&self) -> Option<Instant> {
        (self.idle_pending && self.redactor.held() > 0).then(|| self.last_data + IDLE_FLUSH)
    }
}

struct Input {
    file: Option<File>,
    pending: Vec<u8>,
    /// `StdinEof` received: close once `pending` is written.
    eof: bool,
}

#[derive(Clone, Copy)]
enum Slot {
    Socket,
    Out(usize),
    Stdin,
    Child,
}

struct Pump<'a> {
    sock: &'a mut UnixStream,
    reader: FrameReader,
    child: Pid,
    sweep_uid: bool,
    pidfd: Option<OwnedFd>,
    status: Option<WaitStatus>,
    reaped_at: Option<Instant>,
    outputs: [Output; 2],
    input: Input,
    read_buf: Vec<u8>,
}

impl Pump<'_> {
    fn run(&mut self) -> Result<Outcome, PumpError> {
        loop {
            if let (Some(status), Some(reaped_at)) = (self.status, self.reaped_at) {
                let all_eof = self.outputs.iter().all(|o| o.file.is_none());
                if all_eof || reaped_at.elapsed() >= EOF_GRACE {
                    return self.finish(status);
                }
            }
            for (slot, _) in self.wait()? {
                match slot {
                    Slot::Socket => self.on_socket()?,
                    Slot::Out(i) => self.on_output(i)?,
                    Slot::Stdin => self.flush_stdin(),
                    Slot::Child => self.check_child()?,
                }
            }
            if self.status.is_none() && self.pidfd.is_none() {
                self.check_child()?;
            }
            self.idle_flush()?;
        }
    }

    /// One `poll`; returns the ready slots (none on timeout or EINTR).
    fn wait(&self) -> Result<Vec<(Slot, PollFlags)>, PumpError> {
        let mut slots = Vec::with_capacity(5);
        let mut fds = Vec::with_capacity(5);
        // Always polled: hang-up is reported even without POLLIN.
        let socket_events = if self.input.pending.len() < STDIN_BACKLOG {
            PollFlags::POLLIN
        } else {
            PollFlags::empty()
        };
        slots.push(Slot::Socket);
        fds.push(PollFd::new(self.sock.as_fd(), socket_events));
        for (i, out) in self.outputs.iter().enumerate() {
            if let Some(file) = &out.file {
                slots.push(Slot::Out(i));
                fds.push(PollFd::new(file.as_fd(), PollFlags::POLLIN));
            }
        }
        if let Some(file) = &self.input.file {
            if !self.input.pending.is_empty() {
                slots.push(Slot::Stdin);
                fds.push(PollFd::new(file.as_fd(), PollFlags::POLLOUT));
            }
        }
        if let Some(pidfd) = &self.pidfd {
            slots.push(Slot::Child);
            fds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, self.timeout()) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(Vec::new()),
            Err(e) => return Err(PumpError::Poll(e)),
        }
        Ok(slots
            .into_iter()
            .zip(
                fds.iter()
                    .map(|fd| fd.revents().unwrap_or(PollFlags::empty())),
            )
            .filter(|(_, revents)| !revents.is_empty())
            .collect())
    }

    fn timeout(&self) -> PollTimeout {
        let now = Instant::now();
        let deadlines = [
            self.outputs[0].idle_deadline(),
            self.outputs[1].idle_deadline(),
            self.reaped_at.map(|t| t + EOF_GRACE),
            (self.status.is_none() && self.pidfd.is_none()).then(|| now + REAP_POLL),
        ];
        match deadlines.into_iter().flatten().min() {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let wait = deadline.saturating_duration_since(now);
                // Round up so the deadline has passed when poll returns.
                let ms = wait.as_micros().div_ceil(1000);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        }
    }

    fn on_socket(&mut self) -> Result<(), PumpError> {
        match self.reader.fill(&mut *self.sock) {
            Ok(0) => {
                if !self.reader.is_empty() {
                    eprintln!("aivault-runner: the daemon closed the connection mid-frame");
                }
                return Err(PumpError::DaemonGone);
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(PumpError::DaemonGone)
            }
            Err(e) => return Err(PumpError::Socket(FrameError::Io(e))),
        }
        while let Some(body) = self.reader.next_frame().map_err(PumpError::Socket)? {
            let input: RunInput = aivault_proto::decode(&body).map_err(|_| PumpError::Protocol)?;
            self.on_input(input);
        }
        Ok(())
    }

    fn on_input(&mut self, input: RunInput) {
        match input {
            RunInput::Stdin(bytes) => {
                if self.input.file.is_some() && !self.input.eof {
                    self.input.pending.extend_from_slice(&bytes);
                    self.flush_stdin();
                }
            }
            RunInput::StdinEof => {
                self.input.eof = true;
                self.flush_stdin();
            }
            RunInput::Signal(number) => {
                let signal = match number {
                    libc::SIGINT => Signal::SIGINT,
                    libc::SIGTERM => Signal::SIGTERM,
                    libc::SIGHUP => Signal::SIGHUP,
                    _ => {
                        eprintln!("aivault-runner: not forwarding signal {number}");
                        return;
                    }
                };
                // Once reaped, the pid may belong to someone else.
                if self.status.is_none() {
                    let _ = kill(self.child, signal);
                }
            }
        }
    }

    /// Writes as much pending stdin as the pipe takes; closes it at EOF.
    fn flush_stdin(&mut self) {
        let input = &mut self.input;
        let Some(file) = &mut input.file else {
            input.pending.clear();
            return;
        };
        while !input.pending.is_empty() {
            match file.write(&input.pending) {
                Ok(n) => {
                    input.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EPIPE: the command closed its stdin; drop what is left.
                Err(_) => {
                    input.file = None;
                    input.pending.clear();
                    return;
                }
            }
        }
        if input.eof {
            input.file = None;
        }
    }

    fn on_output(&mut self, i: usize) -> Result<(), PumpError> {
        let out = &mut self.outputs[i];
        let Some(file) = &mut out.file else {
            return Ok(());
        };
        let buf = &mut self.read_buf;
        out.scratch.clear();
        match file.read(buf) {
            Ok(0) => {
                out.file = None;
                out.idle_pending = false;
                out.redactor.finish(&mut out.scratch);
            }
            Ok(n) => {
                out.redactor.write(&buf[..n], &mut out.scratch);
                out.last_data = Instant::now();
                out.idle_pending = true;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(PumpError::Output(e)),
        }
        send_output(&mut *self.sock, out.stream, &out.scratch).map_err(PumpError::Socket)
    }

    fn idle_flush(&mut self) -> Result<(), PumpError> {
        for out in &mut self.outputs {
            if out.idle_pending && out.last_data.elapsed() >= IDLE_FLUSH {
                out.idle_pending = false;
                out.scratch.clear();
                out.redactor.flush_idle(&mut out.scratch);
                send_output(&mut *self.sock, out.stream, &out.scratch)
                    .map_err(PumpError::Socket)?;
            }
        }
        Ok(())
    }

    fn check_child(&mut self) -> Result<(), PumpError> {
        match waitpid(self.child, Some(WaitPidFlag::WNOHANG)) {
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                self.status = Some(status);
                self.reaped_at = Some(Instant::now());
                self.pidfd = None;
                Ok(())
            }
            Ok(_) | Err(Errno::EINTR) => Ok(()),
            Err(e) => Err(PumpError::Wait(e)),
        }
    }

    fn finish(&mut self, status: WaitStatus) -> Result<Outcome, PumpError> {
        let mut redactions = 0;
        for out in &mut self.outputs {
            out.scratch.clear();
            out.redactor.finish(&mut out.scratch);
            send_output(&mut *self.sock, out.stream, &out.scratch).map_err(PumpError::Socket)?;
            redactions += out.redactor.counts().values().sum::<u64>();
        }
        let (code, signaled) = match status {
            WaitStatus::Signaled(_, signal, _) => (128 + signal as i32, true),
            WaitStatus::Exited(_, code) => (code, false),
            // `check_child` stores nothing else.
            _ => (128, true),
        };
        Ok(Outcome {
            code,
            signaled,
            redactions,
        })
    }

    /// Kills every process of the run it can reach and reaps the command.
    ///
    /// The command leads its own session, so its process group goes first.
    /// With `sweep_uid`, `kill(-1)` then reaches every process this one may
    /// signal: those of the run's uid (the uid is fresh, so only this
    /// run's), and with Landlock's signal scope only those inside this
    /// sandbox. The runner itself is spared by the kernel. In caller mode
    /// the daemon's `cgroup.kill` ends whatever left the group.
    fn terminate(&mut self) {
        if self.status.is_none() {
            let _ = kill(self.child, Signal::SIGKILL);
        }
        let _ = kill(Pid::from_raw(-self.child.as_raw()), Signal::SIGKILL);
        if self.sweep_uid {
            let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        }
        if self.status.is_none() {
            self.status = reap(self.child);
        }
    }
}
