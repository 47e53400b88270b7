//! Runs started over D-Bus.
//!
//! A D-Bus run is decided by [`crate::run::prepare::prepare_run`] and driven by
//! [`crate::run::supervise::run`] exactly like a socket run: the supervisor
//! gets one end of an in-process socket pair as its "caller connection", and
//! this module reads the other end like any client would. Cancelling a run is
//! closing that end, which the supervisor treats as a caller gone: every
//! process of the run is killed and the outcome audited.
//!
//! The [`Registry`] maps run ids (random) to their owner (uid and bus
//! connection), a cancel switch and the final status, so `CancelRun`,
//! `WaitRun` and a vanished bus connection can reach a run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aivault_proto::{decode, Reply, Response, RunEvent, RunExit, RunInput, RunRequest, Stream};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{oneshot, watch};

use super::error::{internal, VaultError};
use crate::ops::{Caller, Daemon};

/// How long a finished run's status waits for `WaitRun`.
const KEEP_FINISHED: Duration = Duration::from_secs(120);
/// Stdin is forwarded in pieces of this size.
const STDIN_CHUNK: usize = 64 * 1024;

/// How a run ended, as D-Bus callers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub code: i32,
    pub reason: String,
    pub bytes_out: u64,
    pub redactions: u64,
    pub message: String,
}

impl Finished {
    fn from_exit(exit: &RunExit) -> Self {
        Finished {
            code: exit.code,
            reason: exit.reason.as_str().into(),
            bytes_out: exit.bytes_out,
            redactions: exit.redactions,
            message: exit.message.clone().unwrap_or_default(),
        }
    }

    fn cancelled() -> Self {
        Finished {
            code: 128 + libc::SIGKILL,
            reason: "cancelled".into(),
            bytes_out: 0,
            redactions: 0,
            message: "the run was cancelled".into(),
        }
    }

    fn lost() -> Self {
        Finished {
            code: crate::run::relay::EXIT_RUNNER_FAILED,
            reason: aivault_proto::EndReason::RunnerFailed.as_str().into(),
            bytes_out: 0,
            redactions: 0,
            message: "the run ended without reporting a status".into(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    uid: u32,
    sender: String,
    cancel: Option<oneshot::Sender<()>>,
    done: watch::Receiver<Option<Finished>>,
    finished_at: Option<Instant>,
}

/// Most callers whose identity is remembered at once (a safety bound: the
/// entries go when their bus connections do).
const MAX_KNOWN_CALLERS: usize = 4096;

/// What the daemon keeps per peer of one bus connection: the runs they
/// started, and who they are (a unique bus name is never reused during the
/// bus's life, and a connection's credentials never change, so asking the
/// bus once per peer is enough).
#[derive(Debug, Default)]
pub struct Registry {
    runs: Mutex<HashMap<u64, Entry>>,
    callers: Mutex<HashMap<String, Caller>>,
}

/// What the driver of one run holds.
#[derive(Debug)]
pub struct Ticket {
    pub id: u64,
    pub cancel: oneshot::Receiver<()>,
    pub done: watch::Sender<Option<Finished>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a new run of `uid` on bus connection `sender`, under a
    /// fresh random id: ids say nothing of other runs and cannot be
    /// guessed (a run is still only its owner's to wait for or cancel).
    pub fn register(&self, uid: u32, sender: &str) -> Result<Ticket, VaultError> {
        let (cancel_tx, cancel) = oneshot::channel();
        let (done, done_rx) = watch::channel(None);
        let mut runs = self.lock();
        runs.retain(|_, e| e.finished_at.is_none_or(|t| t.elapsed() < KEEP_FINISHED));
        let id = loop {
            let id = random_id()?;
            if id != 0 && !runs.contains_key(&id) {
                break id;
            }
        };
        runs.insert(
            id,
            Entry {
                uid,
                sender: sender.to_string(),
                cancel: Some(cancel_tx),
                done: done_rx,
                finished_at: None,
            },
        );
        Ok(Ticket { id, cancel, done })
    }

    /// Marks a run finished and publishes its status.
    pub fn finish(&self, ticket_done: &watch::Sender<Option<Finished>>, id: u64, f: Finished) {
        ticket_done.send_replace(Some(f));
        if let Some(e) = self.lock().get_mut(&id) {
            e.finished_at = Some(Instant::now());
            e.cancel = None;
        }
    }

    /// Forgets a run whose status was delivered as a method reply.
    pub fn forget(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Cancels a run of `uid`. Another user's run is "not found": its
    /// existence is not revealed.
    pub fn cancel(&self, id: u64, uid: u32) -> Result<(), VaultError> {
        let mut runs = self.lock();
        match runs.get_mut(&id) {
            Some(e) if e.uid == uid => {
                if let Some(c) = e.cancel.take() {
                    let _ = c.send(());
                }
                Ok(())
            }
            _ => Err(not_found(id)),
        }
    }

    /// The identity the bus gave for `sender`, if already asked.
    pub fn known_caller(&self, sender: &str) -> Option<Caller> {
        let callers = self.callers.lock().unwrap_or_else(|p| p.into_inner());
        callers.get(sender).copied()
    }

    /// Remembers the identity the bus gave for `sender`.
    pub fn remember_caller(&self, sender: &str, caller: Caller) {
        let mut callers = self.callers.lock().unwrap_or_else(|p| p.into_inner());
        if callers.len() >= MAX_KNOWN_CALLERS {
            callers.clear();
        }
        callers.insert(sender.to_string(), caller);
    }

    /// Cancels every run started by a bus connection that has gone, drops
    /// the statuses it can no longer collect, and forgets who it was.
    pub fn connection_gone(&self, sender: &str) {
        self.callers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sender);
        let mut runs = self.lock();
        runs.retain(|_, e| {
            if e.sender != sender {
                return true;
            }
            if let Some(c) = e.cancel.take() {
                let _ = c.send(());
            }
            e.finished_at.is_none()
        });
    }

    /// Waits for a run of `uid` to end and returns its status (once).
    pub async fn wait(&self, id: u64, uid: u32) -> Result<Finished, VaultError> {
        let mut done = match self.lock().get(&id) {
            Some(e) if e.uid == uid => e.done.clone(),
            _ => return Err(not_found(id)),
        };
        let status = done
            .wait_for(Option::is_some)
            .await
            .map(|f| f.clone())
            .ok()
            .flatten()
            .unwrap_or_else(Finished::lost);
        self.forget(id);
        Ok(status)
    }

    /// Runs of `uid` not yet ended.
    pub fn active_of(&self, uid: u32) -> usize {
        self.lock()
            .values()
            .filter(|e| e.uid == uid && e.finished_at.is_none())
            .count()
    }

    /// Cancels every run (the bus connection is lost or the daemon stops).
    pub fn cancel_all(&self) {
        for e in self.lock().values_mut() {
            if let Some(c) = e.cancel.take() {
                let _ = c.send(());
            }
        }
    }
}

/// 64 bits from the kernel's random source (the id's D-Bus type is `t`).
fn random_id() -> Result<u64, VaultError> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).map_err(|_| internal("no random run id"))?;
    Ok(u64::from_ne_bytes(bytes))
}

fn not_found(id: u64) -> VaultError {
    VaultError::NotFound(format!("no run {id} of this caller"))
}

/// A run the supervisor has started: the caller side of its stream.
#[derive(Debug)]
pub struct Started {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    /// When the supervisor has surely ended the run (its timeout, plus the
    /// time it gives a caller to take the final status): a driver still
    /// waiting then, on a caller that does not read, gives up.
    give_up: tokio::time::Instant,
}

/// Beyond a run's timeout, how long its driver may still wait.
const GIVE_UP_AFTER_TIMEOUT: Duration = Duration::from_secs(30);

/// Decides and starts a run for `caller`: the same limits, policy decision
/// and audit as a socket run. Returns once the command has started, or with
/// the reason it was refused.
pub async fn start(
    daemon: &Arc<Daemon>,
    caller: Caller,
    req: RunRequest,
) -> Result<Started, VaultError> {
    let slot = daemon
        .runs()
        .admit(caller.uid)
        .map_err(|why| VaultError::Busy(why.to_string()))?;
    // The stream first: once decided, an allowed run is recorded, and
    // nothing may fail before the supervisor takes it (which audits its end).
    let (ours, theirs) =
        UnixStream::pair().map_err(|_| internal("cannot create the run's stream"))?;
    let decided = crate::run::supervise::decide(&daemon.run_host(), caller, req, None).await?;
    let timeout = decided.prepared().timeout;
    let d = daemon.clone();
    tokio::spawn(async move {
        crate::run::supervise::run(d, decided, theirs, 0, slot).await;
    });
    let (mut reader, writer) = ours.into_split();
    // A run that waits for a person's approval says so first (bounded by
    // the approval timeout); the method returns once it started or failed.
    let first = loop {
        let frame = crate::frames::read(&mut reader)
            .await
            .map_err(|_| internal("the run ended before it started"))?;
        match decode::<Response>(&frame) {
            Ok(Response {
                result: Ok(Reply::AwaitingApproval(_)),
                ..
            }) => continue,
            _ => break frame,
        }
    };
    let give_up = tokio::time::Instant::now() + timeout + GIVE_UP_AFTER_TIMEOUT;
    match decode::<Response>(&first) {
        Ok(Response {
            result: Ok(Reply::RunStarted { .. }),
            ..
        }) => Ok(Started {
            reader,
            writer,
            give_up,
        }),
        Ok(Response { result: Err(e), .. }) => Err(e.into()),
        _ => Err(internal("unexpected message from the run")),
    }
}

/// Where a run's redacted output goes.
#[derive(Debug)]
pub enum Sink {
    /// Kept for the method reply, at most `cap` bytes per stream.
    Collect {
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        cap: usize,
        truncated: bool,
    },
    /// Written to pipes whose read ends the caller holds. A stream whose
    /// reader has gone is dropped; the run goes on.
    Pipes {
        stdout: Option<tokio::net::unix::pipe::Sender>,
        stderr: Option<tokio::net::unix::pipe::Sender>,
    },
}

impl Sink {
    async fn put(&mut self, stream: Stream, data: &[u8]) {
        match self {
            Sink::Collect {
                stdout,
                stderr,
                cap,
                truncated,
            } => {
                let buf = match stream {
                    Stream::Stdout => stdout,
                    Stream::Stderr => stderr,
                };
                let room = cap.saturating_sub(buf.len());
                if data.len() > room {
                    *truncated = true;
                }
                buf.extend_from_slice(&data[..data.len().min(room)]);
            }
            Sink::Pipes { stdout, stderr } => {
                let pipe = match stream {
                    Stream::Stdout => stdout,
                    Stream::Stderr => stderr,
                };
                if let Some(p) = pipe {
                    if p.write_all(data).await.is_err() {
                        *pipe = None;
                    }
                }
            }
        }
    }
}

/// Feeds `stdin`, relays output into `sink` until the run ends or the
/// ticket is cancelled, and returns the final status.
pub async fn drive(
    started: Started,
    stdin: Vec<u8>,
    sink: &mut Sink,
    cancel: &mut oneshot::Receiver<()>,
) -> Finished {
    let Started {
        mut reader,
        mut writer,
        give_up,
    } = started;
    // Input goes on its own task so that a command which does not read its
    // stdin cannot stall the output. The write half stays open until the
    // run ends: closing it is how a caller cancels.
    let feeder = tokio::spawn(async move {
        for chunk in stdin.chunks(STDIN_CHUNK) {
            let body = match aivault_proto::encode(&RunInput::Stdin(chunk.to_vec())) {
                Ok(b) => b,
                Err(_) => break,
            };
            if crate::frames::write(&mut writer, &body).await.is_err() {
                return writer;
            }
        }
        if let Ok(body) = aivault_proto::encode(&RunInput::StdinEof) {
            let _ = crate::frames::write(&mut writer, &body).await;
        }
        let _ = writer.flush().await;
        writer
    });
    // Every wait, including a write into a pipe its reader has stopped
    // emptying, races the cancel switch and the give-up time.
    let finished = loop {
        let body = tokio::select! {
            biased;
            _ = &mut *cancel => break Finished::cancelled(),
            _ = tokio::time::sleep_until(give_up) => break Finished::lost(),
            body = crate::frames::read(&mut reader) => body,
        };
        let Ok(body) = body else {
            break Finished::lost();
        };
        match decode::<RunEvent>(&body) {
            Ok(RunEvent::Output { stream, data }) => tokio::select! {
                biased;
                _ = &mut *cancel => break Finished::cancelled(),
                _ = tokio::time::sleep_until(give_up) => break Finished::lost(),
                _ = sink.put(stream, &data) => {}
            },
            Ok(RunEvent::Exit(exit)) => break Finished::from_exit(&exit),
            Err(_) => break Finished::lost(),
        }
    };
    // Closing both halves ends the run if it is still going.
    feeder.abort();
    let _ = feeder.await;
    drop(reader);
    if let Sink::Pipes { stdout, stderr } = sink {
        // EOF for the caller before the status is published.
        stdout.take();
        stderr.take();
    }
    finished
}
