//! `vaultctl run`: stream stdin to the command, its redacted output back,
//! forward SIGINT/SIGTERM/SIGHUP, and exit with the command's status.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};

use aivault_client::{ClientError, RunSession};
use aivault_proto::{RunEvent, RunInput, RunRequest, SecretAsk, Stream, WorkdirMode};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::endpoint::Endpoint;
use crate::error::{CtlError, EXIT_RUN_LOST};
use crate::report::Ui;
use crate::time::parse_duration_ms;
use aivault_client::cli::{RunArgs, WorkdirArg};

fn secret_asks(specs: &[String]) -> Result<Vec<SecretAsk>, CtlError> {
    specs
        .iter()
        .map(|s| {
            let (name, env) = match s.split_once('=') {
                Some((n, e)) => (n, Some(e.to_string())),
                None => (s.as_str(), None),
            };
            if name.is_empty() || env.as_deref() == Some("") {
                return Err(CtlError::Usage(format!(
                    "invalid --secret {s:?}: use NAME, NAME=ENV or a pattern such as 'aws/*'"
                )));
            }
            if name.contains('*') && env.is_some() {
                return Err(CtlError::Usage(format!(
                    "invalid --secret {s:?}: a pattern selects several secrets, so it takes no =ENV"
                )));
            }
            Ok(SecretAsk {
                name: name.to_string(),
                env,
            })
        })
        .collect()
}

/// The daemon runs a bare name found in the policy's search path, or an
/// absolute path; a path relative to the caller's directory it would
/// refuse, so it is refused here as the usage error it is.
fn check_command(argv: &[String]) -> Result<(), CtlError> {
    let Some(cmd) = argv.first() else {
        return Err(CtlError::Usage("no command given".into()));
    };
    let relative = (cmd.contains('/') && !cmd.starts_with('/')) || cmd == "." || cmd == "..";
    if relative || cmd.is_empty() {
        return Err(CtlError::Usage(format!(
            "{}: not run: give the command's bare name (looked up in the policy's search path) or its absolute path",
            crate::text::escape(cmd)
        )));
    }
    Ok(())
}

pub fn run(ep: &Endpoint, ui: Ui, args: RunArgs) -> Result<i32, CtlError> {
    check_command(&args.command)?;
    let timeout_ms = args.timeout.as_deref().map(parse_duration_ms).transpose()?;
    let workdir = args.workdir.map(|w| match w {
        WorkdirArg::ReadOnly => WorkdirMode::ReadOnly,
        WorkdirArg::ReadWrite => WorkdirMode::ReadWrite,
    });
    // The directory goes to the daemon as a descriptor opened here, with
    // this process's own permissions, never as a path.
    let dir = match workdir {
        None => None,
        Some(_) => Some(
            aivault_client::open_workdir(std::path::Path::new("."))
                .map_err(|e| CtlError::Usage(format!("cannot open the current directory: {e}")))?,
        ),
    };
    let req = RunRequest {
        argv: args.command,
        secrets: secret_asks(&args.secrets)?,
        timeout_ms,
        workdir,
        env: std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect(),
    };

    let session = ep
        .open()?
        .start_run_with(req, dir.as_ref(), |p| crate::approvals::say_waiting(ui, p))?;

    // Once the command runs, the forwarded signals are blocked and read
    // from a signalfd, so they arrive in the same poll as input and output.
    // Before, they keep their default action: Ctrl-C still ends a vaultctl
    // waiting on an unresponsive daemon (which then cancels the run).
    let mut forwarded = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        forwarded.add(s);
    }
    let _ = forwarded.thread_block();
    let signals = SignalFd::with_flags(&forwarded, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| CtlError::Local(format!("cannot watch for signals: {e}")))?;
    pump(session, &signals, ui)
}

/// Input queued beyond this stops reading stdin until the daemon takes it.
const MAX_QUEUED: usize = 256 * 1024;

/// One thread, one poll: the run's events to stdout/stderr, stdin and the
/// forwarded signals to the run, until the exit status arrives.
fn pump(mut session: RunSession, signals: &SignalFd, ui: Ui) -> Result<i32, CtlError> {
    let stdin = std::io::stdin();
    let mut stdin_open = true;
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    loop {
        let mut socket_events = PollFlags::POLLIN;
        if session.queued() > 0 {
            socket_events |= PollFlags::POLLOUT;
        }
        // Stdin is left out once at end of input (poll would report its
        // hangup for ever) and while too much input waits to be sent.
        let want_stdin = stdin_open && session.queued() < MAX_QUEUED;
        let mut fds = vec![
            PollFd::new(session.as_fd(), socket_events),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        if want_stdin {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                ui.failure("local", &format!("cannot wait for the run: {e}"));
                return Ok(EXIT_RUN_LOST);
            }
        }
        let revents = |i: usize| {
            fds.get(i)
                .and_then(|fd| fd.revents())
                .unwrap_or(PollFlags::empty())
        };
        // Readable, or closed: either way `next_event` returns.
        let socket_ready =
            revents(0).intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR);
        let signal_ready = !revents(1).is_empty();
        let stdin_ready = !revents(2).is_empty();
        drop(fds);

        if signal_ready {
            while let Ok(Some(info)) = signals.read_signal() {
                session.queue(&RunInput::Signal(info.ssi_signo as i32))?;
            }
        }
        if stdin_ready {
            // Not through `Stdin`'s buffer: poll must see every byte not yet read.
            match nix::unistd::read(stdin.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    stdin_open = false;
                    session.queue(&RunInput::StdinEof)?;
                }
                Ok(n) => session.queue(&RunInput::Stdin(buf[..n].to_vec()))?,
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                // Closed or unreadable stdin: the command sees end of input.
                Err(_) => {
                    stdin_open = false;
                    session.queue(&RunInput::StdinEof)?;
                }
            }
        }
        if session.queued() > 0 && session.flush().is_err() {
            // The daemon went away: what it sent before says why. Nothing
            // more is sent (nor retried on every turn of the loop).
            stdin_open = false;
            session.discard_queued();
        }
        if socket_ready {
            match session.next_event() {
                Ok(RunEvent::Output { stream, data }) => {
                    let w: &mut dyn Write = match stream {
                        Stream::Stdout => &mut out,
                        Stream::Stderr => &mut err,
                    };
                    // A closed stdout (e.g. `| head`) must not stop the run's bookkeeping.
                    let _ = w.write_all(&data).and_then(|()| w.flush());
                }
                Ok(RunEvent::Exit(exit)) => {
                    if let Some(m) = exit.message {
                        ui.failure(exit.reason.as_str(), &m);
                    }
                    return Ok(exit.code);
                }
                Err(ClientError::Daemon(e)) => return Err(ClientError::Daemon(e).into()),
                Err(e) => {
                    ui.failure(
                        "connection-lost",
                        &format!("the run's connection failed: {e}"),
                    );
                    return Ok(EXIT_RUN_LOST);
                }
            }
        }
    }
}
