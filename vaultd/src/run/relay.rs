//! Moving bytes during a run: caller ↔ daemon ↔ runner.
//!
//! Nothing here ever blocks on a peer. Each socket has a reader task feeding
//! a bounded channel and a writer task draining one; the loop only forwards
//! when the receiving side's queue has room (back-pressure instead of
//! blocking), and the deadline and the caller's hang-up stay observable at
//! every moment. A caller that stops reading or a command that stops reading
//! its stdin can therefore stall its own run, but never past its timeout.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use aivault_proto::{
    decode, encode, EndReason, Enforcement, RunEvent, RunInput, RunnerEvent, Stream,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::frames;

/// Frames queued towards one peer.
const QUEUE: usize = 32;
/// Caller stdin held in the daemon while the runner's queue is full.
const MAX_PENDING_STDIN: usize = 1024 * 1024;
/// Grace between SIGTERM and the end of the run when it times out.
pub const TERM_GRACE: Duration = Duration::from_secs(2);
/// How often a back-pressured caller is checked for having hung up.
const HANGUP_CHECK: Duration = Duration::from_millis(250);

pub const EXIT_TIMEOUT: i32 = 124;
pub const EXIT_OUTPUT_LIMIT: i32 = 125;
pub const EXIT_RUNNER_FAILED: i32 = 126;

/// Reads frames from `r` into a bounded channel until EOF or a bad frame.
pub fn reader<R, T>(mut r: R) -> (mpsc::Receiver<T>, JoinHandle<()>)
where
    R: AsyncRead + Unpin + Send + 'static,
    T: serde::de::DeserializeOwned + Send + 'static,
{
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = tokio::spawn(async move {
        while let Ok(body) = frames::read(&mut r).await {
            let Ok(msg) = decode::<T>(&body) else { break };
            if tx.send(msg).await.is_err() {
                break;
            }
        }
    });
    (rx, task)
}

/// Writes encoded frame bodies from a bounded channel until it closes.
/// With `wipe`, each body is zeroized once written (frames to the runner
/// carry secret values; output to the caller is already redacted).
pub fn writer<W>(mut w: W, wipe: bool) -> (mpsc::Sender<Vec<u8>>, JoinHandle<()>)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    let task = tokio::spawn(async move {
        while let Some(mut body) = rx.recv().await {
            let sent = frames::write(&mut w, &body).await;
            if wipe {
                zeroize::Zeroize::zeroize(&mut body);
            }
            if sent.is_err() {
                break;
            }
        }
    });
    (tx, task)
}

/// Queues a message without waiting; false if the queue is full or closed.
pub fn offer<T: serde::Serialize>(tx: &mpsc::Sender<Vec<u8>>, msg: &T) -> bool {
    match encode(msg) {
        Ok(body) => tx.try_send(body).is_ok(),
        Err(_) => false,
    }
}

/// Whether the peer closed its end (checked without reading from it).
pub fn hung_up(probe: BorrowedFd<'_>) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    // POLLRDHUP: the peer shut down its writing side (nix has no constant).
    let rdhup = PollFlags::from_bits_retain(libc::POLLRDHUP);
    let mut fds = [PollFd::new(probe, rdhup)];
    match poll(&mut fds, PollTimeout::ZERO) {
        // nix's `revents` is `None` for bits it does not know, and
        // POLLRDHUP is one: `None` is the peer's shutdown.
        Ok(n) if n > 0 => fds[0]
            .revents()
            .is_none_or(|r| r.intersects(rdhup | PollFlags::POLLHUP | PollFlags::POLLERR)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::hung_up;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_peer_that_closes_or_shuts_down_has_hung_up() {
        let (a, b) = UnixStream::pair().unwrap();
        assert!(!hung_up(a.as_fd()), "an open peer");
        b.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(hung_up(a.as_fd()), "a peer that shut down its writing side");
        let (c, d) = UnixStream::pair().unwrap();
        drop(d);
        assert!(hung_up(c.as_fd()), "a closed peer");
    }
}

/// What the relay observed.
#[derive(Debug)]
pub struct Relayed {
    pub code: i32,
    pub reason: EndReason,
    pub bytes_out: u64,
    pub redactions: u64,
    pub message: Option<String>,
    /// What the runner reported enforcing; `None` if it never confined itself.
    pub enforcement: Option<Enforcement>,
}

/// The two ends of a run as the relay sees them.
#[derive(Debug)]
pub struct Ends {
    pub from_runner: mpsc::Receiver<RunnerEvent>,
    pub to_runner: mpsc::Sender<Vec<u8>>,
    pub from_caller: mpsc::Receiver<RunInput>,
    pub to_caller: mpsc::Sender<Vec<u8>>,
    /// A duplicate of the caller's socket, polled for hang-up only.
    pub caller_probe: OwnedFd,
}

/// Relays until the command exits, the deadline passes, the output limit is
/// reached or the caller hangs up.
pub async fn relay(mut ends: Ends, deadline: tokio::time::Instant, max_output: u64) -> Relayed {
    let mut out = Relayed {
        code: EXIT_RUNNER_FAILED,
        reason: EndReason::RunnerFailed,
        bytes_out: 0,
        redactions: 0,
        message: None,
        enforcement: None,
    };
    let mut pending: VecDeque<RunInput> = VecDeque::new();
    let mut pending_bytes = 0usize;
    let mut check = tokio::time::interval(HANGUP_CHECK);
    loop {
        // Forward held stdin as far as the runner's queue allows.
        while let Some(front) = pending.front() {
            if !offer(&ends.to_runner, front) {
                break;
            }
            if let Some(RunInput::Stdin(data)) = pending.pop_front() {
                pending_bytes -= data.len();
            }
        }
        let caller_room = ends.to_caller.capacity() > 0;
        let accept_input = pending_bytes < MAX_PENDING_STDIN;
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(deadline) => break,
            _ = check.tick() => {
                if hung_up(ends.caller_probe.as_fd()) {
                    out.reason = EndReason::Cancelled;
                    out.code = 128 + libc::SIGKILL;
                    return out;
                }
            }
            // Wake as soon as a full queue has room again (the permit is
            // given back at once; this loop is the only sender).
            room = ends.to_caller.reserve(), if !caller_room => {
                if room.is_err() {
                    out.reason = EndReason::Cancelled;
                    out.code = 128 + libc::SIGKILL;
                    return out;
                }
            }
            room = ends.to_runner.reserve(), if !pending.is_empty() => {
                if room.is_err() {
                    // The runner is going away; its end arrives on from_runner.
                    pending.clear();
                    pending_bytes = 0;
                }
            }
            ev = ends.from_runner.recv(), if caller_room => match ev {
                Some(RunnerEvent::Confined { enforcement }) => {
                    out.enforcement = Some(enforcement);
                }
                Some(RunnerEvent::Output { stream, data }) => {
                    if forward_output(&ends.to_caller, &mut out, stream, data, max_output) {
                        return out;
                    }
                }
                Some(RunnerEvent::Exit { code, signaled, redactions, message }) => {
                    out.code = code;
                    out.redactions = redactions;
                    out.message = message;
                    out.reason = if signaled { EndReason::Signaled } else { EndReason::Exited };
                    return out;
                }
                None => {
                    out.message = Some("the runner ended without reporting an exit status".into());
                    return out;
                }
            },
            input = ends.from_caller.recv(), if accept_input => match input {
                Some(RunInput::Signal(n)) if ![libc::SIGINT, libc::SIGTERM, libc::SIGHUP].contains(&n) => {}
                Some(input) => {
                    if let RunInput::Stdin(data) = &input {
                        pending_bytes += data.len();
                    }
                    pending.push_back(input);
                }
                None => {
                    out.reason = EndReason::Cancelled;
                    out.code = 128 + libc::SIGKILL;
                    return out;
                }
            },
        }
    }
    timed_out(ends, out, max_output).await
}

/// Sends output on, within the limit. True when the limit ends the run.
fn forward_output(
    to_caller: &mpsc::Sender<Vec<u8>>,
    out: &mut Relayed,
    stream: Stream,
    data: Vec<u8>,
    max_output: u64,
) -> bool {
    let room = max_output.saturating_sub(out.bytes_out);
    let len = data.len();
    let take = (len as u64).min(room) as usize;
    out.bytes_out += take as u64;
    if take > 0 {
        let mut data = data;
        data.truncate(take);
        if !offer(to_caller, &RunEvent::Output { stream, data }) {
            out.reason = EndReason::Cancelled;
            out.code = 128 + libc::SIGKILL;
            return true;
        }
    }
    if take == len {
        return false;
    }
    // The limit is reached: say so (best effort) and stop the run.
    let note = format!("\n[aivault: output limit of {max_output} bytes reached; run stopped]\n");
    let _ = offer(
        to_caller,
        &RunEvent::Output {
            stream: Stream::Stderr,
            data: note.into_bytes(),
        },
    );
    out.reason = EndReason::OutputLimit;
    out.code = EXIT_OUTPUT_LIMIT;
    true
}

/// The deadline passed: SIGTERM, then a short grace in which output already
/// produced still reaches the caller (if it has room).
async fn timed_out(mut ends: Ends, mut out: Relayed, max_output: u64) -> Relayed {
    let _ = offer(&ends.to_runner, &RunInput::Signal(libc::SIGTERM));
    let grace = tokio::time::sleep(TERM_GRACE);
    tokio::pin!(grace);
    loop {
        let caller_room = ends.to_caller.capacity() > 0;
        tokio::select! {
            _ = &mut grace => break,
            room = ends.to_caller.reserve(), if !caller_room => {
                if room.is_err() {
                    break;
                }
            }
            ev = ends.from_runner.recv(), if caller_room => match ev {
                Some(RunnerEvent::Output { stream, data }) => {
                    if forward_output(&ends.to_caller, &mut out, stream, data, max_output) {
                        break;
                    }
                }
                Some(RunnerEvent::Exit { redactions, .. }) => {
                    out.redactions = redactions;
                    break;
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    out.reason = EndReason::Timeout;
    out.code = EXIT_TIMEOUT;
    out.message = Some("timed out".into());
    out
}
