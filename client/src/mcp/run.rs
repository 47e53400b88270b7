//! `secret_run`: one daemon connection per run, which the server can cut
//! from another thread to cancel it (the daemon kills a run's whole process
//! tree when its caller disconnects).
//!
//! This speaks the run path of the wire protocol directly (handshake, `Run`
//! request, [`RunEvent`]s) rather than through [`crate::RunSession`], because
//! cancelling needs a handle on the socket that the session does not expose.
//!
//! Output is bounded: each of stdout and stderr keeps at most the call's
//! [`Limit`] ([`capture`](super::capture)); the rest is read and discarded so
//! the command runs to its natural end and its real exit status is reported
//! (the daemon's own per-rule output limit, 16 MiB by default, bounds how
//! long that can go on).

use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use aivault_proto::{
    decode, encode, read_frame, write_frame, EndReason, Hello, HelloReply, Reply, Request,
    RequestBody, Response, RunEvent, RunInput, RunRequest, Stream, HELLO_MAGIC, PROTOCOL_VERSION,
};

use super::capture::{Captured, Limit};
use super::progress::Progress;

/// Stdin bytes per frame (well under the frame limit).
const STDIN_CHUNK: usize = 64 * 1024;

/// Lets another thread abort a request: sets a flag and cuts the run's
/// daemon connection, if it has one.
#[derive(Debug, Default)]
pub struct Cancel {
    cancelled: AtomicBool,
    conn: Mutex<Option<UnixStream>>,
}

impl Cancel {
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = conn.as_ref() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Remembers the connection to cut; cuts it at once if already cancelled.
    pub(super) fn attach(&self, s: UnixStream) {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_cancelled() {
            let _ = s.shutdown(Shutdown::Both);
        }
        *conn = Some(s);
    }
}

/// A finished run.
#[derive(Debug)]
pub struct Outcome {
    pub command: String,
    pub code: i32,
    pub reason: EndReason,
    pub duration_ms: u64,
    pub redactions: u64,
    pub message: Option<String>,
    pub stdout: Captured,
    pub stderr: Captured,
}

/// Why a run produced no [`Outcome`]. Messages come from the daemon's small
/// error set or from this module, never from the command's environment.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot connect to aivaultd: {0} (is the daemon running?)")]
    Connect(std::io::Error),
    #[error("the daemon refused the connection: {0}")]
    Refused(String),
    /// The daemon refused the run (policy, unknown secret, ...).
    #[error("{code}: {message}")]
    Denied { code: &'static str, message: String },
    #[error("lost connection to aivaultd: {0}")]
    Lost(aivault_proto::FrameError),
    #[error("unexpected answer from the daemon")]
    Protocol,
    #[error("cancelled")]
    Cancelled,
}

fn lost(cancel: &Cancel, e: aivault_proto::FrameError) -> RunError {
    if cancel.is_cancelled() {
        RunError::Cancelled
    } else {
        RunError::Lost(e)
    }
}

/// Runs `req` with `stdin` as the command's standard input (empty: EOF at
/// once) and collects its redacted output.
pub fn run(
    socket: &Path,
    req: RunRequest,
    dir: Option<&std::os::fd::OwnedFd>,
    stdin: Vec<u8>,
    limit: Limit,
    cancel: &Cancel,
    progress: Option<&Progress>,
) -> Result<Outcome, RunError> {
    let mut stream = UnixStream::connect(socket).map_err(RunError::Connect)?;
    cancel.attach(stream.try_clone().map_err(RunError::Connect)?);
    if cancel.is_cancelled() {
        return Err(RunError::Cancelled);
    }
    let hello = Hello {
        magic: HELLO_MAGIC,
        version: PROTOCOL_VERSION,
        client: format!("vaultctl mcp {}", env!("CARGO_PKG_VERSION")),
    };
    let frame = |s: &mut UnixStream,
                 body: Result<Vec<u8>, aivault_proto::FrameError>|
     -> Result<(), RunError> {
        write_frame(s, &body.map_err(|e| lost(cancel, e))?).map_err(|e| lost(cancel, e))
    };
    // The request goes right behind the handshake (one round trip, not
    // two); a refused handshake is answered before the daemon closes, so
    // its reason is read even when the request could not be written.
    let sent = frame(&mut stream, encode(&hello))
        .and_then(|()| {
            frame(
                &mut stream,
                encode(&Request {
                    id: 1,
                    body: RequestBody::Run(req),
                }),
            )
        })
        .and_then(|()| match dir {
            // The working directory's descriptor, right behind the request.
            Some(dir) => {
                use std::os::fd::AsFd;
                crate::send_fd(&stream, dir.as_fd()).map_err(|e| lost(cancel, e))
            }
            None => Ok(()),
        });
    let reply: HelloReply = read_frame(&mut stream)
        .and_then(|b| decode(&b))
        .map_err(|e| lost(cancel, e))?;
    reply
        .result
        .map_err(|e| RunError::Refused(e.message.clone()))?;
    sent?;
    let mut resp: Response = read_frame(&mut stream)
        .and_then(|b| decode(&b))
        .map_err(|e| lost(cancel, e))?;
    // A rule that requires approval: the run waits for a person (bounded
    // by the daemon); the client hears "awaiting approval" meanwhile.
    while let Ok(Reply::AwaitingApproval(p)) = &resp.result {
        if let Some(progress) = progress {
            progress.awaiting(&aivault_proto::approval::format_id(p.id), &p.rule);
        }
        resp = read_frame(&mut stream)
            .and_then(|b| decode(&b))
            .map_err(|e| lost(cancel, e))?;
    }
    if let Some(progress) = progress {
        progress.approved();
    }
    let command = match resp.result {
        Ok(Reply::RunStarted { command }) => command,
        Ok(_) => return Err(RunError::Protocol),
        Err(e) => {
            return Err(RunError::Denied {
                code: e.code.as_str(),
                message: e.message,
            })
        }
    };

    // Stdin from its own thread, so a command that writes before reading
    // cannot deadlock against us.
    let mut writer = stream.try_clone().map_err(RunError::Connect)?;
    let feeder = std::thread::spawn(move || {
        for chunk in stdin.chunks(STDIN_CHUNK) {
            let Ok(body) = encode(&RunInput::Stdin(chunk.to_vec())) else {
                return;
            };
            if write_frame(&mut writer, &body).is_err() {
                return;
            }
        }
        if let Ok(body) = encode(&RunInput::StdinEof) {
            let _ = write_frame(&mut writer, &body);
            let _ = writer.flush();
        }
    });

    let mut stdout = Captured::new(limit);
    let mut stderr = Captured::new(limit);
    let result = loop {
        let body = match read_frame(&mut stream) {
            Ok(b) => b,
            Err(e) => break Err(lost(cancel, e)),
        };
        match decode::<RunEvent>(&body) {
            Ok(RunEvent::Output { stream: s, data }) => {
                if let Some(p) = progress {
                    p.output(data.len());
                }
                match s {
                    Stream::Stdout => stdout.push(&data),
                    Stream::Stderr => stderr.push(&data),
                }
            }
            Ok(RunEvent::Exit(exit)) => {
                break Ok(Outcome {
                    command,
                    code: exit.code,
                    reason: exit.reason,
                    duration_ms: exit.duration_ms,
                    redactions: exit.redactions,
                    message: exit.message,
                    stdout,
                    stderr,
                })
            }
            Err(_) => match decode::<Response>(&body) {
                Ok(Response { result: Err(e), .. }) => {
                    break Err(RunError::Denied {
                        code: e.code.as_str(),
                        message: e.message,
                    })
                }
                _ => break Err(RunError::Protocol),
            },
        }
    };
    // Closing our end also ends the feeder if the command never read stdin.
    let _ = stream.shutdown(Shutdown::Both);
    let _ = feeder.join();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_before_attach_cuts_at_once() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let c = Cancel::default();
        c.cancel();
        c.attach(a);
        let mut buf = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut b, &mut buf).unwrap(), 0);
    }
}
